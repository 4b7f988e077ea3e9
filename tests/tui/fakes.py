"""A RunSource the tests drive by hand: fake the source, not the app."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted
from ftplan.tui.app import FtplanApp
from ftplan.tui.runs import Post, RunEvent
from ftplan.tui.screens import LaunchScreen


def started(argv: list[str], pid: int) -> RunStarted:
    return RunStarted(run_dir="runs/test", log_path="runs/test/output.log", argv=tuple(argv), pid=pid)


def output(lines: list[str]) -> OutputLines:
    return OutputLines(tuple(lines))


def progress(step: int, max_steps: int, loss=None, tokens_per_s=None, peak_mem=None, **kw) -> ProgressUpdate:
    """A progress event with what the test does not care about left empty."""
    kw.setdefault("cost_usd", None)
    return ProgressUpdate(step, max_steps, loss, tokens_per_s, peak_mem, planned_peak_bytes=0, elapsed_s=0.0,
                          eta_s=kw.pop("eta_s", None), **kw)  # fmt: skip


def finished(exit_code: int, message: str = "", status: str | None = None) -> RunFinished:
    return RunFinished(RunResult.before_start(exit_code, status or ("ok" if exit_code == 0 else "failed"), message))


class FakeSource:
    """A source whose events the caller posts: `source.post(progress(...))`.

    `run()` blocks until `finish()` or `stop()` (or returns at once with `block=False`, for
    snapshots that must exit with the run still showing as active); `stop()` ends with exit
    code 130 and status "interrupted", as the runner reports a stop.
    """

    def __init__(self, block: bool = True) -> None:
        self.block = block
        self._post: Post | None = None
        self._done = threading.Event()
        self._ready = threading.Event()
        self.stopped = False

    def run(self, post: Post) -> None:
        self._post = post
        self._ready.set()
        if self.block:
            self._done.wait()

    def wait_started(self, timeout: float = 5.0) -> bool:
        return self._ready.wait(timeout)

    def post(self, event: RunEvent) -> None:
        assert self._post is not None, "run() has not started"
        self._post(event)
        if isinstance(event, RunFinished):
            self._done.set()

    def finish(self, exit_code: int = 0, advice: str = "") -> None:
        self.post(finished(exit_code, advice))

    def stop(self) -> None:
        self.stopped = True
        if self._post is not None and not self._done.is_set():
            self.post(finished(130, "stopped by the user", status="interrupted"))
        self._done.set()


@dataclass
class FakeRun:
    """An app whose launch screen started a `FakeSource` run; ``calls`` holds the factory's (folder, dry_run, smoke)."""

    app: FtplanApp
    pilot: Pilot
    source: FakeSource
    screen: LaunchScreen
    calls: list[tuple]


@contextlib.asynccontextmanager
async def fake_run(answers: dict, folder: Path, *, size=(120, 40), start_key: str | None = None):
    """Run the app, open the launch screen on ``folder`` and start a run there, with a `FakeSource` for it.

    The run starts with a click on Start, or with ``start_key`` pressed.
    """
    from tests.tui.conftest import make_app, open_screen, settle, wait_until

    source = FakeSource()
    calls: list[tuple] = []

    def factory(folder, *, dry_run, smoke):
        calls.append((folder, dry_run, smoke))
        return source

    app = make_app(answers, run_source_factory=factory)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "ctrl+l", LaunchScreen)
        screen.query_one("#launch-dir", Input).value = str(folder)
        screen.query_one("#launch-dry-run").value = False
        await (pilot.press(start_key) if start_key else pilot.click("#launch-start"))
        await wait_until(pilot, lambda: source._post is not None, what="the run's start")
        yield FakeRun(app, pilot, source, screen, calls)
