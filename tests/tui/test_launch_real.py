"""The app end to end with a REAL training process: export a tiny CPU project through the
export screen, launch it from the launch screen with the real launcher, stop it, or let it finish.

Slow (the child imports torch, transformers and trl, then trains a tiny random Llama on the
CPU): marked ``slow``. The run source is the real `LaunchSource`; the stop test injects it
through `run_source_factory` only to ask for a long smoke run.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input, Log, ProgressBar, Static, Switch

from ftplan.launch.process import group_members, proc_table
from ftplan.tui.launching import LaunchSource
from ftplan.tui.screens import ConfirmScreen, ExportScreen, LaunchScreen
from tests.conftest import tiny_training_kit
from tests.tui.conftest import make_app, open_export, open_screen, settle, text_of, wait_until

pytestmark = pytest.mark.slow

SIZE = (120, 40)


@pytest.fixture(scope="module")
def tiny_answers(tmp_path_factory) -> dict:
    """Answers for the export tests' tiny random Llama and dataset, on the CPU."""
    root = tmp_path_factory.mktemp("tiny")
    kit = tiny_training_kit(root)
    return tomllib.loads(kit.answers_text(root / "model", root / "data.jsonl", method="lora"))


def run_processes(pid: int) -> list[int]:
    """Live processes of the run (its process group, or its own pid), from /proc."""
    own = proc_table().get(pid)
    alive = set(group_members(pid)) | ({pid} if own and own[0] not in "ZX" else set())
    return sorted(alive)


def training_children() -> list[int]:
    """Live children of the test process running a train.py (none may outlive its run)."""
    me = os.getpid()
    found = []
    for pid, (state, ppid, _, _) in proc_table().items():
        if state in "ZX" or ppid != me:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"train.py" in cmdline:
            found.append(pid)
    return found


async def export_through_the_screen(pilot, folder: Path) -> None:
    app = pilot.app
    screen = await open_export(pilot, folder, timeout=120)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: bool(screen.last_result), timeout=120, what="the export")
    assert "Exported the lora project" in screen.last_result, screen.last_result
    assert (folder / "train.py").is_file() and app.export_dir == folder
    await pilot.press("escape")
    await pilot.pause()


async def open_launch(pilot, folder: Path, *, smoke: bool) -> LaunchScreen:
    screen = await open_screen(pilot, "ctrl+l", LaunchScreen)
    assert screen.query_one("#launch-dir", Input).value == str(folder)  # the folder just exported
    screen.query_one("#launch-dry-run", Switch).value = False
    screen.query_one("#launch-smoke", Switch).value = smoke
    await pilot.pause()
    return screen


@contextlib.asynccontextmanager
async def killed_on_failure(pilot):
    """If the test fails with the run still going, kill it (stop twice: SIGKILL at once)."""
    app = pilot.app
    try:
        yield
    finally:
        if app.run_active and app.run_source is not None:
            app.run_source.stop()
            app.run_source.stop()
            await app.workers.wait_for_complete()


def log_text(screen: LaunchScreen) -> str:
    return "\n".join(screen.query_one("#launch-log", Log).lines)


async def test_real_smoke_run_is_stopped_from_the_app(tmp_path, tiny_answers):
    sources: list[LaunchSource] = []

    def factory(folder, *, dry_run, smoke):
        # The real launcher; a long smoke run so that it is still training when stopped.
        sources.append(LaunchSource(folder, dry_run=dry_run, smoke=smoke, smoke_steps=10_000))
        return sources[-1]

    folder = tmp_path / "proj"
    app = make_app(tiny_answers, run_source_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.plan is not None and not app.problems
        await export_through_the_screen(pilot, folder)
        screen = await open_launch(pilot, folder, smoke=True)
        async with killed_on_failure(pilot):
            await pilot.click("#launch-start")
            await wait_until(pilot, lambda: app.run_started is not None, timeout=120, what="the run's start")
            pid = app.run_started.pid
            assert pid and run_processes(pid) and training_children() == [pid]
            assert "--max-steps" in app.run_started.argv and "10000" in app.run_started.argv

            # Really training: a progress event from the trainer's metrics file.
            await wait_until(
                pilot,
                lambda: app.run_finished is not None or (app.run_progress is not None and app.run_progress.step >= 1),
                timeout=180,
                what="the first training step",
            )
            assert app.run_finished is None, "\n".join(app.run_lines[-40:])
            assert app.run_progress.max_steps == 10_000
            await pilot.pause(0.3)
            status = text_of(screen.query_one("#launch-status", Static))
            assert "step " in status and "/10,000" in status and "loss " in status and "tok/s" in status
            assert "ETA " in status and "$0.00 so far" in status and "GiB RSS" in status  # a CPU run: no GPU hours
            assert screen.query_one("#launch-progress", ProgressBar).progress >= 1
            assert "run folder:" in log_text(screen)

            # Stop, confirm: SIGTERM to the group; the app reports the run as stopped.
            await open_screen(pilot, "ctrl+x", ConfirmScreen)
            await pilot.press("y")
            await wait_until(pilot, lambda: app.run_finished is not None, timeout=30, what="the end of the stopped run")
            await app.workers.wait_for_complete()
            await pilot.pause(0.3)
            assert sources[0]._stopped
            assert run_processes(pid) == [], "the run's process group outlived the stop"
            assert training_children() == []
            finished = app.run_finished
            assert finished.exit_code == 130, finished
            assert "stopped from the app" in finished.summary and "SIGTERM" in finished.summary
            assert not app.run_active
            status = text_of(screen.query_one("#launch-status", Static))
            assert status.startswith("stopped as you asked (exit code 130)") and "stopped from the app" in status
            assert finished.stopped
            assert screen.query_one("#launch-status", Static).has_class("-stopped")
            assert not screen.query_one("#launch-status", Static).has_class("-error")
            assert "stopping (stopped from the app): SIGTERM" in log_text(screen)
            assert not screen.query_one("#launch-start").disabled and screen.query_one("#launch-stop").disabled

        # Still responsive: the export screen opens.
        await pilot.press("escape")
        await pilot.pause()
        await open_screen(pilot, "ctrl+e", ExportScreen)


async def test_real_short_smoke_run_finishes(tmp_path, tiny_answers):
    folder = tmp_path / "proj"
    app = make_app(tiny_answers)  # the app's own launcher (no injected source): the Smoke switch's 5 steps
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await export_through_the_screen(pilot, folder)
        screen = await open_launch(pilot, folder, smoke=True)
        async with killed_on_failure(pilot):
            await pilot.click("#launch-start")
            await wait_until(pilot, lambda: app.run_finished is not None, timeout=240, what="the end of the run")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        finished = app.run_finished
        assert finished.exit_code == 0, f"{finished}\n" + "\n".join(app.run_lines[-40:])
        assert "Run finished at step 5" in finished.summary
        assert app.run_started is not None and run_processes(app.run_started.pid) == []
        assert app.run_progress is not None and (app.run_progress.step, app.run_progress.max_steps) == (5, 5)
        bar = screen.query_one("#launch-progress", ProgressBar)
        assert (bar.progress, bar.total) == (5, 5)
        status = text_of(screen.query_one("#launch-status", Static))
        assert status.startswith("finished OK") and not screen.query_one("#launch-status").has_class("-error")
        log = log_text(screen)
        assert "run folder:" in log and "train.py" in log
        assert (folder / "output" / "smoke" / "checkpoint-5").is_dir()  # apart from the real run's
        assert not (folder / "output" / "checkpoint-5").exists()
