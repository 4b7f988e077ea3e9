"""One bar per method: its memory total against the GPU's capacity."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ftplan.planner import METHODS, Plan
from ftplan.render import NAMES

LABEL = 7
TAIL = 26


def bar_line(name: str, total: int, capacity: int, fits: bool, width: int, scale: float, star: bool) -> Text:
    """`QLoRA ★ ██████████░░░░│   14.2 / 80.0 GiB  fits` (capacity marker at `│`)."""
    line = Text((NAMES[name] + (" ★" if star else "")).ljust(LABEL + 1), style="bold" if star else "")
    cells = max(8, width - LABEL - 1 - TAIL)
    colour = "green" if fits else "red"
    if capacity:
        cap_cell = min(cells - 1, round(capacity / scale * cells))
        used = min(cells, round(total / scale * cells))
        for i in range(cells):
            if i == cap_cell:
                line.append("│", style="bold")
            elif i < used:
                line.append("█", style=colour)
            else:
                line.append("░", style="dim")
        tail = f" {total / 2**30:6.1f} / {capacity / 2**30:.1f} GiB"
    else:
        used = min(cells, round(total / scale * cells))
        line.append("█" * used, style=colour)
        line.append("░" * (cells - used), style="dim")
        tail = f" {total / 2**30:6.1f} GiB host"
    line.append(tail)
    line.append("  fits" if fits else "  too big", style=f"bold {colour}")
    return line


class MemoryBars(Widget):
    """Renders from `plan`; the plan is the only state."""

    DEFAULT_CSS = "MemoryBars { height: auto; }"

    plan: reactive[Plan | None] = reactive(None, layout=True)

    def render(self) -> RenderableType:
        plan = self.plan
        if plan is None:
            return Text("")
        capacity = plan.hardware.gpu_memory
        totals = [plan.methods[m].memory.total for m in METHODS]
        scale = max([capacity, *totals]) * 1.02 or 1
        width = self.content_size.width or 80
        title = Text(
            f"Memory per GPU against {plan.hardware.gpu}" if capacity else "Host memory (CPU run)",
            style="bold",
        )
        lines = [title]
        for m in METHODS:
            mp = plan.methods[m]
            lines.append(
                bar_line(m, mp.memory.total, capacity, mp.fits, width, scale, m == plan.recommendation.method)
            )
        return Text("\n").join(lines)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 4 if self.plan is not None else 1
