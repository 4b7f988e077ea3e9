"""QuickTable draws what rich.table.Table draws, segment for segment, only faster."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from ftplan import render
from ftplan.planner import load_answers, make_plan
from ftplan.quicktable import QuickTable
from ftplan.tui.widgets.planview import render_to_lines
from ftplan.tui.widgets.results import chosen_table

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
TABLES = (
    render.model_table,
    render.memory_table,
    render.settings_table,
    render.cost_table,
    render.hidden_cost_table,
    chosen_table,
)
WIDTHS = (40, 64, 100, 140, 220)


def lines(renderable, width: int, emoji: bool) -> list[list[Segment]]:
    return [list(Segment.simplify(line)) for line in render_to_lines(renderable, width, emoji)]


def as_rich(table: QuickTable) -> Table:
    """The same table drawn by Rich alone."""
    plain = Table.__new__(Table)
    plain.__dict__.update(table.__dict__)
    return plain


@pytest.fixture
def fast_draws(monkeypatch) -> list[int]:
    """Counts the tables QuickTable drew itself (so an equality cannot come from Rich twice)."""
    drawn: list[int] = []
    draw = QuickTable._draw

    def counting(self, *args, **kwargs):
        drawn.append(1)
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(QuickTable, "_draw", counting)
    return drawn


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_plan_table_matches_rich(example, fast_draws):
    plan = make_plan(load_answers(example))
    for table in TABLES:
        for width in WIDTHS:
            for emoji in (False, True):  # the app's console and the CLI's
                quick = table(plan)
                assert isinstance(quick, QuickTable)
                assert lines(quick, width, emoji) == lines(as_rich(quick), width, emoji), (table.__name__, width)
    assert len(fast_draws) >= len(TABLES) * 2  # the wide terminals take the fast path for every table


def odd_tables() -> list[QuickTable]:
    """Tables with what the fast path must leave to Rich, or must draw exactly like it."""
    made = []
    for header in (True, False):
        t = QuickTable(title="Odd cells", show_header=header, title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("value", justify="right")
        t.add_row("plain", Text("styled", style="bold red"))
        t.add_row("spans", Text.assemble(("a", "green"), " b ", ("c", "italic")))
        t.add_row("wide 中文", "x")
        made.append(t)
    for cell in ("[bold]markup[/]", "two\nlines", ":smile: code", Text("justified", justify="center")):
        t = QuickTable(title="Fallback")
        t.add_column("k")
        t.add_column("v")
        t.add_row("cell", cell)
        made.append(t)
    centred = QuickTable(title="Centred title")
    centred.add_column("only")
    centred.add_row("one")
    made.append(centred)
    return made


@pytest.mark.parametrize("index", range(len(odd_tables())))
@pytest.mark.parametrize("width", (12, 30, 80))
@pytest.mark.parametrize("emoji", (False, True))
def test_odd_tables_match_rich(index, width, emoji):
    table = odd_tables()[index]
    assert lines(table, width, emoji) == lines(as_rich(table), width, emoji)


def test_the_fast_path_is_the_fast_one():
    """Guards the reason for the class: the memory table's fast path must not fall back."""
    plan = make_plan(load_answers(EXAMPLES[0]))
    table = render.memory_table(plan)
    assert table._plain_cells(Console(file=io.StringIO())) is not None
