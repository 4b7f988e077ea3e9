"""Shared fixtures: a tiny local model and dataset, plans made by the real planner, exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402

from ftplan.context import build_context  # noqa: E402
from ftplan.planner import make_plan, read_answers_text  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return tiny.write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="session")
def tiny_plan(tiny_model, tiny_data):
    """make(**training) -> (plan, answers_text) for the tiny model on the CPU."""

    def make(**training):
        text = tiny.answers_text(tiny_model, tiny_data, **training)
        answers = read_answers_text(text)
        return make_plan(answers, build_context(answers, detect=False)), text

    return make


def train_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the exported project runs without ftplan
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(DISABLE_TQDM="1", PYTHONWARNINGS="ignore")
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    """Run a command of the exported project; on failure show its output's tail."""
    proc = subprocess.run(
        cmd, cwd=cwd, env={**train_env(), **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


def set_config(project: Path, section: str, **values) -> None:
    """Edit train_config.toml as a user would (one `key = value` line each)."""
    path = project / "train_config.toml"
    lines = path.read_text().splitlines()
    current = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key = line.split("=", 1)[0].strip()
        if current == section and key in values:
            lines[i] = f"{key} = {json.dumps(values[key])}"
    path.write_text("\n".join(lines) + "\n")


def metrics(project: Path) -> list[dict]:
    path = project / "output" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
