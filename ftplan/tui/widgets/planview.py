"""A widget that shows a Rich renderable rendered once per update (line API).

Static re-renders on every frame and always asks for a new layout; the plan's tables
change on every keystroke but rarely change height, so this widget renders them to strips
once and asks for a layout only when it needs more lines than it has. Its height only
grows at a given width (a shorter plan leaves blank lines at the bottom until the next
resize): a keystroke that shortens one table by a line must not reflow the whole screen,
and every layout that changes this widget's size is followed by a second one. An update
repaints only the lines that changed: a new number of examples redraws the cost rows, not
the whole panel.
"""

from __future__ import annotations

import io

from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from textual.events import Resize
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget


def render_to_lines(renderable: RenderableType, width: int, emoji: bool = False) -> list[list[Segment]]:
    """Render to lines of segments with a private console: safe to call from a worker thread."""
    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        emoji=emoji,
    )
    return console.render_lines(renderable, console.options.update_width(width), pad=True)


class PlanView(Widget):
    DEFAULT_CSS = "PlanView { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._renderable: RenderableType | None = None
        self._strips: list[Strip] = []
        self._width = 0
        self._rows = 0
        """Lines this widget takes: the most the plan has needed at this width."""
        self._styled: dict[int, Strip] = {}
        """Lines with the widget's background applied, built on first paint."""
        self._style: Style | None = None
        """The widget's own style (its background), looked up once per style change."""
        self.content_width = 0
        """The width the plan is drawn at, kept from the last resize: ``content_size`` asks the
        compositor, which rebuilds its whole map after a keystroke (~6 ms here)."""

    @property
    def renderable(self) -> RenderableType | None:
        return self._renderable

    def show(self, renderable: RenderableType | None, lines: list[list[Segment]] | None = None, width: int = 0) -> None:
        """Show `renderable`; `lines` rendered at `width` elsewhere (a worker) are used as they are."""
        self._renderable = renderable
        before, old, old_width = self._rows, self._strips, self._width
        if lines is not None and width == self.content_width:
            self._set_strips([Strip(line, width) for line in lines], width)
        else:
            self._render_strips(self.content_width)
        if self._rows != before or self._width != old_width:
            self.refresh(layout=True)
            return
        for y in range(max(len(old), len(self._strips))):
            if y >= len(old) or y >= len(self._strips) or old[y] != self._strips[y]:
                self.refresh(Region(0, y, self._width, 1))

    def _set_strips(self, strips: list[Strip], width: int) -> None:
        if width != self._width:
            self._rows = 0  # a new width lays the plan out afresh
            self._styled = {}
        else:
            self._styled = {
                y: line
                for y, line in self._styled.items()
                if y < len(strips) and y < len(self._strips) and strips[y] == self._strips[y]
            }
        self._width = width
        self._strips = strips
        self._rows = max(self._rows, len(strips))

    def _render_strips(self, width: int) -> None:
        if self._renderable is None or width <= 0:
            self._set_strips([], width)
            return
        self._set_strips([Strip(line, width) for line in render_to_lines(self._renderable, width)], width)

    def on_resize(self, event: Resize) -> None:
        self.content_width = max(0, event.size.width - self.gutter.width)
        if self.content_width != self._width:
            before = self._rows
            self._render_strips(self.content_width)
            self.refresh(layout=self._rows != before)

    def notify_style_update(self) -> None:
        self._style = None
        self._styled = {}
        super().notify_style_update()

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width:
            self._render_strips(width)
        return self._rows

    def render_line(self, y: int) -> Strip:
        line = self._styled.get(y)
        if line is None:
            if self._style is None:
                self._style = self.rich_style
            style, width = self._style, self._width
            if y >= len(self._strips):
                line = Strip.blank(width, style)
            else:
                strip = self._strips[y]
                line = Strip(Segment.apply_style(strip, style), strip.cell_length).crop_extend(0, width, style)
            self._styled[y] = line
        return line
