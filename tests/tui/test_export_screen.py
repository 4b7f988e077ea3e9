"""The export screen with the real exporter: preview, write, protect hand edits, force."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Static, Switch

from ftplan.events import OutputLines
from ftplan.tui.launching import LaunchSource
from ftplan.tui.screens import ExportScreen, LaunchScreen
from tests.tui.conftest import make_app, open_export, open_screen, settle, text_of, wait_until

SIZE = (120, 40)


def statuses(screen: ExportScreen) -> dict[str, str]:
    return {f.name: f.status for f in screen.files}


async def write(pilot, screen: ExportScreen) -> str:
    screen.last_result = ""
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: bool(screen.last_result))
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return screen.last_result


async def test_export_preview_write_and_protect_edits(tmp_path, example_answers):
    folder = tmp_path / "proj"
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_export(pilot, folder)
        files = statuses(screen)
        assert {"train.py", "train_config.toml", "launch.sh", "answers.toml", "plan.json"} <= set(files)
        assert set(files.values()) == {"new"}
        preview = text_of(screen.query_one("#export-preview", Static))
        assert "def main" in preview  # train.py, highlighted, is shown first

        summary = await write(pilot, screen)
        assert "Exported the lora project" in summary
        assert (folder / "train.py").is_file() and (folder / "launch.sh").is_file()
        assert app.export_dir == folder
        await wait_until(pilot, lambda: set(statuses(screen).values()) == {"same"})

        # A hand edit is shown and protected...
        edited = (folder / "train.py").read_text() + "\n# my change\n"
        (folder / "train.py").write_text(edited)
        screen.refresh_preview()
        await wait_until(pilot, lambda: statuses(screen).get("train.py") == "edited")
        option = screen.query_one("#export-files", OptionList).get_option("train.py")
        assert "edited by hand" in str(option.prompt)
        message = await write(pilot, screen)
        assert "train.py" in message and "--force" in message  # the rest written, the edit kept and named
        assert (folder / "train.py").read_text() == edited

        # ...unless forced.
        screen.query_one("#export-force", Switch).value = True
        await pilot.pause()
        assert "OVERWRITTEN" in str(screen.query_one("#export-files", OptionList).get_option("train.py").prompt)
        await write(pilot, screen)
        assert "# my change" not in (folder / "train.py").read_text()

        # The launch screen starts from the exported folder.
        await pilot.press("escape")
        await pilot.pause()
        await open_screen(pilot, "ctrl+l", LaunchScreen)
        assert app.screen.query_one("#launch-dir", Input).value == str(folder)

        # A dry run through the real launcher (the default): its checklist and command, nothing started.
        await pilot.click("#launch-start")
        await wait_until(pilot, lambda: app.run_finished is not None, timeout=40)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert app.run_finished.exit_code == 0
        assert "dry run" in text_of(app.screen.query_one("#launch-status", Static))
        log = "\n".join(app.screen.query_one("#launch-log").lines)
        assert "train.py" in log and "cd " in log


async def test_export_other_method(tmp_path, example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = await open_export(pilot, tmp_path / "q")
        screen.query_one("#export-method").value = "qlora"
        await wait_until(pilot, lambda: "bnb_config.json" in statuses(screen))
        await write(pilot, screen)
    assert (tmp_path / "q" / "bnb_config.json").is_file()


async def test_dry_run_of_an_exported_project_through_the_real_launcher(tmp_path, example_answers):
    from ftplan.export import export_project
    from ftplan.tui.fields import answers_toml

    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        plan, answers = app.plan, app.answers
    export_project(plan, answers_toml(answers), tmp_path / "p")
    events = []
    LaunchSource(tmp_path / "p", dry_run=True).run(events.append)
    assert (
        events[-1].result.exit_code == 0 and events[-1].result.message == "dry run: the command above was not started"
    )
    text = "\n".join(line for e in events if isinstance(e, OutputLines) for line in e.lines)
    assert "train.py" in text and "train_config.toml" in text
