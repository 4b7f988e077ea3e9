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
from ftplan.quicktable import QuickTable
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
    t = QuickTable(
        title=f"Settings for {NAMES[method]} (* = chosen by ftplan)", title_justify="left", show_header=False
    )
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


def _methods(plan: Plan, *attrs: str) -> str:
    return repr([[getattr(mp, a) for a in attrs] for mp in plan.methods.values()])


# Each section: a name, what it depends on (a cheap string key), and how to draw it. Only the
# sections whose key changed are rendered again: a keystroke in `examples` redraws the cost
# tables, not the memory table.
SECTIONS: tuple[tuple[str, Callable[[Plan], str], Callable[[Plan], Any]], ...] = (
    ("summary", lambda p: repr((p.model.name, p.model.params, p.hardware, p.data)), summary_line),
    ("recommendation", lambda p: repr((p.recommendation, p.chosen.warnings, p.notes)), recommendation_panel),
    (
        "bars",
        lambda p: (
            repr((p.hardware.gpu, p.hardware.gpu_memory, p.recommendation.method)) + _methods(p, "memory", "fits")
        ),
        MemoryBars,
    ),
    (
        "memory",
        lambda p: (
            repr((p.hardware.gpu, p.recommendation.method))
            + _methods(
                p, "memory", "fits", "trainable_params", "cpu_memory", "max_seq_len_that_fits", "hardware_needed"
            )
        ),
        memory_section,
    ),
    ("cost", lambda p: _methods(p, "time", "cost"), cost_table),
    ("hidden", lambda p: _methods(p, "cost"), hidden_cost_table),
    ("chosen", lambda p: repr((p.recommendation.method, p.chosen.settings)), chosen_table),
    ("settings", lambda p: _methods(p, "settings"), settings_table),
)


def plan_group(plan: Plan) -> Group:
    """Everything the panel shows, top to bottom: the answer first, the detail after."""
    parts: list[Any] = []
    for _, _, draw in SECTIONS:
        parts += [draw(plan), Text("")]
    return Group(*parts[:-1])


FIRST_PASS = ("summary", "recommendation", "bars", "memory")
"""The sections at the top of the panel, rendered before the rest after each edit."""


class PlanRenderer:
    """Renders a plan to lines, section by section, reusing the sections that did not change.

    Called from the plan worker (one at a time, but a superseded thread may still be finishing,
    hence the lock).
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, str, list]] = {}
        self._lock = threading.Lock()

    def lines(self, plan: Plan, width: int, only: Iterable[str] | None = None) -> tuple[list, bool]:
        """(lines, complete). With `only`, other sections that changed keep their previous
        lines (complete is then False): the visible tables first, the rest in a second pass."""
        out: list = []
        complete = True
        fresh = set(only) if only is not None else None
        with self._lock:
            for i, (name, key_of, draw) in enumerate(SECTIONS):
                key = key_of(plan)
                cached = self._cache.get(name)
                if cached is not None and cached[0] == width and cached[1] == key:
                    section = cached[2]
                elif fresh is not None and name not in fresh and cached is not None and cached[0] == width:
                    section = cached[2]  # stale for one pass
                    complete = False
                else:
                    section = render_to_lines(draw(plan), width)
                    self._cache[name] = (width, key, section)
                if i:
                    out.append([Segment(" " * width)])
                out.extend(section)
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
