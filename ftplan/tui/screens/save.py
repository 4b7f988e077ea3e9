"""Ask where to save the answers; dismisses with a path or None."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class SavePathScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="save.cancel")]

    def __init__(self, suggestion: str) -> None:
        super().__init__(classes="dialog-screen")
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Save the answers as TOML to:", classes="dialog-question")
            yield Input(self.suggestion, id="save-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save-ok")
                yield Button("Cancel", id="save-cancel")

    def on_mount(self) -> None:
        self.app.apply_cursor_blink(self)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save-ok")
    def _ok(self) -> None:
        path = self.query_one("#save-path", Input).value.strip()
        self.dismiss(path or None)

    @on(Button.Pressed, "#save-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
