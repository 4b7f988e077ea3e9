"""One bar per method: its memory total against the GPU's capacity (a Rich renderable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from ftplan.planner import METHODS
from ftplan.render import NAMES

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan

LABEL = 7
TAIL = 29


def bar_line(name: str, total: int, capacity: int, fits: bool, width: int, scale: float, star: bool) -> Text:
    """`QLoRA ★ ██████████░░░░│   14.2 / 80.0 GiB  fits` (capacity marker at `│`)."""
    line = Text((NAMES[name] + (" ★" if star else "")).ljust(LABEL + 1), style="bold" if star else "")
    cells = max(8, width - LABEL - 1 - TAIL)
    colour = "green" if fits else "red"
    used = min(cells, round(total / scale * cells))
    if capacity:
        cap_cell = min(cells - 1, round(capacity / scale * cells))
        for i in range(cells):
            if i == cap_cell:
                line.append("│", style="bold")
            elif i < used:
                line.append("█", style=colour)
            else:
                line.append("░", style="dim")
        tail = f" {total / 2**30:6.1f} / {capacity / 2**30:5.1f} GiB"
    else:
        line.append("█" * used, style=colour)
        line.append("░" * (cells - used), style="dim")
        tail = f" {total / 2**30:6.1f} GiB (host)     "
    line.append(tail)
    line.append("  fits   " if fits else "  too big", style=f"bold {colour}")
    return line


class MemoryBars:
    """Renders at whatever width it is given."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        plan = self.plan
        capacity = plan.hardware.gpu_memory
        totals = [plan.methods[m].memory.total for m in METHODS]
        scale = max([capacity, *totals]) * 1.02 or 1
        yield Text(f"Memory per GPU against {plan.hardware.gpu}" if capacity else "Host memory (CPU run)", style="bold")
        for m in METHODS:
            mp = plan.methods[m]
            star = m == plan.recommendation.method
            yield bar_line(m, mp.memory.total, capacity, mp.fits, options.max_width, scale, star)
