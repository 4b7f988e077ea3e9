"""`ftplan launch` as a user runs it, against the fake train.py in a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from ftplan.launch.process import group_members

from .conftest import (
    answers_text,
    free_port,
    ftplan_env,
    launch_cmd,
    launched,
    make_project,
    run_launch,
    stop_with,
    wait_for,
)

SMOKE_ENV = {"FAKE_STEP_SECONDS": "0.02"}


def test_dry_run_prints_checklist_command_and_environment(project):
    r = run_launch(str(project), "--dry-run", "--smoke", "--smoke-steps", "3")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Preflight" in out and "✓" in out and "GPUs" in out
    assert "lora 3-step smoke run on the CPU\n" in out
    assert "Environment (added to yours):\n  CUDA_VISIBLE_DEVICES=''\n  DS_ACCELERATOR=cpu\n" in out
    assert "  FTPLAN_DIST_BACKEND=gloo\n" in out and "  PYTHONUNBUFFERED=1\n" in out
    assert (
        f"Command:\n  cd {project}\n  {sys.executable} train.py --config train_config.toml --smoke --max-steps 3\n"
        in out
    )
    assert not (project / "runs").exists() and not (project / "output").exists()


def test_dry_run_of_two_node_gpu_plan(tmp_path):
    proj = make_project(tmp_path / "p", answers_text(gpu="H100-SXM", gpus=8, nodes=2))
    r = run_launch(str(proj), "--dry-run", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29511")
    assert r.returncode == 0, r.stderr
    assert "run on 8 GPUs, node 1 of 2" in r.stdout
    assert (
        "--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29511 --nproc_per_node 8 "
        "--log-dir runs/torchrun train.py --config train_config.toml\n"
    ) in r.stdout
    assert "✗" in r.stdout and "no GPU found" in r.stdout  # this machine has none, and says so


def test_preflight_failure_blocks_launch_unless_forced(project):
    (project / "data" / "train.jsonl").unlink()
    r = run_launch(str(project), "--smoke", **SMOKE_ENV)
    assert r.returncode == 1 and "preflight failed (Dataset)" in r.stderr
    assert not (project / "output").exists()
    r = run_launch(str(project), "--smoke", "--force", **SMOKE_ENV)
    assert r.returncode == 0, r.stderr


def test_smoke_run_exits_0_with_log_and_progress(project):
    r = run_launch(str(project), "--smoke", "--smoke-steps", "4", **SMOKE_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0: step 4 loss 0.5000" in r.stdout
    assert "step 4/4" in r.stdout and "loss 0.5000" in r.stdout and "tok/s" in r.stdout and "peak" in r.stdout
    assert "Run finished at step 4" in r.stdout
    (run,) = [p for p in (project / "runs").iterdir() if p.is_dir() and p.name != "torchrun"]
    assert (project / "runs" / ".gitignore").read_text().endswith("*\n")
    assert "rank 0: done" in (run / "output.log").read_text()
    # A smoke run writes apart (train.py --smoke): a later --resume never continues its schedule.
    assert sorted(p.name for p in (project / "output" / "smoke").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert not list((project / "output").glob("checkpoint-*"))


def test_oom_names_the_setting(project):
    r = run_launch(str(project), "--smoke", FAKE_OOM_AT_STEP="2", **SMOKE_ENV)
    assert r.returncode == 1
    assert "ran out of GPU memory" in r.stderr
    assert "    training.gradient_checkpointing = true\n" in r.stderr
    assert "Traceback" in r.stdout  # the child's own output is shown, ftplan adds none


def test_sigint_stops_every_child_then_resume_continues(project):
    with launched(project, 5, FAKE_STEP_SECONDS="0.2", FAKE_TOTAL_STEPS="1000") as proc:
        _, m = wait_for(proc, r"process group (\d+)")
        pgid = int(m.group(1))
        wait_for(proc, r"rank 0: step 3 ")
        assert group_members(pgid), "the run should be going"
        t0 = time.monotonic()
        rest = stop_with(proc, signal.SIGINT)
        assert time.monotonic() - t0 < 5 + 10  # within the grace period (slack for a loaded CI box)
    assert proc.returncode == 130, rest
    assert group_members(pgid) == []
    assert "Run interrupted" in rest and "stopped cleanly after SIGTERM" in rest
    assert "--resume" in rest
    ckpts = sorted(int(p.name.split("-")[1]) for p in (project / "output").glob("checkpoint-*"))
    assert ckpts and ckpts[-1] >= 2
    r = run_launch(str(project), "--resume", FAKE_STEP_SECONDS="0.01", FAKE_TOTAL_STEPS=str(ckpts[-1] + 3))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Resuming from {project / 'output' / f'checkpoint-{ckpts[-1]}'}" in r.stdout
    assert f"rank 0: resuming from checkpoint-{ckpts[-1]}" in r.stdout
    assert f"rank 0: step {ckpts[-1] + 1} " in r.stdout and "rank 0: step 1 " not in r.stdout


def test_sigint_under_torchrun_ends_every_worker(tmp_path):
    """torchrun puts each worker in a session of its own; rank 1 ignores SIGTERM, so the
    grace period ends with SIGKILL, which must reach the workers too."""
    proj = make_project(tmp_path / "p", answers_text(gpus=2))
    with launched(proj, 2, FAKE_STEP_SECONDS="0.2", FAKE_TOTAL_STEPS="1000", FAKE_IGNORE_SIGTERM="rank1") as proc:
        _, m = wait_for(proc, r"process group (\d+)")
        pgid = int(m.group(1))
        seen, _ = wait_for(proc, r"rank 1: step 2 ", timeout=90)
        workers = [int(x) for x in re.findall(r"process group up \(gloo\) pid (\d+)", seen)]
        assert len(workers) == 2 and not set(workers) & set(group_members(pgid))
        t0 = time.monotonic()
        rest = stop_with(proc, signal.SIGINT)
        assert time.monotonic() - t0 < 2 + 10  # the grace period, then SIGKILL; slack for a loaded CI box
    assert proc.returncode == 130, rest
    assert "rank 1: ignoring SIGTERM" in rest
    assert "Run interrupted" in rest and "was killed (SIGKILL)" in rest
    assert group_members(pgid) == []
    assert [pid for pid in workers if _state(pid) not in "ZX"] == []


def _state(pid: int) -> str:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return "X"
    return stat[stat.rfind(")") + 2]


def test_worker_that_dies_gives_a_clear_message(tmp_path):
    proj = make_project(tmp_path / "p", answers_text(gpus=2))
    r = run_launch(str(proj), "--smoke", "--smoke-steps", "6", "--grace", "10", timeout=120,
                   FAKE_DIE_RANK="1", FAKE_DIE_AT_STEP="2", **SMOKE_ENV)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Worker rank 1 was killed by SIGKILL" in r.stderr


def test_two_nodes_on_localhost_both_finish(tmp_path):
    proj = make_project(tmp_path / "p", answers_text())
    port = str(free_port())
    env = ftplan_env(**SMOKE_ENV)
    procs = [
        subprocess.Popen(
            launch_cmd(
                str(proj),
                "--smoke",
                "--smoke-steps",
                "3",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                "--grace",
                "10",
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    assert "rank 0/2: process group up (gloo) pid" in outs[0]
    assert "rank 1/2: process group up (gloo) pid" in outs[1]
    assert "rank 1: done" in outs[1]
    assert len([d for d in os.listdir(proj / "runs") if d not in ("torchrun", ".gitignore")]) == 2


def test_child_ignoring_sigterm_is_killed_after_grace(project):
    with launched(project, 1, FAKE_STEP_SECONDS="0.1", FAKE_TOTAL_STEPS="1000", FAKE_IGNORE_SIGTERM="1") as proc:
        _, m = wait_for(proc, r"process group (\d+)")
        pgid = int(m.group(1))
        wait_for(proc, r"rank 0: step 2 ")
        rest = stop_with(proc, signal.SIGTERM, timeout=20)
    assert proc.returncode == 130, rest
    assert "ignoring SIGTERM" in rest and "Run terminated" in rest
    assert "did not stop within the 1 s grace period and was killed (SIGKILL)" in rest
    assert group_members(pgid) == []
