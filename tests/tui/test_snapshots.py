"""Snapshot tests of the main screens, built from the app factory the CLI uses.

Cursor blink is frozen (`make_app` passes cursor_blink=False); no GPU is detected; each
snapshot waits until the plan for the answers is shown. Update with `--snapshot-update`
after checking the SVGs under __snapshots__/ look right.
"""

from __future__ import annotations

from tests.tui.conftest import make_app, settle

from .fakes import FakeSource, output, progress, started

NARROW = (80, 24)
WIDE = (140, 45)


def test_main_narrow_questions(snap_compare, frozen_planner, example_answers):
    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=NARROW, run_before=settle)


def test_main_narrow_plan(snap_compare, frozen_planner, example_answers):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f2")

    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=NARROW, run_before=run_before)


def test_main_wide(snap_compare, frozen_planner, example_answers):
    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=WIDE, run_before=settle)


def test_main_wide_light_theme(snap_compare, frozen_planner, example_answers):
    async def run_before(pilot):
        pilot.app.theme = "textual-light"
        await settle(pilot)

    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=WIDE, run_before=run_before)


def test_main_wide_with_problems(snap_compare, frozen_planner, example_answers):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.query_one("#objective-variants").value = "0"
        await settle(pilot)

    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=WIDE, run_before=run_before)


def test_main_70b_on_one_4090(snap_compare, frozen_planner):
    answers = {
        "model": {"name": "meta-llama/Llama-3.1-70B"},
        "hardware": {"gpu": "RTX-4090"},
        "data": {"examples": 20000, "avg_tokens": 500},
    }
    assert snap_compare(make_app(answers, plan_fn=frozen_planner), terminal_size=WIDE, run_before=settle)


def test_launch_screen_running(snap_compare, frozen_planner, example_answers):
    source = FakeSource(block=False)  # the worker ends at once; the run still shows as active

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        pilot.app.start_run(source)
        for _ in range(300):
            if source._post is not None:
                break
            await pilot.pause(0.01)
        source.post(started(["torchrun", "--standalone", "train.py"], 4242))
        source.post(output([f"step {i}: loss {2.0 - i / 20:.3f}" for i in range(1, 8)]))
        source.post(progress(7, 20, 1.65, 3946.0, 60 * 2**30))
        for _ in range(300):  # until the App has delivered every event and the log is flushed
            await pilot.pause(0.01)
            if pilot.app.run_progress is not None:
                break
        pilot.app.screen.flush()
        await pilot.pause()

    app = make_app(example_answers, run_source_factory=lambda *a, **k: source, plan_fn=frozen_planner)
    assert snap_compare(app, terminal_size=WIDE, run_before=run_before)


def test_launch_screen_80x24(snap_compare, frozen_planner, example_answers):
    """Issue 14: at 80×24 the checklist scrolls in a few rows; log, buttons and footer show."""

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        # The idle bar is indeterminate and animates with the clock: hold it still for the picture.
        pilot.app.screen.query_one("#launch-progress").update(total=100, progress=0)
        await pilot.pause()

    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=NARROW, run_before=run_before)


def test_export_screen(snap_compare, frozen_planner, example_answers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default folder (./ft-llama-3.1-8b-lora) is new and relative

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+e")
        for _ in range(300):
            screen = pilot.app.screen
            if getattr(screen, "files", None):
                break
            await pilot.pause(0.01)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(example_answers, plan_fn=frozen_planner), terminal_size=WIDE, run_before=run_before)
