"""A run the user stops ends its metrics with status "interrupted"; launch options are validated
(exit 2, one message naming every bad option, never a traceback)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import pytest

from .conftest import answers_text, launched, make_project, run_launch, stop_with, wait_for
from .test_launch_runner_unit import FakeProcess, run_with


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def test_a_stopped_run_without_an_end_record_gets_one(tmp_path):
    """train.py killed before it could write its end line (SIGKILL, or a train.py that predates
    the status): the launcher closes the record, after ending a half-written line."""
    proc = FakeProcess([], run_until_signal=True, ignore_term=True)
    runner, _ = run_with(tmp_path, proc, grace_s=0.1)
    metrics = runner.project.metrics_path
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"step": 1, "loss": 2.0}) + '\n{"step": 2, "lo')
    threading.Timer(0.05, runner.stop).start()
    result = runner.run()
    assert result.status == "interrupted" and result.exit_code == 130
    lines = metrics.read_text().splitlines()
    end = json.loads(lines[-1])
    assert end["event"] == "end" and end["status"] == "interrupted" and end["signal"] == "SIGKILL"
    assert lines[-2] == '{"step": 2, "lo'  # the broken line stays broken (readers skip it), on its own line


def test_the_runs_own_interrupted_record_is_not_doubled(tmp_path):
    proc = FakeProcess([], run_until_signal=True)
    runner, _ = run_with(tmp_path, proc, grace_s=5)
    metrics = runner.project.metrics_path
    metrics.parent.mkdir(parents=True, exist_ok=True)

    def stop_and_record():
        with metrics.open("a") as fh:  # what the exported train.py writes when it is stopped
            fh.write(json.dumps({"event": "end", "status": "interrupted"}) + "\n")
        runner.stop()

    threading.Timer(0.05, stop_and_record).start()
    assert runner.run().status == "interrupted"
    ends = [r for r in _records(metrics) if r.get("event") == "end"]
    assert ends == [{"event": "end", "status": "interrupted"}]


def test_interrupted_status_from_train_py_is_reported_as_interrupted(tmp_path):
    """Stopped from outside ftplan (a signal to train.py itself): not a failure."""
    runner, _ = run_with(tmp_path, None)
    metrics = runner.project.metrics_path
    metrics.parent.mkdir(parents=True, exist_ok=True)

    def write():
        with metrics.open("a") as fh:
            fh.write(json.dumps({"event": "end", "status": "interrupted"}) + "\n")

    runner.process_factory = lambda a, e, c: FakeProcess(["bye"], code=143, on_start=write)
    result = runner.run()
    assert result.status == "interrupted" and result.exit_code == 130, result.message


@pytest.mark.slow
@pytest.mark.parametrize("train_writes_end", [False, True])
def test_ctrl_c_leaves_an_interrupted_record(project, train_writes_end):
    fake = dict(FAKE_STEP_SECONDS="0.2", FAKE_TOTAL_STEPS="1000", FAKE_END_ON_SIGTERM=str(int(train_writes_end)))
    with launched(project, 5, **fake) as proc:
        wait_for(proc, r"rank 0: step 3 ")
        rest = stop_with(proc, signal.SIGINT)
    assert proc.returncode == 130, rest
    ends = [r for r in _records(project / "output" / "metrics.jsonl") if r.get("event") == "end"]
    assert len(ends) == 1 and ends[0]["status"] == "interrupted", ends
    assert ("written_by" in ends[0]) is not train_writes_end


@pytest.mark.parametrize(
    "args, named",
    [
        (["--master-port", "99999"], ["--master-port should be 1..65535, not 99999"]),
        (["--master-port", "0", "--node-rank", "2", "--smoke-steps", "0"],
         ["--master-port should be 1..65535, not 0", "--node-rank 2 is outside 0..1", "--smoke-steps should be at least 1"]),
        (["--nnodes", "0"], ["--nnodes should be at least 1, not 0"]),
        (["--node-rank", "-1"], ["--node-rank -1 is outside 0..1"]),
        (["--master-addr", " "], ["--master-addr ' ' is not a host name or address"]),
    ],
)  # fmt: skip
def test_bad_launch_options_exit_2_naming_each(tmp_path, args, named):
    """A two-node project started as node 0 (where preflight binds the port): every bad option is
    named at once, exit 2, no traceback."""
    proj = make_project(tmp_path / "p", answers_text(nodes=2))
    base = ["--nnodes", "2", "--master-addr", "127.0.0.1"]
    r = run_launch(str(proj), *base, *args, "--dry-run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for text in named:
        assert text in r.stderr, r.stderr


def test_the_resume_hint_is_safe_to_paste(tmp_path):
    """For a project folder named `proj $(touch X)` the printed command runs no substitution."""
    from ftplan.launch import LaunchOptions, Runner, build_launch_spec, load_project

    p = load_project(make_project(tmp_path / "proj $(touch X)"))
    (p.path(p.output_dir) / "checkpoint-2").mkdir(parents=True)
    spec = build_launch_spec(p, LaunchOptions(python="py", torchrun=("torchrun",)))
    proc = FakeProcess([], run_until_signal=True)
    runner = Runner(spec, p, tmp_path / "run", process_factory=lambda a, e, c: proc, poll_s=0.01, base_env={})
    threading.Timer(0.05, runner.stop).start()
    message = runner.run().message
    command = message.split("with: ", 1)[1].strip()
    shown = subprocess.run(["bash", "-c", 'ftplan() { printf "%s\\n" "$@"; }; ' + command], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert shown == ["launch", str(tmp_path / "proj $(touch X)"), "--resume"]
    assert not (tmp_path / "X").exists()
