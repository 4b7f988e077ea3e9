"""The adapter between the launch screen and `ftplan.launch`.

`make_source(project_dir, dry_run=..., smoke=...)` returns a `RunSource` (ftplan.tui.runs)
that prepares the launch exactly as `ftplan launch DIR` does (`session.prepare`), runs the
shared `Runner` and hands its events (ftplan.events) to the app as they are. `project_checks` gives the launcher's own preflight checklist for the screen.
"""

from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ftplan.events import OutputLines, RunFinished, RunResult
from ftplan.tui.runs import Post, RunSource

if TYPE_CHECKING:
    from ftplan.launch.preflight import Check

MARK = {"ok": "✓", "warn": "!", "fail": "✗"}


def _options(dry_run: bool, smoke: bool, smoke_steps: int | None = None):
    from ftplan.launch.session import host_options
    from ftplan.launch.spec import DEFAULT_SMOKE_STEPS, LaunchOptions

    steps = DEFAULT_SMOKE_STEPS if smoke_steps is None else smoke_steps
    return host_options(LaunchOptions(dry_run=dry_run, smoke=smoke, smoke_steps=steps))


def project_checks(project_dir: Path, smoke: bool = False) -> tuple[list[Check], str]:
    """The launcher's checklist for a project folder: (checks, error message).

    Does I/O (nvidia-smi, disk, packages): call it from a worker.
    """
    from ftplan.launch.session import LaunchInputError, prepare

    try:
        prepared = prepare(project_dir, _options(True, smoke))
    except LaunchInputError as exc:
        return [], str(exc)
    return list(prepared.checks), ""


def ended(exit_code: int, status: str, message: str) -> RunFinished:
    """The end of a run that never started, as the runner would report one."""
    return RunFinished(RunResult.before_start(exit_code, status, message))


def command_lines(spec) -> list[str]:
    """What `ftplan launch DIR --dry-run` prints after the checklist: the environment ftplan
    adds, then the command (the in-app dry run used to show the command alone)."""
    lines = ["Environment (added to yours):"]
    lines += [f"  {k}={shlex.quote(v)}" for k, v in sorted(spec.env.items())] or ["  (nothing)"]
    return [*lines, "Command:", f"  cd {shlex.quote(spec.cwd)}", f"  {shlex.join(spec.argv)}"]


class LaunchSource:
    """Runs an exported project through `ftplan.launch` (process group, SIGTERM → SIGKILL)."""

    def __init__(
        self,
        project_dir: Path,
        *,
        dry_run: bool = False,
        smoke: bool = False,
        smoke_steps: int | None = None,
        process_factory=None,
    ) -> None:
        self.project_dir = Path(project_dir)
        self.dry_run, self.smoke, self.smoke_steps = dry_run, smoke, smoke_steps
        self.process_factory = process_factory
        self._runner = None
        self._lock = threading.Lock()
        self._stopped = False

    def run(self, post: Post) -> None:
        from ftplan.launch.session import LaunchInputError, make_runner, prepare

        try:
            prepared = prepare(self.project_dir, _options(self.dry_run, self.smoke, self.smoke_steps))
        except LaunchInputError as exc:
            post(OutputLines((str(exc),)))
            post(ended(2, "failed", str(exc).splitlines()[0] if str(exc) else "bad project folder"))
            return
        spec = prepared.spec
        post(OutputLines(tuple(f"{MARK.get(c.status, '?')} {c.name}: {c.detail}" for c in prepared.checks)))
        post(OutputLines(tuple(command_lines(spec))))
        if self.dry_run:
            post(ended(0, "ok", "dry run: the command above was not started"))
            return
        if prepared.failed:
            names = ", ".join(c.name for c in prepared.failed)
            post(ended(1, "failed", f"preflight failed ({names}); fix the ✗ items"))
            return
        kwargs = {"process_factory": self.process_factory} if self.process_factory else {}
        with self._lock:
            if self._stopped:
                post(ended(130, "interrupted", "stopped before it started"))
                return
            self._runner = make_runner(prepared, post, **kwargs)  # the runner's events, as they are
        self._runner.run()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            runner = self._runner
        if runner is not None:
            runner.stop("stopped from the app")


def make_source(project_dir: Path, *, dry_run: bool = False, smoke: bool = False) -> RunSource:
    return LaunchSource(project_dir, dry_run=dry_run, smoke=smoke)
