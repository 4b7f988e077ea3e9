"""Render runner events on a terminal: the child's output above a Rich progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.text import Text

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunStarted, Stopping

GIB = 2**30


def duration(seconds: float | None) -> str:
    """h:mm:ss, or m:ss under an hour; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(u: ProgressUpdate) -> str:
    """One line: loss, tokens/s, ETA, cost so far, measured peak memory vs the plan; what is not
    known yet is left out, not invented. The console and the app's launch screen both print it."""
    parts = [f"step {u.step:,}/{u.max_steps:,}"]
    if u.loss is not None:
        parts.append(f"loss {u.loss:.4f}")
    if u.tokens_per_second is not None:
        parts.append(f"{u.tokens_per_second:,.0f} tok/s")
    if u.eta_s is not None:
        parts.append(f"ETA {duration(u.eta_s)}")
    if u.cost_usd is not None:
        parts.append(f"${u.cost_usd:,.2f} so far")
    if u.peak_memory_bytes is not None:
        mem = f"peak {u.peak_memory_bytes / GIB:.2f} GiB"
        if u.peak_is_rss:
            mem += " RSS"
        elif u.planned_peak_bytes:
            mem += f" / plan {u.planned_peak_bytes / GIB:.2f} GiB"
            if u.peak_memory_bytes > 1.1 * u.planned_peak_bytes:
                mem += " (over plan)"
        parts.append(mem)
    return " · ".join(parts)


class ConsoleDisplay:
    """A callable ``on_event`` for the Runner that prints to a Rich console."""

    def __init__(self, console: Console | None = None, show_output: bool = True):
        self.console = console or Console()
        self.show_output = show_output
        self.progress = Progress(
            BarColumn(bar_width=20),
            TaskProgressColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.last: ProgressUpdate | None = None

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self.console.print(
                f"[bold]Run folder[/] {event.run_dir}  (output: {event.log_path}; process group {event.pid})",
                highlight=False,
            )
            if event.resume_from:
                self.console.print(f"[bold]Resuming[/] from {event.resume_from}", highlight=False)
        elif isinstance(event, OutputLines):
            if self.show_output:
                for line in event.lines:
                    self.console.print(Text(line), highlight=False, soft_wrap=True)
        elif isinstance(event, ProgressUpdate):
            self.last = event
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("training", total=event.max_steps, info="")
            self.progress.update(self.task, completed=event.step, total=event.max_steps, info=progress_text(event))
        elif isinstance(event, Stopping):
            if event.signal == "SIGTERM":
                self.console.print(
                    f"[yellow]Stopping ({event.reason}): SIGTERM to the run; SIGKILL in {event.grace_s:g} s "
                    "(press Ctrl-C again to kill now)[/]"
                )
            else:
                self.console.print("[red]Grace period over: SIGKILL to the run[/]")
        elif isinstance(event, RunFinished):
            if self.task is not None:
                self.progress.stop()
