"""Read what went wrong from a run's output and torchrun's error files, and answer an
out-of-memory failure with the next rung of the planner's ladder.

One owner for ``ftplan launch`` and ``ftplan probe``: both run the project's engine under
torchrun and must tell the user the same thing when a worker fails.

The ladder is the planner's (``ftplan.planner.choose.next_rung``, in the README's order): a
smaller micro-batch, activation checkpointing, ZeRO-2 then ZeRO-3, FSDP2 where it keeps less than
ZeRO-3 (bf16 full fine-tuning, QLoRA), CPU offload of the optimizer then of the parameters
(FSDP2: both at once), QLoRA, a shorter sequence. When a run still runs out of memory, the advice
is the first rung the plan's chosen settings have not taken yet, written as answers-file lines
the user can paste.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ftplan.project import ProjectInfo

OOM_PATTERNS = (
    re.compile(r"CUDA out of memory"),
    re.compile(r"CUDA error: out of memory"),
    re.compile(r"torch\.(cuda\.)?OutOfMemoryError"),
    re.compile(r"\bOutOfMemoryError\b"),
    re.compile(r"CUBLAS_STATUS_ALLOC_FAILED"),
    re.compile(r"HIP out of memory"),
)


def is_oom(text: str) -> bool:
    """True when a line (or an error file's text) reports a GPU out-of-memory error."""
    return any(p.search(text) for p in OOM_PATTERNS)


def next_rung(project: ProjectInfo) -> tuple[list[str], str]:
    """(answers lines, why) for the next memory-saving step beyond the plan's chosen settings:
    the planner's own ladder (``ftplan.planner.choose.next_rung``), written as TOML lines."""
    from ftplan.planner.choose import next_rung as planner_next_rung

    changes, why = planner_next_rung(project.settings, project.world_size)
    return [tomli_w.dumps({key: value}).strip().replace(f'"{key}"', key) for key, value in changes.items()], why


def oom_message(project: ProjectInfo) -> tuple[str, list[str]]:
    """The user-facing message and the answers lines to change."""
    lines, why = next_rung(project)
    text = (
        "The run ran out of GPU memory. Next step on the planner's ladder: " + why + ".\n"
        "Change in the answers file (answers.toml in the project):\n"
        + "\n".join(f"    {x}" for x in lines)
        + "\nthen re-plan and re-export: ftplan --answers answers.toml --out "
        + project.directory
    )
    return text, lines


SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def signal_name(number: int) -> str:
    return SIGNAL_NAMES.get(number, f"signal {number}")


_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
# "[rank1]: ValueError: ..." or "ValueError: ..." — a worker's exception, not torchrun's own.
_ERROR = re.compile(r"^(\[rank\d+\]:\s*)?([\w.]*(Error|Exception|Interrupt)\b:?.*)$")
_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


@dataclass
class FailureScan:
    """Accumulates evidence line by line while the run goes."""

    oom: bool = False
    oom_line: str = ""
    child_failed: bool = False
    failed_workers: list[tuple[int, int]] = field(default_factory=list)
    """(global rank, exit code) from torchrun's failure summary."""
    root_cause: tuple[int, int] | None = None
    """torchrun's "Root Cause (first observed failure)"."""
    error_line: str = ""
    """The first exception line a worker printed (torchrun's own ChildFailedError excluded)."""
    _rank: int | None = None
    _in_root: bool = False

    def feed(self, line: str) -> None:
        if not self.oom and is_oom(line):
            self.oom, self.oom_line = True, line.strip()
        if "ChildFailedError" in line or "FAILED" in line and "train.py" in line:
            self.child_failed = True
        elif not self.child_failed and not self.error_line:
            m = _ERROR.match(line.strip())
            if m and not m.group(2).startswith("torch.distributed.elastic"):
                self.error_line = m.group(2).strip()
        if self.child_failed:
            if "Root Cause" in line:
                self._in_root = True
            m = _RANK.match(line)
            if m:
                self._rank = int(m.group(1))
            m = _EXIT.match(line)
            if m and self._rank is not None:
                pair = (self._rank, int(m.group(1)))
                if self._in_root and self.root_cause is None:
                    self.root_cause = pair
                if pair not in self.failed_workers:
                    self.failed_workers.append(pair)
                self._rank = None

    def failures(self) -> list[tuple[int, int]]:
        """Failed workers, the root cause first."""
        if self.root_cause is None:
            return list(self.failed_workers)
        return [self.root_cause, *[p for p in self.failed_workers if p != self.root_cause]]

    def scan_error_files(self, log_dir: Path | None, since: float = 0.0) -> None:
        """torchrun writes ``error.json`` for workers whose entry point uses ``@record``; only files
        written since ``since`` (this run) count."""
        if log_dir is None or not log_dir.is_dir():
            return
        for path in log_dir.rglob("error.json"):
            try:
                if path.stat().st_mtime < since:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if not self.oom and is_oom(text):
                self.oom = True
                try:
                    msg = json.loads(text).get("message", {})
                    msg = msg.get("message", "") if isinstance(msg, dict) else str(msg)
                except (json.JSONDecodeError, AttributeError):
                    msg = ""
                self.oom_line = str(msg).splitlines()[0] if msg else f"out of memory ({path})"


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal_name(-code)
        hint = " (the host's out-of-memory killer does this; check `dmesg`)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def worker_message(failed: list[tuple[int, int]]) -> str:
    first_rank, first_code = failed[0]
    text = f"Worker rank {first_rank} {describe_exit(first_code)}"
    stopped = [r for r, code in failed[1:] if code in (-15, -9)]
    crashed = [(r, code) for r, code in failed[1:] if code not in (-15, -9)]
    if crashed:
        text += "; " + ", ".join(f"rank {r} {describe_exit(c)}" for r, c in crashed) + " too"
    if stopped:
        text += f"; torchrun then stopped rank{'s' if len(stopped) > 1 else ''} {', '.join(map(str, stopped))}"
    elif not crashed:
        text += "; torchrun stopped the other workers"
    return text + "."


def explain_failed_run(output: str, project: ProjectInfo | None = None) -> str:
    """One message for a finished torchrun run that failed, read from its whole output: the
    ladder's next rung on an out-of-memory error (when the project is known), else which worker
    failed first and the first exception a worker printed."""
    scan = FailureScan()
    for line in output.splitlines():
        scan.feed(line)
    if scan.oom and project is not None:
        return f"{oom_message(project)[0]}\n(the error: {scan.oom_line})"
    parts = [worker_message(scan.failures())] if scan.failed_workers else []
    if scan.oom:
        parts.append(f"The error: {scan.oom_line}")
    elif scan.error_line:
        parts.append(f"The error: {scan.error_line}")
    if not parts:
        lines = [x for x in output.splitlines() if x.strip()][-3:] or ["no output"]
        parts.append("Last lines of output: " + " | ".join(x.strip() for x in lines))
    return " ".join(parts)
