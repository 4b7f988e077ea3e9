"""The Runner against injected fake processes: events, classification, the stop sequence."""

from __future__ import annotations

import io
import os
import signal
import threading

from ftplan.launch import (
    LaunchOptions,
    OutputLines,
    ProgressUpdate,
    RunFinished,
    Runner,
    RunStarted,
    Stopping,
    build_launch_spec,
    load_project,
)

from .conftest import answers_text, make_project


class FakeProcess:
    """Prints scripted lines, then exits with ``code``; or, when ``stubborn``, runs until killed."""

    def __init__(self, lines, code=0, *, run_until_signal=False, ignore_term=False, on_start=None):
        self.pid = 99999
        self.stdout = io.BytesIO("".join(f"{x}\n" for x in lines).encode())
        self.code = code
        self.run_until_signal = run_until_signal
        self.ignore_term = ignore_term
        self.signals: list[int] = []
        self._done = threading.Event()
        if not run_until_signal:
            self._done.set()
        self._on_start = on_start

    def poll(self):
        if self._on_start:  # the child "writes" once it runs
            self._on_start, start = None, self._on_start
            start()
        return self.code if self._done.is_set() else None

    def wait(self, timeout=None):
        self._done.wait(timeout)
        return self.code

    def signal_group(self, sig):
        self.signals.append(sig)
        if sig == signal.SIGKILL or not self.ignore_term:
            self.code = -sig
            self._done.set()
        return True

    def group_alive(self):
        return [] if self._done.is_set() else [self.pid]

    def refresh(self):
        pass


def setup(tmp_path, gpus=1):
    p = load_project(make_project(tmp_path / "p", answers_text(gpus=gpus)))
    spec = build_launch_spec(p, LaunchOptions(python="py", torchrun=("torchrun",)))
    return p, spec


def run_with(tmp_path, proc, gpus=1, **kw):
    p, spec = setup(tmp_path, gpus)
    events = []
    runner = Runner(spec, p, tmp_path / "run", on_event=events.append, process_factory=lambda a, e, c: proc,
                    poll_s=0.01, base_env={}, **kw)  # fmt: skip
    return runner, events


def test_ok_run_posts_events_in_order(tmp_path):
    runner, events = run_with(tmp_path, FakeProcess(["hello", "bar\rframe 2\rframe 3"]))
    result = runner.run()
    assert result.exit_code == 0 and result.status == "ok"
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    lines = [line for e in events if isinstance(e, OutputLines) for line in e.lines]
    assert lines == ["hello", "frame 3"]
    assert (tmp_path / "run" / "output.log").read_bytes() == b"hello\nbar\rframe 2\rframe 3\n"


def test_progress_from_metrics(tmp_path):
    p, _ = setup(tmp_path)
    metrics = p.metrics_path
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"step": 1, "loss": 9.0}\n')  # an earlier run's line: not replayed

    def write():
        with metrics.open("a") as fh:
            fh.write('{"step": 3, "loss": 1.5, "tokens_per_second": 100, "peak_memory_bytes": 2048, "max_steps": 6}\n')
            fh.write('{"event": "eval", "step": 3, "eval_loss": 1.0}\n')
            fh.write('{"event": "end", "status": "ok"}\n')

    runner, events = run_with(tmp_path, FakeProcess([], on_start=write))
    result = runner.run()
    ups = [e for e in events if isinstance(e, ProgressUpdate)]
    assert [(u.step, u.max_steps, u.loss, u.tokens_per_second, u.peak_memory_bytes) for u in ups] == [
        (3, 6, 1.5, 100.0, 2048)
    ]
    assert ups[0].planned_peak_bytes == p.allocated_peak and ups[0].cost_usd == 0.0
    assert result.last_step == 3 and result.peak_memory_bytes == 2048


def test_end_event_with_error_is_a_failure(tmp_path):
    p, _ = setup(tmp_path)
    metrics = p.metrics_path
    metrics.parent.mkdir(parents=True)

    def write():
        metrics.write_text('{"event": "end", "status": "error"}\n')

    runner, _ = run_with(tmp_path, FakeProcess([], on_start=write))
    result = runner.run()
    assert result.exit_code == 1 and "reported status 'error'" in result.message


def test_oom_in_output_gives_ladder_advice(tmp_path):
    lines = [
        "Traceback (most recent call last):",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ]
    runner, _ = run_with(tmp_path, FakeProcess(lines, code=1))
    result = runner.run()
    assert result.status == "oom" and result.exit_code == 1
    assert result.advice == ("training.gradient_checkpointing = true",)
    assert "training.gradient_checkpointing = true" in result.message


def test_oom_in_torchrun_error_file(tmp_path):
    err = tmp_path / "logs" / "run_x" / "attempt_0" / "1" / "error.json"
    err.parent.mkdir(parents=True)
    text = '{"message": {"message": "OutOfMemoryError: CUDA out of memory. Tried to allocate 1 GiB"}}'

    def crash():
        err.write_text(text)

    proc = FakeProcess(["ChildFailedError"], code=1, on_start=crash)
    runner, _ = run_with(tmp_path, proc, log_dir=tmp_path / "logs")
    result = runner.run()
    assert result.status == "oom" and "Tried to allocate 1 GiB" in result.message
    os.utime(err, (1, 1))  # an earlier run's error file does not count
    runner, _ = run_with(tmp_path, FakeProcess(["ChildFailedError"], code=1), log_dir=tmp_path / "logs")
    assert runner.run().status == "failed"


def test_keyboard_interrupt_inside_run_takes_the_stop_path(tmp_path):
    proc = FakeProcess([], run_until_signal=True)
    calls = {"n": 0}
    real_poll = proc.poll

    def poll():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_poll()

    proc.poll = poll
    runner, _ = run_with(tmp_path, proc, grace_s=5)
    result = runner.run()
    assert result.status == "interrupted" and proc.signals == [signal.SIGTERM]


TORCHRUN_SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-28_15:00:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 1234)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 1234
============================================================""".splitlines()


def test_worker_death_is_named(tmp_path):
    runner, _ = run_with(tmp_path, FakeProcess(TORCHRUN_SUMMARY, code=1), gpus=2)
    result = runner.run()
    assert result.status == "worker_died"
    assert result.message.startswith("Worker rank 1 was killed by SIGKILL")


def test_single_process_killed_by_signal(tmp_path):
    runner, _ = run_with(tmp_path, FakeProcess(["x"], code=-9))
    result = runner.run()
    assert result.status == "failed" and "was killed by SIGKILL" in result.message and "| x" in result.message


def test_stop_sends_sigterm_then_exits(tmp_path):
    proc = FakeProcess(["working"], run_until_signal=True)
    runner, events = run_with(tmp_path, proc, grace_s=5)
    threading.Timer(0.1, runner.stop).start()
    result = runner.run()
    assert proc.signals == [signal.SIGTERM]
    assert result.exit_code == 130 and result.status == "interrupted" and "stopped cleanly" in result.message
    assert [e.signal for e in events if isinstance(e, Stopping)] == ["SIGTERM"]


def test_stubborn_child_is_killed_after_grace(tmp_path):
    proc = FakeProcess([], run_until_signal=True, ignore_term=True)
    runner, events = run_with(tmp_path, proc, grace_s=0.2)
    threading.Timer(0.05, runner.stop).start()
    result = runner.run()
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    assert "did not stop within the 0.2 s grace period" in result.message
    assert [e.signal for e in events if isinstance(e, Stopping)] == ["SIGTERM", "SIGKILL"]


def test_second_stop_kills_at_once(tmp_path):
    proc = FakeProcess([], run_until_signal=True, ignore_term=True)
    runner, _ = run_with(tmp_path, proc, grace_s=60)
    threading.Timer(0.05, runner.stop).start()
    threading.Timer(0.15, runner.stop).start()
    assert runner.run().status == "interrupted"
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]


def test_start_failure_is_reported(tmp_path):
    p, spec = setup(tmp_path)

    def boom(argv, env, cwd):
        raise FileNotFoundError(2, "No such file", argv[0])

    result = Runner(spec, p, tmp_path / "run", process_factory=boom, base_env={}).run()
    assert result.exit_code == 1 and "could not start py" in result.message


def test_worker_exception_is_quoted(tmp_path):
    lines = [
        "[rank0]: Traceback (most recent call last):",
        "[rank0]: AssertionError: Check batch related parameters.",
        *TORCHRUN_SUMMARY[:-9],
        "[0]:",
        "  rank      : 0 (local_rank: 0)",
        "  exitcode  : 1 (pid: 1)",
        "[1]:",
        "  rank      : 1 (local_rank: 1)",
        "  exitcode  : 1 (pid: 2)",
    ]
    runner, _ = run_with(tmp_path, FakeProcess(lines, code=1), gpus=2)
    result = runner.run()
    assert result.status == "worker_died"
    assert result.message.startswith("Worker rank 0 exited with code 1; rank 1 exited with code 1 too.")
    assert "The error: AssertionError: Check batch related parameters." in result.message
