"""A minimal exported project made from the real planner, with tests/launch/fake_train.py as train.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ftplan.planner import make_plan, read_answers_text

HERE = Path(__file__).parent
REPO = HERE.parent.parent

CPU_ANSWERS = """
[model]
name = "Qwen/Qwen2.5-0.5B"
[data]
path = "data/train.jsonl"
examples = 1000
avg_tokens = 128
max_seq_len = 256
[hardware]
gpu = "cpu"
gpus_per_node = {gpus}
nodes = {nodes}
[training]
micro_batch_size = 1
"""


def answers_text(
    gpu: str = "cpu", gpus: int = 1, nodes: int = 1, model: str = "Qwen/Qwen2.5-0.5B", extra: str = ""
) -> str:
    return (
        CPU_ANSWERS.format(gpus=gpus, nodes=nodes).replace('"cpu"', f'"{gpu}"').replace("Qwen/Qwen2.5-0.5B", model)
        + extra
    )


def make_project(
    root: Path,
    text: str | None = None,
    *,
    method: str | None = None,
    deepspeed: bool = False,
    manifest: bool = True,
    data: bool = True,
) -> Path:
    """Write plan.json (real planner), train_config.toml, the fake train.py and a manifest."""
    text = text or answers_text()
    plan = make_plan(read_answers_text(text, "answers.toml"))
    method = method or plan.recommendation.method
    root.mkdir(parents=True, exist_ok=True)
    (root / "answers.toml").write_text(text)
    (root / "plan.json").write_text(plan.to_json())
    (root / "train.py").write_text((HERE / "fake_train.py").read_text())
    ds = "ds_config.json" if deepspeed else ""
    if deepspeed:
        (root / "ds_config.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    (root / "train_config.toml").write_text(
        f"""[model]
name_or_path = "{plan.model.name}"
trust_remote_code = false

[method]
kind = "{method}"

[data]
path = "data/train.jsonl"

[training]
deepspeed = "{ds}"

[checkpoints]
output_dir = "output"
save_steps = 2

[logging]
metrics_file = "metrics.jsonl"
"""
    )
    if data:
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / "train.jsonl").write_text('{"text": "hello"}\n')
    if manifest:
        files = {
            n: hashlib.sha256((root / n).read_bytes()).hexdigest()
            for n in ("train.py", "train_config.toml", "plan.json")
        }
        (root / ".ftplan-manifest.json").write_text(json.dumps({"files": files}))
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "proj")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ftplan_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def launch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftplan", "launch", *args]


def run_launch(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(launch_cmd(*args), env=ftplan_env(**env), capture_output=True, text=True, timeout=timeout)


@contextmanager
def launched(project: Path, grace: float, **fake_env: str) -> Iterator[subprocess.Popen]:
    """``ftplan launch PROJECT --grace G`` running in the background (the fake train.py told what to
    do by ``FAKE_*`` variables), stdout and stderr together; killed if the test leaves it running."""
    proc = subprocess.Popen(launch_cmd(str(project), "--grace", str(grace)), env=ftplan_env(**fake_env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 60) -> tuple[str, re.Match]:
    """Read the run's output until ``pattern`` matches what was seen; (seen, match)."""
    seen = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        m = re.search(pattern, seen)
        if m:
            return seen, m
    raise AssertionError(f"{pattern!r} not seen in:\n{seen}")


def stop_with(proc: subprocess.Popen, signum: int, timeout: float = 30) -> str:
    """Send ``signum`` to the launcher as a user's Ctrl+C or kill would; the rest of its output."""
    proc.send_signal(signum)
    return proc.communicate(timeout=timeout)[0]
