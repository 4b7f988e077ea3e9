"""Issue 14: answers files the app must open, whatever they hold, with every problem marked."""

from __future__ import annotations

from textual.widgets import Input, Select, Static

from ftplan.tui.app import FtplanApp
from ftplan.tui.fields import BY_KEY, raw_value
from tests.tui.conftest import settle, text_of

SIZE = (120, 40)


async def test_values_the_choices_lack_open_marked_instead_of_crashing(tmp_path):
    """`InvalidSelectValueError` used to end the app (exit 1) before the first frame."""
    raw = {
        "objective": {"kind": "chat"},
        "model": {"name": "meta-llama/Llama-3.1-8B"},
        "hardware": {"gpu": "RTX-5090"},
        "training": {"method": "qlorra"},
    }
    app = FtplanApp(None, tmp_path / "a.toml", raw=raw, detect=lambda: [], cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.is_running and app.plan is None
        # every problem at once: the schema's and the unknown GPU's
        assert {p.field for p in app.problems} == {"objective.kind", "training.method", "hardware.gpu"}
        for key, value in (("objective.kind", "chat"), ("hardware.gpu", "RTX-5090"), ("training.method", "qlorra")):
            assert app.query_one(f"#q-{BY_KEY[key].widget_id}").has_class("-invalid"), key
            assert app.query_one(f"#{BY_KEY[key].widget_id}", Select).value == value
        assert "did you mean RTX-4090" in text_of(app.query_one("#q-hardware-gpu .q-help", Static))
        app.query_one("#objective-kind", Select).value = "instruction"
        app.query_one("#hardware-gpu", Select).value = "RTX-4090"
        app.query_one("#training-method", Select).value = "qlora"
        await settle(pilot)
        assert app.plan is not None and app.plan.recommendation.method == "qlora"


async def test_error_messages_keep_what_was_typed(example_answers):
    """`my_bad_value` in a number field used to come back as `mybadvalue` (underscores stripped)."""
    from tests.tui.conftest import make_app

    app = make_app(example_answers)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.query_one("#data-examples", Input).value = "my_bad_value"
        await settle(pilot)
        shown = text_of(app.query_one("#q-data-examples .q-help", Static))
        assert "'my_bad_value'" in shown
        assert "ModelChoice" not in shown


def test_numbers_as_people_write_them():
    examples, usd = BY_KEY["data.examples"], BY_KEY["budget.usd"]
    for text in ("30000", "30,000", "30_000", "30k", "3e4", " 30K "):
        assert raw_value(examples, text) == (True, 30000), text
    assert raw_value(usd, "$200") == (True, 200.0)
    assert raw_value(BY_KEY["training.learning_rate"], "2e-4") == (True, 2e-4)
    for text in ("1,5", "2.5", "my_bad_value", "30 thousand"):
        assert raw_value(examples, text) == (True, text), text  # the validator says what is wrong
