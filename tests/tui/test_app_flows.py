"""Pilot tests: drive the app as a user would, assert on what it shows and holds."""

from __future__ import annotations

import tomllib

from textual.widgets import Input, Select, Static

from ftplan.cli import plan_from_file
from ftplan.tui.widgets import PlanView
from tests.tui.conftest import make_app, open_screen, settle, text_of

SIZE = (120, 40)


async def test_opens_prefilled_and_plans_all_three_methods(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.query_one("#model-name", Input).value == "meta-llama/Llama-3.1-8B"
        assert app.query_one("#hardware-gpu", Select).value == "A100-80GB"
        assert app.plan is not None and set(app.plan.methods) == {"full", "lora", "qlora"}
        shown = text_of(app.query_one(PlanView))
        assert "Memory per GPU at the step's peak" in shown and "QLoRA" in shown
        assert "Memory per GPU against A100-80GB" in shown  # the bars
        assert "Recommendation: LoRA" in shown


async def test_fill_answers_from_scratch():
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.plan is None
        assert any(p.field == "model.name" for p in app.problems)
        assert app.query_one("#q-model-name").has_class("-invalid")
        await pilot.click("#model-name")
        await pilot.press(*"meta-llama/Llama-3.2-1", "right")  # accept the completion
        await settle(pilot)
        assert app.query_one("#model-name", Input).value.startswith("meta-llama/Llama-3.2-1B")
        assert app.plan is not None and not app.problems
        assert not app.query_one("#q-model-name").has_class("-invalid")


async def test_invalid_value_is_marked_on_its_field(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shown = app.plan
        app.query_one("#data-max_seq_len", Input).value = "8"
        await settle(pilot)
        assert [p.field for p in app.problems] == ["data.max_seq_len"]
        question = app.query_one("#q-data-max_seq_len")
        assert question.has_class("-invalid")
        assert "greater than or equal to 16" in text_of(question.query_one(".q-help", Static))
        assert app.plan is shown  # the last valid plan stays, marked stale
        assert app.results.has_class("-stale")
        app.query_one("#data-max_seq_len", Input).value = "4096"
        await settle(pilot)
        assert not app.problems and not question.has_class("-invalid")
        assert app.plan.answers["data"]["max_seq_len"] == 4096


async def test_recommendation_follows_gpu_and_objective():
    answers = {
        "model": {"name": "meta-llama/Llama-3.1-70B"},
        "hardware": {"gpu": "RTX-4090"},
        "data": {"examples": 20000, "avg_tokens": 500},
    }
    app = make_app(answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        small = app.plan
        assert not small.methods["full"].fits and not small.methods["lora"].fits
        assert small.recommendation.method == "qlora"  # QLoRA or nothing: QLoRA needs the least
        app.query_one("#hardware-gpu", Select).value = "H100-SXM"
        app.query_one("#hardware-gpus_per_node", Input).value = "8"
        await settle(pilot)
        big = app.plan
        assert big.hardware.world_size == 8 and big.methods["full"].fits
        assert big.methods["qlora"].fits
        assert big.recommendation.method == "lora"  # no longer squeezed into QLoRA
        assert "Recommendation" in text_of(app.query_one(PlanView))
        app.query_one("#objective-kind", Select).value = "domain_knowledge"
        await settle(pilot)
        assert app.plan.recommendation.method == "full"
        assert "domain knowledge" in app.plan.recommendation.reasons[0]


async def test_debounce_plans_once_for_a_burst_of_keys(example_answers):
    app = make_app(example_answers, debounce=1.0)  # long enough for a busy CI machine
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = app.plans_started
        app.query_one("#data-examples", Input).focus()  # as if tabbed to
        await pilot.pause()
        await pilot.press("end", "backspace", "backspace", "1", "2")
        await settle(pilot)
        assert app.plan.answers["data"]["examples"] == 50012
        assert app.plans_started == before + 1  # one plan for the whole burst


async def test_save_answers_and_reload_gives_the_same_plan(tmp_path, example_answers):
    path = tmp_path / "answers.toml"
    app = make_app(example_answers, path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        (await app.form.control("training.lora_r")).value = "32"  # opens the collapsed section
        app.query_one("#objective-variants", Input).value = "4"
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        shown = app.plan
    saved = tomllib.loads(path.read_text())
    assert saved["model"] == {"name": "meta-llama/Llama-3.1-8B"}
    assert saved["training"] == {"lora_r": 32}
    assert "max_seq_len" not in saved["data"]  # only what differs from the defaults
    _, headless = plan_from_file(str(path), detect=False)
    assert headless.model_dump() == shown.model_dump()

    again = make_app(tomllib.loads(path.read_text()), path)
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert again.form.value("training.lora_r") == "32"
        assert (await again.form.control("training.lora_r")).value == "32"
        assert again.plan.model_dump() == shown.model_dump()


async def test_save_as_asks_for_a_path_when_opened_without_a_file(tmp_path, example_answers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        field = app.screen.query_one("#save-path", Input)
        field.value = str(tmp_path / "mine.toml")
        await pilot.press("enter")
        await pilot.pause()
    assert tomllib.loads((tmp_path / "mine.toml").read_text())["hardware"]["gpu"] == "A100-80GB"


async def test_detected_gpus_are_prefilled():
    app = make_app({"model": {"name": "meta-llama/Llama-3.1-8B"}}, detected=["NVIDIA H100 80GB HBM3"] * 2)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert app.query_one("#hardware-gpu", Select).value == "H100-SXM"
        assert app.query_one("#hardware-gpus_per_node", Input).value == "2"
        assert app.plan.hardware.world_size == 2


async def test_data_file_is_measured(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "' + "x" * 400 + '"}\n' * 1, encoding="utf-8")
    data.write_text(('{"text": "' + "x" * 400 + '"}\n') * 30, encoding="utf-8")
    app = make_app({"model": {"name": "Qwen/Qwen2.5-0.5B"}, "hardware": {"gpu": "L4"}, "data": {"path": str(data)}})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert app.plan.data["examples"] == 30
        assert app.plan.data["avg_tokens"] == 100
        note = text_of(app.query_one("#q-data-path .q-help", Static))
        assert "30 examples" in note


async def test_narrow_terminal_switches_between_questions_and_plan(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-narrow")
        assert app.query_one("#questions").display and not app.query_one("#results").display
        await pilot.press("f2")
        await pilot.pause()
        assert app.query_one("#results").display and not app.query_one("#questions").display


async def test_theme_toggles(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        dark = app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark is not dark


async def test_command_palette_runs_area_action_entries(example_answers):
    from ftplan.tui.screens import ConfirmScreen, ExportScreen, LaunchScreen, SavePathScreen

    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("answers: save", "plan: export", "plan: launch"):
            assert wanted in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"plan: export")
        await pilot.pause(0.3)
        await open_screen(pilot, "enter", ExportScreen)
    for owner in (type(app), ExportScreen, LaunchScreen, ConfirmScreen, SavePathScreen):
        assert all(b.id for b in owner.BINDINGS), owner  # remappable: every binding has an id


async def test_quit_without_a_run_exits_at_once(example_answers):
    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


async def test_the_app_measures_data_as_the_headless_plan_does(tmp_path):
    """Same answers, same file: the app's plan equals `ftplan --answers` (the prompt share of a
    chat set, the examples TRL drops, host RAM) because both build the context in ftplan.context."""
    import json

    from ftplan.context import data_context, plan_context
    from ftplan.planner import make_plan, parse_answers

    data = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "q" * (40 if i % 2 else 4000)},
                {"role": "assistant", "content": "ok"},
            ]
        }
        for i in range(40)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = {"model": {"name": "Qwen/Qwen2.5-0.5B"}, "hardware": {"gpu": "L4"},
           "data": {"path": str(data), "max_seq_len": 512, "packing": False}}  # fmt: skip
    answers = parse_answers(raw)
    sample, notes = data_context(answers)
    headless = make_plan(answers, plan_context([], sample, notes, 64 * 2**30))
    app = make_app(raw, detect_host_ram=lambda: 64 * 2**30)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert app.plan.data == headless.data
        assert app.plan.data["sequences"] < 40  # the long prompts leave no answer: TRL drops them
        for m in ("full", "lora", "qlora"):
            assert app.plan.methods[m].time.steps == headless.methods[m].time.steps
            assert app.plan.methods[m].warnings == headless.methods[m].warnings
        assert app.plan.hardware.host_ram == 64 * 2**30


async def test_a_data_file_that_cannot_train_is_named_beside_its_question(tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n{not json\n', encoding="utf-8")
    app = make_app({"model": {"name": "Qwen/Qwen2.5-0.5B"}, "hardware": {"gpu": "L4"}, "data": {"path": str(data)}})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        note = text_of(app.query_one("#q-data-path .q-help", Static))
        assert "Cannot train on this file" in note and "line 3" in note
