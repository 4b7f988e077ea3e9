"""The protocol between the launch screen and whatever runs the training.

A `RunSource` runs in a thread worker the App starts, and reports through `post(event)` with
the launcher's own events (`ftplan.events`). The real source runs `ftplan.launch`'s Runner
(see `ftplan.tui.launching`); the tests' `FakeSource` (tests/tui/fakes.py) posts the events
itself ("fake the source, not the app").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Union

from textual.message import Message

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunStarted, Stopping

RunEvent = Union[RunStarted, OutputLines, ProgressUpdate, Stopping, RunFinished]  # noqa: UP007
Post = Callable[[RunEvent], None]


class RunSource(Protocol):
    """Something that runs a training and reports events; `stop()` may be called from any thread."""

    def run(self, post: Post) -> None:
        """Block until the run ends, calling `post` for every event (the last one `RunFinished`)."""

    def stop(self) -> None:
        """Ask the run to end (SIGTERM to the group, then SIGKILL after a grace period)."""


@dataclass
class RunMessage(Message):
    """A RunEvent, delivered to the App's message queue."""

    event: RunEvent
