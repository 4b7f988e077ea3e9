"""Issue 14's quick start: a bare `ftplan` to a recommendation in at most 40 key presses.

benchmarks/keystrokes.py measures the same path in a real terminal (tmux); this test holds
the key sequence to the app in-process so a change that lengthens it fails here.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from ftplan.planner import catalog_names
from ftplan.tui.app import FtplanApp
from ftplan.tui.widgets.modelname import best_model
from tests.tui.conftest import settle, wait_until

SCENARIO = [
    *"qwen2.5-7", "enter",  # the model: Enter takes the completion and moves on
    "tab",  # objective: customer-support chat is the default, instruction
    "enter", *"rtx-4", "enter",  # the GPU: open the list, type to find it, take it
    "tab", "2",  # GPUs per node
    "tab", *"30k",  # examples
    "tab", *"600",  # avg tokens
    "tab", *"200",  # budget in USD
    "tab", *"12",  # deadline in hours
]  # fmt: skip


def test_completion_finds_the_model_from_a_few_characters():
    names = catalog_names()
    assert best_model("Qwen/Qwen2.5-7", names)[0] == "Qwen/Qwen2.5-7B"  # was -72B (listed first)
    assert best_model("qwen2.5-7", names)[0] == "Qwen/Qwen2.5-7B"  # the repository name alone
    assert best_model("qwen2.5-72", names)[0] == "Qwen/Qwen2.5-72B"
    assert best_model("meta-llama/Llama-3.2-1", names)[0] == "meta-llama/Llama-3.2-1B"
    assert best_model("Qwen/Qwen2.5-7B", names) is None  # complete already: nothing to add
    assert best_model("./my-model", names) is None


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_the_quick_start_scenario_in_at_most_40_keys(size):
    """At 80x24 (one pane at a time) the Questions tab took the focus from the model name at
    start-up and the typed name went to the objective's list."""
    assert len(SCENARIO) <= 40
    app = FtplanApp(None, None, detect=lambda: [], cursor_blink=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert app.focused is app.query_one("#model-name", Input)  # typing starts at once
        for key in SCENARIO:
            await pilot.press(key)
            if key == "enter":  # the select's list opens and closes between keys, as on screen
                await pilot.pause(0.1)
        await settle(pilot)
        await wait_until(pilot, lambda: app.plan is not None and app.plan.answers["budget"]["hours"] == 12)
        plan = app.plan
        assert not app.problems
        assert plan.model.name == "Qwen/Qwen2.5-7B"
        assert (plan.hardware.gpu, plan.hardware.world_size) == ("RTX-4090", 2)
        assert (plan.data["examples"], plan.data["avg_tokens"]) == (30000, 600)
        assert plan.answers["objective"]["kind"] == "instruction"
        assert plan.answers["budget"]["usd"] == 200
        assert plan.recommendation.method in ("lora", "qlora")
