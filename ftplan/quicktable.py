"""A Rich Table that draws simple tables itself, segment for segment as Rich would.

The plan's tables are redrawn on every keystroke in the app, and Rich lays each cell out as a
renderable of its own (measure, pad, wrap, align): about 10 ms for the memory table on a
2-core machine, a fifth of the keystroke budget. Every table ftplan draws is one line per
cell, so the layout is a sum of widths. ``QuickTable`` takes that path when the table is
such a table and fits; anything else (wrapping, markup, other boxes, a narrow terminal) goes
to Rich's own ``Table``. ``tests/test_quicktable.py`` holds the two to the same segments.
"""

from __future__ import annotations

import re

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text


class QuickTable(Table):
    """``rich.table.Table`` with a fast path for one-line cells in the default heavy-head box."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cells = self._plain_cells(console)
        if cells is None:
            yield from super().__rich_console__(console, options)
            return
        widths = [max(cell.cell_len for cell in column) + 2 for column in cells]
        table_width = sum(widths) + len(widths) + 1
        if table_width > options.max_width:
            yield from super().__rich_console__(console, options)  # Rich shrinks and wraps
            return
        yield from self._draw(console, options, cells, widths, table_width)

    def _simple(self) -> bool:
        """Whether the table uses only what the fast path draws (Rich's defaults, our options)."""
        return (
            self.box is box.HEAVY_HEAD
            and self.show_edge
            and not self.show_lines
            and not self.show_footer
            and not self.caption
            and not self.leading
            and not self.row_styles
            and not self.collapse_padding
            and self.pad_edge
            and self.padding == (0, 1, 0, 1)
            and self.width is None
            and not self.expand
            and self.min_width is None
            and self.style in ("", "none", None)
            and not self.border_style
            and not self.highlight
            and all(
                c.width is None and c.min_width is None and c.max_width is None and c.ratio is None
                for c in self.columns
            )
            and all(c.justify in ("left", "right") and not c.header_style and c.vertical == "top" for c in self.columns)
        )

    def _plain_cells(self, console: Console) -> list[list[_Cell]] | None:
        """Each column's cells (the header first) as styled one-line Texts, or None when Rich
        must lay the table out (markup, emoji codes, line breaks, other renderables)."""
        if not self.columns or not self._simple():
            return None
        header_style = console.get_style(self.header_style or "") if self.show_header else Style()
        columns: list[list[_Cell]] = []
        for column in self.columns:
            style = console.get_style(column.style or "")
            texts: list[_Cell] = []
            raw = [(header_style, column.header)] if self.show_header else []
            raw += [(style, cell) for cell in column.cells]
            for base, cell in raw:
                if isinstance(cell, str):
                    if "\n" in cell or "\t" in cell or "[" in cell or _EMOJI_CODE.search(cell):
                        return None  # line breaks, tabs, markup, emoji codes: Rich's job
                    text = Text(cell)
                elif isinstance(cell, Text):
                    plain = cell.plain
                    if "\n" in plain or "\t" in plain or cell.justify or cell.overflow or cell.no_wrap:
                        return None
                    text = cell
                else:
                    return None
                texts.append(_Cell(text, base))
            columns.append(texts)
        return columns

    def _draw(self, console: Console, options: ConsoleOptions, cells, widths: list[int], table_width: int):
        line = Segment.line()
        if self.title:
            title = console.render_str(
                self.title, style=Style.pick_first(self.title_style, "table.title"), highlight=False
            )
            title_options = options.update(width=table_width, highlight=False, height=None, justify=self.title_justify)
            yield from console.render(title, title_options)
        safe = console.safe_box if self.safe_box is None else self.safe_box
        frame = box.HEAVY_HEAD.substitute(options, safe=safe)
        if not self.show_header:
            frame = frame.get_plain_headed_box()
        border = Style()
        yield Segment(frame.get_top(widths), border)
        yield line
        rows = len(cells[0])
        for index in range(rows):
            first, last = index == 0, index == rows - 1
            left, right, divider = (
                (frame.head_left, frame.head_right, frame.head_vertical)
                if first
                else (frame.foot_left, frame.foot_right, frame.foot_vertical)
                if last
                else (frame.mid_left, frame.mid_right, frame.mid_vertical)
            )
            yield Segment(left, border)
            for number, (column, width) in enumerate(zip(self.columns, widths, strict=True)):
                if number:
                    yield Segment(divider, border)
                yield from cells[number][index].segments(console, width, column.justify)
            yield Segment(right, border)
            yield line
            if first and self.show_header:
                yield Segment(frame.get_row(widths, "head", edge=True), border)
                yield line
        yield Segment(frame.get_bottom(widths), border)
        yield line


_NEWLINE = Text("\n")
_EMOJI_CODE = re.compile(r":\S*?:")
"""What Rich's console may replace with an emoji (``:smile:``)."""


class _Cell:
    """One cell's text and base style (the column's or the header's), drawn padded to a width."""

    __slots__ = ("text", "base")

    def __init__(self, text: Text, base: Style) -> None:
        self.text, self.base = text, base

    @property
    def cell_len(self) -> int:
        return self.text.cell_len

    def segments(self, console: Console, width: int, justify: str):
        text = self.text
        gap = width - 2 - text.cell_len
        if gap:  # Rich justifies inside the text: the fill takes the text's own style
            text = text.copy()
            text.pad_left(gap) if justify == "right" else text.pad_right(gap)
        yield Segment(" ", self.base)
        # Rich renders a cell's lines joined into one Text, which turns the text's own style
        # into a span (a lone Text renders its style-only runs unstyled).
        yield from Segment.apply_style(_NEWLINE.join([text]).render(console), self.base)
        yield Segment(" ", self.base)
