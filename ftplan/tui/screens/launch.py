"""Launch: a preflight checklist, then the run's live log and progress.

The run belongs to the App (`app.start_run`), so closing this screen does not stop it;
the App forwards each event here through `run_event`. Output is batched and written to
the Log on a timer (flood control); `\\r` redraws keep only what a terminal would show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Log, ProgressBar, Static, Switch

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted, Stopping
from ftplan.launch.display import progress_text
from ftplan.tui.preflight import Check, plan_checks
from ftplan.tui.runs import RunEvent

FLUSH_SECONDS = 0.1


def terminal_line(line: str) -> str:
    """What a terminal shows for a line with carriage-return redraws: the last segment."""
    line = line.rstrip("\n")
    if "\r" in line:
        parts = [p for p in line.split("\r") if p]
        return parts[-1] if parts else ""
    return line


def started_lines(event: RunStarted) -> list[str]:
    """Where the run writes: the folder and its log (the console display prints the same)."""
    lines = [f"run folder: {event.run_dir} (log: {event.log_path})"]
    return lines + ([f"resuming from {event.resume_from}"] if event.resume_from else [])


def stopping_line(event: Stopping) -> str:
    return f"stopping ({event.reason}): {event.signal}, grace {event.grace_s:g} s"


def fold(line: str, width: int) -> list[str]:
    """A long log line as several that fit the pane (a traceback's path, a long argv): the
    Log widget cuts lines at its edge, and a cut error message is no help."""
    width = max(20, width - 1)
    if len(line) <= width:
        return [line]
    return [line[i : i + width] if not i else "  " + line[i : i + width - 2] for i in _starts(len(line), width)]


def _starts(length: int, width: int) -> list[int]:
    starts, i = [0], width
    while i < length:
        starts.append(i)
        i += width - 2
    return starts


MARKS = {"ok": Text("✓", "green"), "warn": Text("!", "yellow"), "fail": Text("✗", "bold red")}


@dataclass
class ProjectChecked(Message):
    folder: str
    checks: list[Check]
    error: str = ""
    smoke: bool = False


class LaunchScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close (run continues)", id="launch.close"),
        # Priority: the folder field takes ctrl+x as cut (and the footer lost "^x Stop").
        Binding("ctrl+r", "start", "Start", id="launch.start", priority=True),
        Binding("ctrl+x", "stop", "Stop", id="launch.stop", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__(id="launch-screen")
        self._pending: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="launch-preflight-scroll", can_focus=False):
            yield Static("", id="launch-preflight")
        with Horizontal(id="launch-options"):
            with Vertical(classes="opt"):
                yield Label("Project folder")
                yield Input(self._folder(), placeholder="the exported project (ctrl+e)", id="launch-dir")
            with Vertical(classes="opt opt-switch"):
                yield Label("Dry run")
                yield Switch(True, id="launch-dry-run")
            with Vertical(classes="opt opt-switch"):
                yield Label("Smoke")
                yield Switch(False, id="launch-smoke")
        yield ProgressBar(total=None, show_eta=False, id="launch-progress")
        yield Static("not started", id="launch-status", markup=False)
        yield Log(max_lines=10_000, id="launch-log")
        with Horizontal(id="launch-buttons"):
            yield Button("Start (^r)", variant="success", id="launch-start", compact=True)
            yield Button("Stop (^x)", variant="error", id="launch-stop", compact=True)
            yield Button("Close (esc)", id="launch-close", compact=True)
        yield Footer()

    def _folder(self) -> str:
        """The active (or last) run's folder, else the last export's: reopened during a run,
        the screen shows what is running, not an empty field."""
        app = self.app
        folder = app.run_folder or app.export_dir
        return str(folder) if folder else ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop shows (greyed) only while a run is active; Start only while none is."""
        if action == "stop":
            return True if self.app.run_active else None
        if action == "start":
            return None if self.app.run_active else True
        return True

    def on_mount(self) -> None:
        self.app.apply_cursor_blink(self)
        app = self.app
        self.refresh_preflight()
        # Reopened while (or after) a run: replay what the App kept.
        if app.run_lines:
            self._pending.extend(app.run_lines)
        if app.run_progress is not None:
            self._progress(app.run_progress)
        if app.run_finished is not None:
            self._finished(app.run_finished)
        elif app.run_active:
            self.query_one("#launch-status", Static).update("running")
        self._sync_buttons()
        self.set_interval(FLUSH_SECONDS, self.flush, name="log-flush")
        self.query_one("#launch-start" if not app.run_active else "#launch-stop", Button).focus()

    # Preflight --------------------------------------------------------------------------------

    @on(Input.Changed, "#launch-dir")
    @on(Switch.Changed, "#launch-smoke")
    def refresh_preflight(self) -> None:
        """Check the project as the run would start: a smoke run of a GPU plan may go on the CPU."""
        folder = self.query_one("#launch-dir", Input).value.strip()
        self.project_checks: list[Check] = []
        self.project_error = "" if folder else "type the project folder, or export one first (ctrl+e)"
        self._draw_checks()
        if folder:
            self._check_worker(folder, self.query_one("#launch-smoke", Switch).value)

    @work(thread=True, exclusive=True, group="preflight", exit_on_error=False)
    def _check_worker(self, folder: str, smoke: bool) -> None:
        """The launcher's checks read the project and look at the host: not on the UI thread."""
        from ftplan.tui.launching import project_checks

        try:
            rows, error = project_checks(Path(folder).expanduser(), smoke)
        except Exception as exc:
            rows, error = [], f"cannot check the project: {exc!r}"
        self.post_message(ProjectChecked(folder, list(rows), error, smoke))

    @on(ProjectChecked)
    def _checked(self, message: ProjectChecked) -> None:
        current = (self.query_one("#launch-dir", Input).value.strip(), self.query_one("#launch-smoke", Switch).value)
        if (message.folder, message.smoke) != current:
            return
        self.project_checks, self.project_error = message.checks, message.error
        self._draw_checks()

    def _draw_checks(self) -> None:
        table = Table(title="Preflight", title_justify="left", show_header=False, box=None)
        table.add_column(width=2)
        table.add_column(style="bold")
        table.add_column()
        for c in [*plan_checks(self.app.plan), *self.project_checks]:
            table.add_row(MARKS.get(c.status, Text("?")), c.name, c.detail)
        if self.project_error:
            table.add_row(MARKS["fail"], "project", self.project_error)
        self.query_one("#launch-preflight", Static).update(table)

    # Start / stop -----------------------------------------------------------------------------

    @on(Button.Pressed, "#launch-start")
    def action_start(self) -> None:
        app = self.app
        if app.run_active:
            return
        folder = self.query_one("#launch-dir", Input).value.strip()
        dry_run = self.query_one("#launch-dry-run", Switch).value
        smoke = self.query_one("#launch-smoke", Switch).value
        if not folder:
            app.notify("Type the project folder first, or export one (ctrl+e).", severity="error")
            return
        factory = app.run_source_factory
        if factory is None:
            from ftplan.tui.launching import make_source as factory
        self.query_one("#launch-log", Log).clear()
        self._pending.clear()
        app.run_folder = Path(folder).expanduser()
        app.start_run(factory(app.run_folder, dry_run=dry_run, smoke=smoke))
        self.query_one("#launch-status", Static).update("starting…")
        self.query_one("#launch-progress", ProgressBar).update(total=None, progress=0)
        self._sync_buttons()

    @on(Button.Pressed, "#launch-stop")
    def action_stop(self) -> None:
        self.app.action_stop_run()

    @on(Button.Pressed, "#launch-close")
    def action_close(self) -> None:
        if self.app.run_active:
            self.app.notify("The run continues; ctrl+l shows it again.")
        self.dismiss(None)

    def _sync_buttons(self) -> None:
        active = self.app.run_active
        start, stop = self.query_one("#launch-start", Button), self.query_one("#launch-stop", Button)
        moved = self.focused in (start, stop) and (stop if active else start).disabled
        start.disabled = active
        stop.disabled = not active
        if moved:  # the focused button just went grey: the other one takes the focus
            (stop if active else start).focus()
        self.refresh_bindings()

    # Events from the App ----------------------------------------------------------------------

    def run_event(self, event: RunEvent) -> None:
        if isinstance(event, OutputLines):
            self._pending.extend(event.lines)
        elif isinstance(event, ProgressUpdate):
            self._progress(event)
        elif isinstance(event, RunStarted):
            self._pending.extend(started_lines(event))
            self.query_one("#launch-status", Static).update("running: " + " ".join(event.argv))
        elif isinstance(event, Stopping):
            self._pending.append(stopping_line(event))
        elif isinstance(event, RunFinished):
            self.flush()
            self._finished(event.result)
        self._sync_buttons()

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        log = self.query_one("#launch-log", Log)
        width = log.scrollable_content_region.width or 80
        log.write_lines([part for line in lines for part in fold(terminal_line(line), width)])

    def _progress(self, p: ProgressUpdate) -> None:
        self.query_one("#launch-progress", ProgressBar).update(total=max(1, p.max_steps), progress=p.step)
        self.query_one("#launch-status", Static).update(progress_text(p))

    def _finished(self, f: RunResult) -> None:
        if f.exit_code == 0:
            status = "finished OK"
        elif f.stopped:
            status = f"stopped as you asked (exit code {f.exit_code})"
        else:
            status = f"ended with exit code {f.exit_code}"
        if f.summary:
            status += f" — {f.summary}"
        bar = self.query_one("#launch-progress", ProgressBar)
        if bar.total is None:  # stop the indeterminate animation: the run is over
            bar.update(total=1, progress=1 if f.exit_code == 0 else 0)
        widget = self.query_one("#launch-status", Static)
        widget.update(status)
        widget.set_class(f.exit_code != 0 and not f.stopped, "-error")
        widget.set_class(f.stopped, "-stopped")
