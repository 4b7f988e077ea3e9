"""The run's vocabulary: what the launcher's runner posts while a run goes, and what the console
display and the app render. One set of events for both (the app used to translate them into its
own); plain dataclasses, so the app's first screen imports them for free."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    log_path: str
    argv: tuple[str, ...]
    pid: int
    resume_from: str | None = None


@dataclass(frozen=True)
class OutputLines:
    lines: tuple[str, ...]


@dataclass(frozen=True)
class ProgressUpdate:
    """One logging step from the metrics file, with what ftplan derives from it."""

    step: int
    max_steps: int
    loss: float | None
    tokens_per_second: float | None
    peak_memory_bytes: int | None
    planned_peak_bytes: int
    elapsed_s: float
    eta_s: float | None
    cost_usd: float | None
    epoch: float | None = None
    peak_is_rss: bool = False
    """On the CPU train.py reports peak RSS (runtime included), not comparable with the plan."""


@dataclass(frozen=True)
class Stopping:
    """The runner is stopping the run: ``signal`` is "SIGTERM" first, "SIGKILL" after the grace period."""

    reason: str
    signal: str
    grace_s: float


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    """0 ok, 1 failed (crash, OOM, worker died), 130 interrupted."""
    status: str
    """"ok", "failed", "oom", "worker_died" or "interrupted"."""
    message: str
    returncode: int | None
    run_dir: str
    log_path: str
    advice: tuple[str, ...] = ()
    last_step: int | None = None
    peak_memory_bytes: int | None = None
    leftover_killed: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def before_start(cls, exit_code: int, status: str, message: str) -> RunResult:
        """The end of a run that never started (a dry run, a failed preflight, a launcher error)."""
        return cls(exit_code, status, message, None, "", "")

    @property
    def stopped(self) -> bool:
        """Stopped by the user (Ctrl-C, the app's Stop): no failure of the training."""
        return self.status == "interrupted"

    @property
    def summary(self) -> str:
        """The message with the advice lines under it (an OOM's answers lines)."""
        return self.message + ("\n" + "\n".join(self.advice) if self.advice else "")


@dataclass(frozen=True)
class RunFinished:
    result: RunResult
