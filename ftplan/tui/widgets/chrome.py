"""Widgets that trim Textual's defaults to what this app needs: edits that repaint, not reflow.

A layout pass reflows the whole screen (about 16 ms for this app's ~130 widgets on a busy
2-core machine), and each one that changes a widget's virtual size asks for another. Two
of Textual's widgets ask for one where nothing can move: an Input on every keystroke (it
records its text width as its virtual size) and the header on every new title.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import Header, Input
from textual.widgets._header import HeaderClockSpace, HeaderIcon, HeaderTitle


class FieldInput(Input):
    """An Input whose edits repaint it only: its box comes from the CSS, not from its text."""

    virtual_size = Reactive(Size(0, 0), layout=False, repaint=True)


class _FixedTitle(HeaderTitle):
    """The header's title line: a new title never changes the header's size."""

    def update(self, content="", *, layout: bool = False) -> None:
        super().update(content, layout=False)


class AppHeader(Header):
    """Textual's Header (icon, centred title and sub-title) whose title updates repaint only."""

    def compose(self) -> ComposeResult:
        yield HeaderIcon().data_bind(Header.icon)
        yield _FixedTitle()
        yield HeaderClockSpace()

    def show_title(self) -> None:
        """Redraw the title line from the app's (and screen's) title and sub-title."""
        self.query_one(_FixedTitle).update(self.format_title())
