"""Issue 14's defects, each as a user meets it: keys inside text fields, Stop after reattach,
quitting with unsaved answers, the plan pane's focus, the export and launch rough edges."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Log, OptionList, ProgressBar, Select, Static

from ftplan.tui.screens import ConfirmScreen, ExportScreen, HelpScreen, LaunchScreen
from ftplan.tui.widgets import PlanView
from tests.tui.conftest import make_app, open_export, open_screen, settle, text_of, wait_until

from .fakes import fake_run, output

SIZE = (120, 40)


def footer_keys(app) -> dict[str, bool]:
    """What the footer offers now: key -> enabled (the bindings it draws, with show=True)."""
    return {key: b.enabled for key, b in app.screen.active_bindings.items() if b.binding.show}


async def test_ctrl_e_exports_from_inside_a_text_field_and_shows_in_the_footer(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.query_one("#model-name", Input).focus()
        await pilot.pause()
        assert {"ctrl+e", "ctrl+s", "ctrl+l", "f1"} <= set(footer_keys(app))  # the Input hid ^e
        await open_screen(pilot, "ctrl+e", ExportScreen)
        # on the export screen the folder field's keys are its own again, and ^s writes
        assert "ctrl+e" not in footer_keys(app) and "ctrl+s" in footer_keys(app)
        assert app.screen.focused is app.screen.query_one("#export-dir")  # the footer is not blank


async def test_stop_survives_closing_and_reopening_the_launch_screen(tmp_path, example_answers):
    async with fake_run(example_answers, tmp_path, start_key="ctrl+r") as run:
        app, pilot, source = run.app, run.pilot, run.source
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, LaunchScreen) and app.run_active
        screen = await open_screen(pilot, "ctrl+l", LaunchScreen)
        assert screen.query_one("#launch-dir", Input).value == str(tmp_path)  # was empty
        screen.query_one("#launch-dir", Input).focus()  # the field whose ctrl+x is "cut"
        await pilot.pause()
        assert footer_keys(app).get("ctrl+x") is True  # "^x Stop" was gone
        await open_screen(pilot, "ctrl+x", ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.run_active)
        assert source.stopped


async def test_a_stop_question_left_open_closes_when_the_run_ends(tmp_path, example_answers):
    async with fake_run(example_answers, tmp_path) as run:
        app, pilot, source = run.app, run.pilot, run.source
        await open_screen(pilot, "ctrl+x", ConfirmScreen)
        source.post(output(["x" * 300]))
        source.finish(0)
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.query_one("#launch-log", Log).line_count >= 1)
        screen.flush()
        log = screen.query_one("#launch-log", Log)
        width = log.scrollable_content_region.width
        assert log.line_count >= 300 // width  # folded to the pane, not cut at its edge
        assert all(len(line) <= width for line in log.lines)
        assert screen.query_one("#launch-progress", ProgressBar).total is not None  # not animating on
        assert not source.stopped


@pytest.mark.parametrize("answer", ["n", "y"])
async def test_quit_with_unsaved_answers_asks_first(tmp_path, example_answers, answer):
    app = make_app(example_answers, tmp_path / "a.toml")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.query_one("#data-epochs", Input).focus()
        await pilot.press("end", "backspace", "3")
        await settle(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "not saved" in app.screen.question
        await pilot.press(answer)
        await pilot.pause()
        if answer == "n":
            assert app.is_running and app.return_code is None
            await pilot.press("ctrl+s")  # saved: nothing to lose, quit at once
            await pilot.pause()
            await pilot.press("ctrl+q")
            await pilot.pause()
    assert app.return_code == 0


async def test_help_opens_from_a_text_field_and_lists_keys_and_panes(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.query_one("#model-name", Input).focus()
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = text_of(app.screen.query_one("#help-keys", Static))
        for shown in ("^e", "Export", "^s", "Save", "^l", "Launch", "f2", "^q", "pgdn"):
            assert shown in keys, shown
        panes = text_of(app.screen.query_one("#help-panes", Static))
        assert "Questions (left)" in panes and "Plan (right)" in panes and "usable" in panes
        await pilot.press("escape")
        await pilot.pause()
        app.query_one("#hardware-gpu", Select).focus()  # not a text field: ? is help too
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_f2_at_120_columns_focuses_the_plan_and_pagedown_scrolls_it(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        field = app.query_one("#data-examples", Input)
        field.focus()
        await pilot.press("f2")
        await pilot.pause()
        results = app.results
        assert results.has_focus
        assert results.styles.border_left[0] != app.query_one("#questions").styles.border_left[0]  # visible focus
        await pilot.press("pagedown")
        await pilot.pause()
        assert results.scroll_y > 0
        await pilot.press("f2")
        await pilot.pause()
        assert field.has_focus  # back where the user was


async def test_memory_bars_are_drawn_against_the_usable_limit(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shown = text_of(app.query_one(PlanView))
        assert "/  76.0 GiB usable" in shown  # 95 % of the A100's 80 GiB: the limit "fits" means
        assert "80.0 / 80.0" not in shown


async def test_enter_in_the_folder_field_writes_and_the_files_read_written(tmp_path, example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_export(pilot, tmp_path / "proj")
        screen.query_one("#export-dir", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: (tmp_path / "proj" / "train.py").is_file(), timeout=20)
        await wait_until(pilot, lambda: screen.written and screen.files and screen.files[0].status == "same")
        await app.workers.wait_for_complete()
        await pilot.pause()
        listing = " ".join(str(o.prompt) for o in screen.query_one("#export-files", OptionList).options)
        assert "written" in listing and "unchanged" not in listing


async def test_answers_of_an_exported_project_prefill_its_folder(tmp_path, example_answers):
    from ftplan.project import MANIFEST

    (tmp_path / MANIFEST).write_text("{}")
    app = make_app(example_answers, tmp_path / "answers.toml")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.screen.query_one("#launch-dir", Input).value == str(tmp_path)


def test_the_in_app_dry_run_prints_the_environment_like_the_cli():
    from ftplan.launch.spec import LaunchSpec
    from ftplan.tui.launching import command_lines

    spec = LaunchSpec(["torchrun", "train.py"], {"OMP_NUM_THREADS": "8", "B": "x y"}, "/p")
    assert command_lines(spec) == [
        "Environment (added to yours):",
        "  B='x y'",
        "  OMP_NUM_THREADS=8",
        "Command:",
        "  cd /p",
        "  torchrun train.py",
    ]


async def test_the_launch_screen_at_80x24_leaves_the_log_rows_and_shows_its_keys(example_answers):
    """The checklist used to fill the screen: no log rows, buttons below the edge, footer cut."""
    app = make_app(example_answers)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_screen(pilot, "ctrl+l", LaunchScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen_region = screen.region
        assert screen.query_one("#launch-log").content_region.height >= 5
        for selector in ("#launch-start", "#launch-stop", "#launch-close", "Footer"):
            region = screen.query_one(selector).region
            assert region.height >= 1 and screen_region.contains_region(region), selector
        assert {"ctrl+r", "ctrl+x", "escape"} <= set(footer_keys(app))
        assert app.screen.focused is screen.query_one("#launch-start")  # Enter starts
