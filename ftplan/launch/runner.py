"""Run a LaunchSpec: stream its output, follow its metrics, stop it cleanly, say what happened.

The child starts in its own session. Stopping sends SIGTERM to the whole process group and to
every descendant seen (torchrun puts each worker in a session of its own), waits a grace period
longer than torchrun's own (torchrun gives its workers 30 s), then sends SIGKILL; whatever is
left when the child has exited is killed too, so no worker outlives a run. Everything the runner learns is posted as a small event dataclass to ``on_event`` so that
the console display and the TUI drive the same runner.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted, Stopping
from ftplan.failures import FailureScan, describe_exit, oom_message, worker_message
from ftplan.launch.metrics import MetricsFollower
from ftplan.launch.process import Process, popen_process
from ftplan.launch.spec import LaunchSpec
from ftplan.planner.units import size
from ftplan.project import ProjectInfo

DEFAULT_GRACE_S = 40.0
"""Longer than torchrun's own 30 s between SIGTERM and SIGKILL to its workers."""
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

ProcessFactory = Callable[[list[str], dict[str, str], str], Process]


def new_run_dir(project_dir: str | Path, node_rank: int = 0, now: datetime | None = None) -> Path:
    """A fresh ``DIR/runs/<UTC timestamp>[-node<R>][-<n>]`` folder."""
    now = now or datetime.now(UTC)
    base = Path(project_dir) / "runs"
    stem = now.strftime("%Y%m%d-%H%M%S") + (f"-node{node_rank}" if node_rank else "")
    base.mkdir(parents=True, exist_ok=True)
    ignore = base / ".gitignore"
    if not ignore.exists():  # run logs stay out of the user's git, whatever the project's .gitignore says
        ignore.write_text("# Written by ftplan launch: run logs stay out of git.\n*\n", encoding="utf-8")
    for n in range(1000):
        candidate = base / (stem if n == 0 else f"{stem}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {base}")  # pragma: no cover


def _size(n: int) -> str:
    return size(n, digits=2)


class Runner:
    """Runs one spec to the end; ``stop()`` (any thread, or a signal handler) ends it gracefully."""

    def __init__(
        self,
        spec: LaunchSpec,
        project: ProjectInfo,
        run_dir: Path,
        *,
        on_event: Callable[[object], None] | None = None,
        process_factory: ProcessFactory = popen_process,
        grace_s: float = DEFAULT_GRACE_S,
        poll_s: float = 0.2,
        max_steps: int | None = None,
        start_step: int = 0,
        resume_from: str | None = None,
        log_dir: Path | None = None,
        base_env: dict[str, str] | None = None,
        write_end_record: bool = True,
    ):
        self.spec = spec
        self.project = project
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "output.log"
        self.on_event = on_event or (lambda event: None)
        self.process_factory = process_factory
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.max_steps = max_steps
        self.start_step = start_step
        self.resume_from = resume_from
        self.log_dir = log_dir
        self.base_env = dict(os.environ) if base_env is None else dict(base_env)
        self.write_end_record = write_end_record
        """Append the "interrupted" end record when a stopped run did not (node 0 only: rank 0 writes the file)."""
        self._stop = threading.Event()
        self._stop_reason = ""
        self._kill_now = threading.Event()
        self._scan = FailureScan()
        self._tail: deque[str] = deque(maxlen=20)
        self._last_step: int | None = None
        self._peak: int | None = None
        self._end_status: str | None = None
        self._started = 0.0
        self._started_wall = 0.0
        self.process: Process | None = None

    # -- control -------------------------------------------------------------------------
    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to stop: SIGTERM now, SIGKILL after the grace period. A second call kills at once."""
        if self._stop.is_set():
            self._kill_now.set()
        else:
            self._stop_reason = reason
        self._stop.set()

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsFollower(self.project.metrics_path)
        env = {**self.base_env, **self.spec.env}
        self._started = time.monotonic()
        self._started_wall = time.time()
        log = self.log_path.open("ab")
        try:
            proc = self.process_factory(list(self.spec.argv), env, self.spec.cwd)
        except OSError as exc:
            log.close()
            result = RunResult(EXIT_FAILED, "failed", f"could not start {self.spec.argv[0]}: {exc}", None,
                               str(self.run_dir), str(self.log_path))  # fmt: skip
            self.on_event(RunFinished(result))
            return result
        self.process = proc
        self.on_event(RunStarted(str(self.run_dir), str(self.log_path), tuple(self.spec.argv), proc.pid,
                                 self.resume_from))  # fmt: skip
        reader = threading.Thread(target=self._read_output, args=(proc, log), daemon=True)
        reader.start()
        sent_term = sent_kill = False
        deadline = next_refresh = 0.0
        try:
            while True:
                try:
                    self._handle_metrics(metrics.poll())
                    if time.monotonic() >= next_refresh:
                        proc.refresh()  # remember torchrun's workers: they live in sessions of their own
                        next_refresh = time.monotonic() + 1.0
                    exited = proc.poll() is not None
                    if exited and not sent_term:
                        break
                    if self._stop.is_set() and not sent_term:
                        sent_term = True
                        deadline = time.monotonic() + self.grace_s
                        self.on_event(Stopping(self._stop_reason, "SIGTERM", self.grace_s))
                        proc.signal_group(signal.SIGTERM)
                    if sent_term and not sent_kill:
                        if exited and not proc.group_alive():
                            break
                        if time.monotonic() >= deadline or self._kill_now.is_set():
                            sent_kill = True
                            self.on_event(Stopping(self._stop_reason, "SIGKILL", self.grace_s))
                            proc.signal_group(signal.SIGKILL)
                    if sent_kill and exited:
                        break
                    if self._stop.is_set():
                        time.sleep(self.poll_s / 2)
                    else:
                        self._stop.wait(self.poll_s)
                except KeyboardInterrupt:  # no handler installed (library use): same path as stop()
                    self.stop("interrupted")
        except BaseException:
            proc.signal_group(signal.SIGKILL)  # never leave the group behind, whatever went wrong here
            raise
        finally:
            returncode = proc.wait()
            leftovers = self._kill_leftovers(proc)
            reader.join(timeout=5)
            log.close()
        self._handle_metrics(metrics.poll())
        if self._stop.is_set() and self._end_status is None and self.write_end_record:
            self._append_end_record("interrupted", "SIGKILL" if sent_kill else "SIGTERM")
        self._scan.scan_error_files(self.log_dir, since=self._started_wall)
        result = self._result(returncode, sent_kill, leftovers)
        self.on_event(RunFinished(result))
        return result

    def _append_end_record(self, status: str, signal_name: str) -> None:
        """The metrics file's end line for a run train.py could not close itself (killed, or a
        train.py that predates the "interrupted" status), in train.py's own format; a half-written
        last line is ended first so that readers skip it."""
        path = self.project.metrics_path
        record = {"event": "end", "status": status, "time": time.monotonic() - self._started,
                  "step": self._last_step, "signal": signal_name, "written_by": "ftplan launch"}  # fmt: skip
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab+") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell():
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write((json.dumps(record) + "\n").encode("utf-8"))
        except OSError:  # the record is a courtesy; the run's result is reported either way
            return
        self._end_status = status

    def _kill_leftovers(self, proc: Process) -> tuple[int, ...]:
        """SIGKILL whatever of the group outlived the child; wait until it is gone."""
        alive = proc.group_alive()
        if not alive:
            return ()
        proc.signal_group(signal.SIGKILL)
        end = time.monotonic() + 5
        while proc.group_alive() and time.monotonic() < end:
            time.sleep(0.05)
        return tuple(alive)

    def _read_output(self, proc: Process, log) -> None:
        for raw in iter(proc.stdout.readline, b""):
            try:
                log.write(raw)
                log.flush()
            except ValueError:  # the log was closed: the run is over and this is a straggler
                return
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            if "\r" in text:  # progress-bar redraws: keep the last frame
                frames = [f for f in text.split("\r") if f.strip()]
                text = frames[-1] if frames else ""
            self._scan.feed(text)
            self._tail.append(text)
            self.on_event(OutputLines((text,)))

    def _handle_metrics(self, records: list[dict]) -> None:
        for rec in records:
            if rec.get("event") == "end":
                self._end_status = str(rec.get("status", ""))
                continue
            if "event" in rec:  # evaluations and other events carry no training step
                continue
            step = rec.get("step")
            if not isinstance(step, int | float):
                continue
            step = int(step)
            self._last_step = step
            peak = rec.get("peak_memory_bytes")
            if isinstance(peak, int | float):
                self._peak = max(self._peak or 0, int(peak))
            max_steps = rec.get("max_steps") if isinstance(rec.get("max_steps"), int) else None
            max_steps = max_steps or self.max_steps or self.project.steps or step
            elapsed = time.monotonic() - self._started
            done = step - self.start_step
            eta = (max_steps - step) * elapsed / done if done > 0 and max_steps >= step else None
            gpus = 0 if self.spec.on_cpu else self.spec.nproc * self.spec.nnodes
            loss = rec.get("loss")
            tps = rec.get("tokens_per_second")
            epoch = rec.get("epoch")
            self.on_event(
                ProgressUpdate(
                    step=step,
                    max_steps=max_steps,
                    loss=float(loss) if isinstance(loss, int | float) else None,
                    tokens_per_second=float(tps) if isinstance(tps, int | float) else None,
                    peak_memory_bytes=self._peak,
                    planned_peak_bytes=self.project.allocated_peak,
                    peak_is_rss=self.spec.on_cpu,
                    elapsed_s=elapsed,
                    eta_s=eta,
                    cost_usd=elapsed / 3600 * gpus * self.project.usd_per_gpu_hour,
                    epoch=float(epoch) if isinstance(epoch, int | float) else None,
                )
            )

    def _result(self, returncode: int, killed: bool, leftovers: tuple[int, ...]) -> RunResult:
        common = dict(
            returncode=returncode,
            run_dir=str(self.run_dir),
            log_path=str(self.log_path),
            last_step=self._last_step,
            peak_memory_bytes=self._peak,
            leftover_killed=leftovers,
        )
        step = f" at step {self._last_step}" if self._last_step is not None else ""
        if self._stop.is_set() or self._end_status == "interrupted":
            if not self._stop.is_set():  # stopped from outside ftplan (a signal to train.py itself)
                msg = f"Run interrupted{step}: train.py reported status 'interrupted'. Output: {self.log_path}"
                return RunResult(EXIT_INTERRUPTED, "interrupted", msg + self._resume_hint(), **common)
            how = (
                f"did not stop within the {self.grace_s:g} s grace period and was killed (SIGKILL)"
                if killed
                else "stopped cleanly after SIGTERM"
            )
            msg = f"Run {self._stop_reason}{step}: it {how}. Output: {self.log_path}"
            return RunResult(EXIT_INTERRUPTED, "interrupted", msg + self._resume_hint(), **common)
        if self._scan.oom:
            text, lines = oom_message(self.project)
            msg = f"{text}\n(the error: {self._scan.oom_line}; full output: {self.log_path})"
            return RunResult(EXIT_FAILED, "oom", msg, advice=tuple(lines), **common)
        if returncode == 0 and self._end_status in (None, "ok"):
            return RunResult(EXIT_OK, "ok", f"Run finished{step}.{self._peak_text()} Output: {self.log_path}", **common)
        if self._scan.failed_workers and self.spec.nproc * self.spec.nnodes > 1:
            msg = worker_message(self._scan.failures())
            return RunResult(EXIT_FAILED, "worker_died", f"{msg}{self._tail_text()}\nOutput: {self.log_path}", **common)
        if returncode == 0:
            msg = f"train.py reported status {self._end_status!r}{step}"
        else:
            msg = f"{self.spec.argv[0] if len(self.spec.argv) else 'the run'} {describe_exit(returncode)}{step}"
        return RunResult(EXIT_FAILED, "failed", f"{msg}.{self._tail_text()}\nOutput: {self.log_path}", **common)

    def _peak_text(self) -> str:
        if not self._peak:
            return ""
        planned = self.project.allocated_peak
        if self.spec.on_cpu:
            # On the CPU train.py reports the process's peak RSS, which includes Python and torch.
            text = f" Peak memory {_size(self._peak)} per process (RSS, with the runtime; plan: {_size(planned)} of training state)"
        else:
            text = f" Peak memory {_size(self._peak)} per GPU (plan: {_size(planned)}"
            text += f", {self._peak / planned:.0%} of it)" if planned else ")"
        return text + "."

    def _tail_text(self) -> str:
        if self._scan.error_line:
            return f"\nThe error: {self._scan.error_line}"
        lines = [x for x in self._tail if x.strip()][-8:]
        return ("\nLast lines of output:\n" + "\n".join(f"  | {x}" for x in lines)) if lines else ""

    def _resume_hint(self) -> str:
        from ftplan.project import latest_checkpoint

        ckpt = latest_checkpoint(self.project)
        if ckpt is None:
            return ""
        command = shlex.join(["ftplan", "launch", str(self.project.directory), "--resume"])
        return f"\nContinue from {ckpt.name} with: {command}"
