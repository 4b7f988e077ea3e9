"""Small message dataclasses that workers post; `@on` handlers on the App change the UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

from ftplan.planner import Problem

if TYPE_CHECKING:
    from ftplan.planner.answers import Answers
    from ftplan.planner.plan import Plan


@dataclass
class PlanReady(Message):
    """A plan for the answers of edit `generation` (stale generations are dropped)."""

    generation: int
    answers: Answers
    plan: Plan
    plan_seconds: float
    group: Any = None
    """The plan's renderable and its lines pre-rendered at `width` in the worker."""
    lines: Any = None
    width: int = 0
    worker_span: tuple[float, float] = (0.0, 0.0)
    """perf_counter at the worker's start and end (for the latency breakdown)."""
    complete: bool = True
    """False when only the top sections are new; `PlanLines` brings the rest."""
    painted: Any = None
    """A threading.Event the UI sets once these tables are on screen (the second pass waits for it)."""


@dataclass
class PlanLines(Message):
    """All sections of the plan of edit `generation`, rendered (the second pass)."""

    generation: int
    lines: Any
    width: int


@dataclass
class PlanInvalid(Message):
    """The answers of edit `generation` have problems; each names its field."""

    generation: int
    problems: list[Problem]


@dataclass
class GPUsDetected(Message):
    """What `nvidia-smi` found (names as it prints them); empty on a machine without GPUs."""

    names: list[str] = field(default_factory=list)
    host_ram: int | None = None
    """This machine's RAM in bytes (None: not detected)."""


@dataclass
class DataMeasured(Message):
    """A data request's measured sample (None: nothing on this machine to measure), or the
    problem that keeps the file from training."""

    request: tuple
    sample: Any
    problem: str = ""
