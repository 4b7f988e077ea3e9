"""The help screen (F1 or ?): every key the app answers to, and what each pane shows.

The key list is read from the live bindings (the App's, and the screen the help was opened
from), so a remapped key shows as the user has it; the panes are described in words.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

PANES = (
    (
        "Questions (left)",
        "The answers file, one question per key, each with its help text. A red field has a problem "
        "(the message is under it). Only model.name is required: everything else has a default or is "
        "chosen by the planner. Number fields take 30000, 30,000, 30k or 3e4. Model names complete from "
        "the catalog: type a few characters, → accepts.",
    ),
    (
        "Plan (right)",
        "Redrawn on every edit: the summary line, the recommendation and why, one memory bar per method "
        "against the GPU's usable memory (│ marks the limit), the memory table (per component, host RAM for "
        "offload, the longest sequence each method fits at its most frugal settings), time and cost, hidden "
        "costs (checkpoints, serving, experiments) and the settings each method assumed (* = chosen by "
        "ftplan). Greyed out while the answers have a problem: it is the last valid plan.",
    ),
    (
        "Export (ctrl+e)",
        "Pick a folder and method, preview every file with what writing would do to it, ctrl+s writes.",
    ),
    (
        "Launch (ctrl+l)",
        "The preflight checklist, then the run's log and progress. The run belongs to the app: Esc closes "
        "the screen and the run continues; ctrl+l shows it again, ctrl+x stops it.",
    ),
)

EXTRA_KEYS = (
    ("tab / shift+tab", "next / previous question (or pane)"),
    ("→ (in model name)", "accept the completion"),
    ("pgup / pgdn", "scroll the focused pane"),
    ("ctrl+p", "command palette: every action, searchable"),
)


def key_table(bindings: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for key, what in bindings:
        table.add_row(key, what)
    return table


def bindings_of(app, screen: Screen) -> list[tuple[str, str]]:
    """(key as shown, description) for the App's and `screen`'s bindings that have one."""
    seen, rows = set(), []
    for owner in (screen, app):
        for binding in owner._bindings:
            key, b = binding
            if not b.description or b.action in seen:
                continue
            seen.add(b.action)
            rows.append((app.get_key_display(b), b.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "Close help", id="help.close")]

    def __init__(self, opened_from: Screen) -> None:
        super().__init__(classes="dialog-screen", id="help-screen")
        self.opened_from = opened_from

    def compose(self) -> ComposeResult:
        body = Text()
        for title, text in PANES:
            body.append(title + "\n", style="bold")
            body.append(text + "\n\n")
        with VerticalScroll(classes="dialog help-dialog"):
            yield Static(Text("Keys", style="bold underline"), classes="help-head")
            yield Static(key_table([*bindings_of(self.app, self.opened_from), *EXTRA_KEYS]), id="help-keys")
            yield Static(Text("\nWhat each pane shows", style="bold underline"), classes="help-head")
            yield Static(body, id="help-panes")
            yield Static(Text("esc closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
