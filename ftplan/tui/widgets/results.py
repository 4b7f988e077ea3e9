"""The live plan: memory table and bars, time & cost, hidden costs, the recommendation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ftplan.planner import Problem
from ftplan.render import (
    NAMES,
    SETTING_KEYS,
    cost_table,
    hidden_cost_table,
    memory_section,
    recommendation_panel,
    settings_table,
)
from ftplan.tui.widgets.membars import MemoryBars
from ftplan.tui.widgets.planview import PlanView, render_to_lines

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan


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
    keys = [*SETTING_KEYS, "max_seq_len"]
    if s.is_peft:
        keys += ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"]
    for key in keys:
        value = getattr(s, key)
        text = ", ".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)
        t.add_row(key, text + ("*" if key in s.chosen_by_planner else ""))
    return t


SECTIONS: tuple[tuple[str, Callable[[Plan], Any]], ...] = (
    ("summary", summary_line),
    ("recommendation", recommendation_panel),
    ("bars", MemoryBars),
    ("memory", memory_section),
    ("cost", cost_table),
    ("hidden", hidden_cost_table),
    ("chosen", chosen_table),
    ("settings", settings_table),
)
"""The panel's sections, top to bottom: the answer first, the detail after."""


def plan_group(plan: Plan) -> Group:
    """Everything the panel shows, as one renderable."""
    parts: list[Any] = []
    for _, draw in SECTIONS:
        parts += [draw(plan), Text("")]
    return Group(*parts[:-1])


FIRST_PASS = ("summary", "recommendation", "bars", "memory")
"""The sections at the top of the panel, rendered before the rest after each edit."""


class PlanRenderer:
    """Renders a plan to lines in two passes: the top sections (`FIRST_PASS`) first, with the
    others kept from the plan before for one pass, then the rest.

    Every section is drawn again for each plan: without a cache the tables below the fold cost
    about 10 ms more per edit, in the second pass (docs/INTERNALS.md has the figures). Called
    from the plan worker (one at a time, but a superseded thread may still be finishing, hence
    the lock).
    """

    def __init__(self) -> None:
        self._drawn: dict[str, tuple[Plan, list]] = {}
        """Each section's lines and the plan they were drawn from, at `_width`."""
        self._width = 0
        self._lock = threading.Lock()

    def lines(self, plan: Plan, width: int, only: Iterable[str] | None = None) -> tuple[list, bool]:
        """(lines, complete). With `only`, the other sections keep the lines of an older plan
        (complete is then False); without, every section not yet drawn from `plan` is drawn."""
        out: list = []
        complete = True
        with self._lock:
            if width != self._width:
                self._drawn.clear()
                self._width = width
            for i, (name, draw) in enumerate(SECTIONS):
                drawn = self._drawn.get(name)
                if drawn is None or (drawn[0] is not plan and (only is None or name in only)):
                    drawn = self._drawn[name] = (plan, render_to_lines(draw(plan), width))
                complete = complete and drawn[0] is plan
                if i:
                    out.append([Segment(" " * width)])
                out.extend(drawn[1])
        return out, complete


class ResultsPanel(VerticalScroll):
    """Shows the latest valid plan; marks it stale while the answers have problems."""

    EMPTY = "Answer the questions on the left (a model name is enough) to see the plan."

    def compose(self) -> ComposeResult:
        yield Static(self.EMPTY, id="res-status", classes="-visible", markup=False)
        yield PlanView(id="res-plan")

    @property
    def plan_width(self) -> int:
        """The width the plan is rendered at (workers render ahead at this width)."""
        return self.query_one(PlanView).content_width

    def show_plan(self, plan: Plan, group: Group | None = None, lines=None, width: int = 0) -> None:
        self.set_class(False, "-stale")
        status = self.query_one("#res-status", Static)
        if status.has_class("-visible"):
            status.update("")
            status.set_class(False, "-visible")
        self.query_one(PlanView).show(group or plan_group(plan), lines, width)

    def show_problems(self, problems: list[Problem], have_plan: bool) -> None:
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the answers"
        tail = " — showing the last valid plan." if have_plan else "."
        self.set_class(have_plan, "-stale")
        status = self.query_one("#res-status", Static)
        status.update(head + tail + " Fix the fields marked in red.")
        status.set_class(True, "-visible")
