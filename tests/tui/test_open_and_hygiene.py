"""Opening answers files (good, bad, missing), the unsaved-changes marker, import hygiene."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from textual.widgets import Input, Static

from ftplan.tui import run_app
from ftplan.tui.app import FtplanApp
from tests.tui.conftest import settle, text_of

SIZE = (120, 40)


async def test_a_file_with_bad_answers_opens_with_the_problems_marked(tmp_path):
    raw = {"model": {"name": "meta-llama/Llama-3.1-8B"}, "data": {"epochs": 0}, "hardware": {"gpus": 2}}
    app = FtplanApp(None, tmp_path / "a.toml", raw=raw, detect=lambda: [], cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.plan is None
        assert {p.field for p in app.problems} == {"data.epochs"}
        assert [p.field for p in app.read_problems] == ["hardware.gpus"]
        assert app.query_one("#q-data-epochs").has_class("-invalid")
        top = text_of(app.query_one("#form-problems", Static))
        assert "hardware.gpus" in top and "did you mean hardware.gpu" in top
        app.query_one("#data-epochs", Input).value = "2"
        await settle(pilot)
        # the unknown key is dropped from the form's answers; epochs is fixed: a plan appears
        assert app.plan is not None and app.plan.answers["data"]["epochs"] == 2


async def test_title_marks_unsaved_changes(tmp_path, example_answers):
    path = tmp_path / "a.toml"
    app = FtplanApp(None, path, raw=example_answers, detect=lambda: [], cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.sub_title == str(path)
        app.query_one("#data-epochs", Input).value = "3"
        await settle(pilot)
        assert app.sub_title.endswith(" *")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.sub_title == str(path)
    assert tomllib.loads(path.read_text())["data"]["epochs"] == 3


def test_run_app_rejects_a_file_that_is_not_toml(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nname = 1\n")
    assert run_app(str(path)) == 2
    assert "cannot read" in capsys.readouterr().err


def modules_imported(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    probe = f"import sys\n{code}\nprint(','.join(m for m in {names!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_the_first_screen_imports_no_training_stack():
    code = "import ftplan.tui, ftplan.tui.app, ftplan.tui.screens, ftplan.tui.launching, ftplan.tui.exporting"
    assert modules_imported(code, ("torch", "transformers", "peft", "bitsandbytes", "deepspeed")) == []


def test_the_app_module_defers_pydantic_and_the_planner():
    """The questions draw from plain modules; the answers models and the planner load after
    the first frame (they cost about 0.2 s of start-up here)."""
    code = (
        "import ftplan.tui.app\n"
        "from ftplan.tui.fields import FIELDS, FormState\n"
        "FormState.from_raw({'model': {'name': 'x'}}); [f.help for f in FIELDS]"
    )
    late = ("pydantic", "ftplan.planner.answers", "ftplan.planner.loader", "ftplan.planner.plan")
    assert modules_imported(code, late) == []


async def test_a_note_that_lands_while_a_question_loses_its_children_does_not_crash(example_answers):
    """The data-measure worker's note can arrive while the app shuts down (the question is still
    mounted, its help text already gone): a query there raised NoMatches and printed a traceback."""
    from tests.tui.conftest import make_app

    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        question = app.query_one("#q-data-path")
        await question.query_one(".q-help", Static).remove()
        question.set_note("measured while closing")
        assert question.note == "measured while closing"
        app.query_one("#q-data-epochs").set_note("shown")  # a live question still shows its note
        await pilot.pause()
        assert "shown" in text_of(app.query_one("#q-data-epochs .q-help", Static))
