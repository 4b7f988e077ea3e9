"""The protocol between the launch screen and whatever runs the training.

A `RunSource` runs in a thread worker the App starts, and reports through `post(event)`
with the four event dataclasses below. The real source adapts `ftplan.launch`'s Runner
(see `ftplan.tui.launching`); the tests' `FakeSource` (tests/tui/fakes.py) posts the events
itself ("fake the source, not the app").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, Union

from textual.message import Message


@dataclass(frozen=True)
class Started:
    argv: list[str] = field(default_factory=list)
    pid: int | None = None


@dataclass(frozen=True)
class Output:
    lines: list[str]


@dataclass(frozen=True)
class Progress:
    step: int
    max_steps: int
    loss: float | None = None
    tokens_per_s: float | None = None
    peak_mem: int | None = None
    eta_s: float | None = None
    cost_usd: float | None = None
    peak_is_rss: bool = False
    """On the CPU the peak is the process's RSS (runtime included), not the plan's training state."""


@dataclass(frozen=True)
class Finished:
    exit_code: int
    advice: str = ""
    stopped: bool = False
    """The user stopped the run (its exit code is then no failure of the training)."""


RunEvent = Union[Started, Output, Progress, Finished]  # noqa: UP007 (a runtime alias on Python 3.10)
Post = Callable[[RunEvent], None]


class RunSource(Protocol):
    """Something that runs a training and reports events; `stop()` may be called from any thread."""

    def run(self, post: Post) -> None:
        """Block until the run ends, calling `post` for every event (the last one `Finished`)."""

    def stop(self) -> None:
        """Ask the run to end (SIGTERM to the group, then SIGKILL after a grace period)."""


@dataclass
class RunMessage(Message):
    """A RunEvent, delivered to the App's message queue."""

    event: RunEvent
