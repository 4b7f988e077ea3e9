"""The live plan: memory table and bars, time & cost, hidden costs, the recommendation."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ftplan.planner import Plan, Problem
from ftplan.render import (
    NAMES,
    cost_table,
    hidden_cost_table,
    memory_table,
    recommendation_panel,
    settings_table,
)
from ftplan.tui.widgets.membars import MemoryBars


def summary_line(plan: Plan) -> Text:
    m, hw = plan.model, plan.hardware
    where = "the CPU" if hw.gpu == "cpu" else f"{hw.world_size}× {hw.gpu}"
    text = Text()
    text.append(m.name, style="bold")
    text.append(f" · {m.params / 1e9:,.2f} B params · {where}")
    if hw.detected:
        text.append(" (detected)", style="dim")
    text.append(f" · {plan.data['examples']:,} ex × {plan.data['avg_tokens']:,} tok")
    return text


def chosen_table(plan: Plan) -> Table:
    """The settings of the recommended method only (the full comparison is further down)."""
    method = plan.recommendation.method
    s = plan.methods[method].settings
    t = Table(title=f"Settings for {NAMES[method]} (* = chosen by ftplan)", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    keys = ["precision", "optimizer", "micro_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
            "zero_stage", "offload", "attention", "learning_rate", "epochs", "max_seq_len"]
    if s.is_peft:
        keys += ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"]
    for key in keys:
        value = getattr(s, key)
        text = ", ".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)
        t.add_row(key, text + ("*" if key in s.chosen_by_planner else ""))
    return t


class ResultsPanel(VerticalScroll):
    """Shows the latest valid plan; marks it stale while the answers have problems."""

    def compose(self) -> ComposeResult:
        yield Static("Answer the questions on the left (a model name is enough) to see the plan.",
                     id="res-status", markup=False)
        yield Static("", id="res-summary")
        yield Static("", id="res-recommendation")
        yield MemoryBars(id="res-bars")
        yield Static("", id="res-memory")
        yield Static("", id="res-cost")
        yield Static("", id="res-hidden")
        yield Static("", id="res-chosen")
        yield Static("", id="res-settings")

    def show_plan(self, plan: Plan) -> None:
        self.set_class(False, "-stale")
        self.query_one("#res-status", Static).update("")
        self.query_one("#res-summary", Static).update(summary_line(plan))
        self.query_one("#res-recommendation", Static).update(recommendation_panel(plan))
        self.query_one(MemoryBars).plan = plan
        self.query_one("#res-memory", Static).update(memory_table(plan))
        self.query_one("#res-cost", Static).update(cost_table(plan))
        self.query_one("#res-hidden", Static).update(hidden_cost_table(plan))
        self.query_one("#res-chosen", Static).update(chosen_table(plan))
        self.query_one("#res-settings", Static).update(Group(settings_table(plan)))

    def show_problems(self, problems: list[Problem], have_plan: bool) -> None:
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the answers"
        tail = " — showing the last valid plan." if have_plan else "."
        self.set_class(have_plan, "-stale")
        self.query_one("#res-status", Static).update(head + tail + " Fix the fields marked in red.")
