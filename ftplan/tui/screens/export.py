"""Export: choose a folder and method, preview every file, see what would be overwritten, write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Select, Static, Switch
from textual.widgets.option_list import Option

from ftplan.planner import METHODS
from ftplan.render import NAMES
from ftplan.tui.exporting import STATUS_TEXT, FilePreview, exporter_available, preview_files, write_project

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan

LEXERS = {".py": "python", ".toml": "toml", ".json": "json", ".yaml": "yaml", ".sh": "bash", ".md": "markdown"}
STATUS_STYLE = {"new": "green", "same": "dim", "update": "yellow", "edited": "bold red"}


def default_folder(plan: Plan, method: str) -> str:
    short = plan.model.name.rstrip("/").rsplit("/", 1)[-1].lower()
    return f"./ft-{short}-{method}"


@dataclass
class PreviewReady(Message):
    key: tuple
    files: list[FilePreview] | None
    error: str = ""


@dataclass
class ExportDone(Message):
    ok: bool
    message: str


class ExportScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close", id="export.close"),
        Binding("ctrl+s", "write", "Write files", id="export.write"),  # ctrl+w deletes a word in Inputs
    ]

    def __init__(self, plan: Plan, answers_text: str, folder: Path | None = None) -> None:
        super().__init__(id="export-screen")
        self.plan = plan
        self.answers_text = answers_text
        self.method = plan.recommendation.method
        self.folder = str(folder) if folder else default_folder(plan, self.method)
        self.files: list[FilePreview] = []
        self.last_result: str = ""
        self.written = False
        """Just written: the files now equal the preview; they read "written", not "unchanged"."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="export-options"):
            with Vertical(classes="opt"):
                yield Label("Folder")
                yield Input(self.folder, id="export-dir")
            with Vertical(classes="opt opt-method"):
                yield Label("Method")
                options = [(NAMES[m] + (" ★" if m == self.method else ""), m) for m in METHODS]
                yield Select(options, value=self.method, allow_blank=False, id="export-method", compact=True)
            with Vertical(classes="opt opt-force"):
                yield Label("Overwrite edited")
                yield Switch(False, id="export-force")
        with Horizontal(id="export-body"):
            yield OptionList(id="export-files")
            with ScrollableContainer(id="export-preview-scroll"):
                yield Static("", id="export-preview")
        yield Static("", id="export-result", markup=False)
        with Horizontal(id="export-buttons"):
            yield Button("Write files", variant="primary", id="export-write")
            yield Button("Close", id="export-close")
        yield Footer()

    def on_mount(self) -> None:
        self.app.apply_cursor_blink(self)
        if not exporter_available():
            self.query_one("#export-result", Static).update(
                "The exporter (ftplan.export) is not part of this build yet; nothing can be previewed or written."
            )
            self.query_one("#export-write", Button).disabled = True
            return
        self.query_one("#export-dir", Input).focus()  # the footer shows this screen's keys at once
        self.refresh_preview()

    # Preview ----------------------------------------------------------------------------------

    def _key(self) -> tuple:
        return (self.query_one("#export-dir", Input).value.strip(), self.query_one("#export-method", Select).value)

    @on(Input.Changed, "#export-dir")
    @on(Select.Changed, "#export-method")
    def _options_changed(self) -> None:
        self.last_result = ""
        self.written = False
        self.query_one("#export-result", Static).set_class(False, "-error")
        self.refresh_preview()

    def refresh_preview(self) -> None:
        if exporter_available():
            self._preview_worker(self._key())

    @work(thread=True, exclusive=True, group="export-preview", exit_on_error=False)
    def _preview_worker(self, key: tuple) -> None:
        folder, method = key
        try:
            files = preview_files(self.plan, self.answers_text, Path(folder or "."), method)
        except Exception as exc:
            self.post_message(PreviewReady(key, None, f"cannot preview: {exc}"))
            return
        self.post_message(PreviewReady(key, files))

    @on(PreviewReady)
    def _preview_ready(self, message: PreviewReady) -> None:
        if message.key != self._key():
            return
        result = self.query_one("#export-result", Static)
        if message.files is None:
            result.update(message.error)
            return
        self.files = message.files
        self._fill_list()

    @on(Switch.Changed, "#export-force")
    def _fill_list(self) -> None:
        force = self.query_one("#export-force", Switch).value
        option_list = self.query_one("#export-files", OptionList)
        highlighted = option_list.highlighted or 0
        option_list.clear_options()
        for f in self.files:
            prompt = Text(f.name.ljust(24))
            forced = force and f.status == "edited"
            status = "written" if self.written and f.status == "same" else STATUS_TEXT[f.status]
            style = "green" if self.written and f.status == "same" else STATUS_STYLE[f.status]
            prompt.append("edited by hand: OVERWRITTEN (force)" if forced else status, style=style)
            option_list.add_option(Option(prompt, id=f.name))
        if self.files:
            option_list.highlighted = min(highlighted, len(self.files) - 1)
            self._show(self.files[option_list.highlighted])
        edited = [f.name for f in self.files if f.status == "edited"]
        update = [f.name for f in self.files if f.status == "update"]
        folder, method = self._key()
        parts = [f"{len(self.files)} files for {NAMES[method]} in {folder}"]
        if update:
            parts.append(f"overwrites {', '.join(update)}")
        if edited:
            verb = (
                "OVERWRITES your edits to" if force else "keeps your edits to (switch on 'Overwrite edited' to replace)"
            )
            parts.append(f"{verb} {', '.join(edited)}")
        if not self.last_result:
            result = self.query_one("#export-result", Static)
            result.update("; ".join(parts) + ".")

    @on(OptionList.OptionHighlighted, "#export-files")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        for f in self.files:
            if f.name == event.option.id:
                self._show(f)

    def _show(self, f: FilePreview) -> None:
        lexer = LEXERS.get(Path(f.name).suffix, "text")
        theme = "monokai" if self.app.current_theme.dark else "default"
        longest = max((len(line) for line in f.text.splitlines()), default=1)
        preview = self.query_one("#export-preview", Static)
        preview.styles.width = longest + len(str(f.text.count("\n") + 1)) + 4  # wide lines scroll, not crop
        preview.update(
            Syntax(
                f.text,
                lexer,
                theme=theme,
                line_numbers=True,
                word_wrap=False,
                code_width=longest,
            )
        )

    # Write ------------------------------------------------------------------------------------

    @on(Input.Submitted, "#export-dir")
    @on(Button.Pressed, "#export-write")
    def action_write(self) -> None:
        if not exporter_available():
            return
        folder, method = self._key()
        force = self.query_one("#export-force", Switch).value
        self.query_one("#export-write", Button).disabled = True
        self._write_worker(folder, method, force)

    @work(thread=True, exclusive=True, group="export-write", exit_on_error=False)
    def _write_worker(self, folder: str, method: str, force: bool) -> None:
        from ftplan.export import ExportError

        try:
            summary = write_project(self.plan, self.answers_text, Path(folder), force, method)
        except ExportError as exc:
            self.post_message(ExportDone(False, str(exc)))
            return
        except Exception as exc:
            self.post_message(ExportDone(False, f"export failed: {exc!r}"))
            return
        self.post_message(ExportDone(True, summary))

    @on(ExportDone)
    def _done(self, message: ExportDone) -> None:
        self.query_one("#export-write", Button).disabled = False
        self.last_result = message.message
        result = self.query_one("#export-result", Static)
        result.update(message.message)
        result.set_class(not message.ok, "-error")
        self.written = message.ok
        if message.ok:
            self.app.export_dir = Path(self._key()[0]).expanduser()
            self.app.notify("Project written.")
        self.refresh_preview()

    @on(Button.Pressed, "#export-close")
    def action_close(self) -> None:
        self.dismiss(None)
