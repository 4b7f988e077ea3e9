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
TAIL = 36


def usable_of(capacity: int) -> int:
    """What a run may use of a GPU's memory (the planner's limit for "fits", not the label's)."""
    from ftplan.planner.memory import USABLE_FRACTION

    return int(capacity * USABLE_FRACTION)


def bar_line(
    name: str, total: int, capacity: int, fits: bool, width: int, scale: float, star: bool, host: int = 0
) -> Text:
    """`QLoRA ★ ██████████░░░░│   14.2 / 76.0 GiB usable  fits`: the marker `│` and the figure are
    the usable limit the plan is held to (95 %), so "23.3 / 24.0 too big" cannot happen; offload's
    host RAM goes on a line under it when the method needs it."""
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
        tail = f" {total / 2**30:6.1f} / {capacity / 2**30:5.1f} GiB usable"
    else:
        line.append("█" * used, style=colour)
        line.append("░" * (cells - used), style="dim")
        tail = f" {total / 2**30:6.1f} GiB (host)            "
    line.append(tail)
    line.append("  fits   " if fits else "  too big", style=f"bold {colour}")
    if host:  # under the bar: the GPU's line keeps its width at any terminal size
        line.append("\n" + " " * (LABEL + 1) + f"+ {host / 2**30:,.1f} GiB of host RAM (CPU offload)", style="dim")
    return line


class MemoryBars:
    """Renders at whatever width it is given."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        plan = self.plan
        capacity = usable_of(plan.hardware.gpu_memory) if plan.hardware.gpu_memory else 0
        totals = [plan.methods[m].memory.total for m in METHODS]
        scale = max([capacity, *totals]) * 1.02 or 1
        title = f"Memory per GPU against {plan.hardware.gpu} ({plan.hardware.gpu_memory / 2**30:.1f} GiB, 95 % usable)"
        yield Text(title if capacity else "Host memory (CPU run)", style="bold")
        for m in METHODS:
            mp = plan.methods[m]
            star = m == plan.recommendation.method
            host = mp.cpu_memory if capacity else 0
            yield bar_line(m, mp.memory.total, capacity, mp.fits, options.max_width, scale, star, host)
