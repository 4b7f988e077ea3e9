"""The launch screen against a fake run source: the test posts the events a real run would."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import Input, Log, ProgressBar, Static

from ftplan.events import RunFinished
from ftplan.tui.launching import LaunchSource
from ftplan.tui.screens import ConfirmScreen, LaunchScreen
from ftplan.tui.screens.launch import progress_text, terminal_line
from tests.tui.conftest import make_app, open_screen, settle, text_of, wait_until

from .fakes import fake_run, output, progress, started

SIZE = (120, 40)


async def test_live_log_progress_and_stop(tmp_path, example_answers):
    async with fake_run(example_answers, tmp_path) as run:
        app, pilot, source, screen = run.app, run.pilot, run.source, run.screen
        assert run.calls == [(tmp_path, False, False)]
        assert app.run_active

        source.post(started(["torchrun", "train.py"], 1234))
        source.post(output(["loading model", "step 1/10\rstep 2/10\r", "tokenizer ready"]))
        source.post(
            progress(
                step=5, max_steps=10, loss=1.2345, tokens_per_s=3210.0, peak_mem=12 * 2**30, eta_s=65, cost_usd=0.42
            )
        )
        await wait_until(pilot, lambda: screen.query_one("#launch-log", Log).line_count >= 3)
        log = screen.query_one("#launch-log", Log)
        assert list(log.lines)[-3:] == ["loading model", "step 2/10", "tokenizer ready"]
        assert "run folder: runs/test (log: runs/test/output.log)" in list(log.lines)
        assert screen.query_one("#launch-progress", ProgressBar).progress == 5
        status = text_of(screen.query_one("#launch-status", Static))
        assert "step 5/10" in status and "loss 1.2345" in status and "12.00 GiB" in status
        assert "3,210 tok/s" in status and "ETA 1:05" in status and "$0.42 so far" in status

        # Stop asks first; "no" keeps the run going.
        await open_screen(pilot, "ctrl+x", ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.run_active and not source.stopped

        await pilot.press("ctrl+x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.run_active)
        await app.workers.wait_for_complete()
        assert source.stopped
        assert app.run_finished.stopped and app.run_finished.message == "stopped by the user"
        assert "stopped as you asked (exit code 130)" in text_of(screen.query_one("#launch-status", Static))
        assert screen.query_one("#launch-status", Static).has_class("-stopped")


async def test_run_outlives_the_screen_and_is_replayed(tmp_path, example_answers):
    async with fake_run(example_answers, tmp_path) as run:
        app, pilot, source = run.app, run.pilot, run.source
        await pilot.press("escape")  # close the screen: the run belongs to the App
        await pilot.pause()
        assert not isinstance(app.screen, LaunchScreen) and app.run_active
        source.post(output(["while hidden"]))
        source.post(progress(7, 10, 0.9, None, None))
        await wait_until(pilot, lambda: app.run_progress is not None)
        await pilot.press("ctrl+l")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, LaunchScreen)
        assert "while hidden" in list(screen.query_one("#launch-log", Log).lines)
        assert screen.query_one("#launch-progress", ProgressBar).progress == 7
        source.finish(0)
        await wait_until(pilot, lambda: not app.run_active)
        assert "finished OK" in text_of(screen.query_one("#launch-status", Static))


async def test_quit_with_an_active_run_confirms_then_stops(tmp_path, example_answers):
    async with fake_run(example_answers, tmp_path) as run:
        app, pilot, source = run.app, run.pilot, run.source
        await open_screen(pilot, "ctrl+q", ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and app.run_active
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.is_running)
    assert source.stopped
    assert app.return_code == 0


def test_terminal_line_keeps_what_a_terminal_shows():
    assert terminal_line("10%\r20%\r30%") == "30%"
    assert terminal_line("done\r") == "done"
    assert terminal_line("plain\n") == "plain"


def test_progress_text_shows_eta_cost_and_what_the_peak_is():
    p = progress(7, 20, None, None, 3 * 2**29, eta_s=3 * 3600 + 62, cost_usd=1234.5, peak_is_rss=True)
    assert progress_text(p) == "step 7/20 · ETA 3:01:02 · $1,234.50 so far · peak 1.50 GiB RSS"
    assert progress_text(progress(1, 2)) == "step 1/2"  # nothing known yet: nothing invented


async def test_preflight_follows_the_smoke_switch(tmp_path, example_answers):
    """A GPU plan on a machine without one: ✗ for a full run, only a warning for a smoke run (on the CPU)."""
    from ftplan.export import export_project
    from ftplan.tui.fields import answers_toml

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine may have the plan's GPU")
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        export_project(app.plan, answers_toml(app.answers), tmp_path / "p")
        screen = await open_screen(pilot, "ctrl+l", LaunchScreen)
        screen.query_one("#launch-dir", Input).value = str(tmp_path / "p")

        def gpus() -> str | None:
            return next((c.status for c in screen.project_checks if c.name == "GPUs"), None)

        await wait_until(pilot, lambda: gpus() is not None, timeout=20)
        assert gpus() == "fail"
        screen.query_one("#launch-smoke").value = True
        await wait_until(pilot, lambda: gpus() == "warn", timeout=20)
        assert "smoke run goes on the CPU" in text_of(screen.query_one("#launch-preflight", Static))


def test_real_source_reports_a_bad_project_folder(tmp_path):
    events = []
    LaunchSource(tmp_path / "nowhere").run(events.append)
    assert isinstance(events[-1], RunFinished) and events[-1].result.exit_code == 2


async def test_a_run_does_not_outlive_the_app(tmp_path, example_answers):
    """However the app ends (here: the test's app closes mid-run), it stops the run it started,
    or the run's worker thread would keep the process alive."""
    async with fake_run(example_answers, tmp_path) as run:
        assert run.app.run_active and not run.source.stopped
    assert run.source.stopped
