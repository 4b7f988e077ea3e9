"""A widget that shows a Rich renderable rendered once per update (line API).

Static re-renders on every frame and always asks for a new layout; the plan's tables
change on every keystroke but rarely change height, so this widget renders them to strips
once and asks for a layout only when the number of lines changed. That keeps a keystroke
from reflowing the whole screen (about 150 ms with ~300 widgets on a busy 2-core machine).
"""

from __future__ import annotations

import io

from rich.console import Console, RenderableType
from rich.segment import Segment
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget


def render_to_lines(renderable: RenderableType, width: int) -> list[list[Segment]]:
    """Render to lines of segments with a private console: safe to call from a worker thread."""
    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        emoji=False,
    )
    return console.render_lines(renderable, console.options.update_width(width), pad=True)


class PlanView(Widget):
    DEFAULT_CSS = "PlanView { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._renderable: RenderableType | None = None
        self._strips: list[Strip] = []
        self._width = 0

    @property
    def renderable(self) -> RenderableType | None:
        return self._renderable

    def show(self, renderable: RenderableType | None, lines: list[list[Segment]] | None = None, width: int = 0) -> None:
        """Show `renderable`; `lines` rendered at `width` elsewhere (a worker) are used as they are."""
        self._renderable = renderable
        before = len(self._strips)
        if lines is not None and width == self.content_size.width:
            self._width = width
            self._strips = [Strip(line, width) for line in lines]
        else:
            self._render_strips(self.content_size.width)
        self.refresh(layout=len(self._strips) != before)

    def _render_strips(self, width: int) -> None:
        self._width = width
        if self._renderable is None or width <= 0:
            self._strips = []
            return
        self._strips = [Strip(line, width) for line in render_to_lines(self._renderable, width)]

    def on_resize(self) -> None:
        if self.content_size.width != self._width:
            before = len(self._strips)
            self._render_strips(self.content_size.width)
            self.refresh(layout=len(self._strips) != before)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width:
            self._render_strips(width)
        return len(self._strips)

    def render_line(self, y: int) -> Strip:
        style = self.rich_style
        width = self.content_size.width
        if y >= len(self._strips):
            return Strip.blank(width, style)
        strip = self._strips[y]
        return Strip(Segment.apply_style(strip, style), strip.cell_length).crop_extend(0, width, style)
