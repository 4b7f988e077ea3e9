"""End to end: export a real project for a tiny random Llama, then `ftplan launch` it on the CPU.

Slow (each run imports torch, transformers, trl and trains a few steps): marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_training_kit

from .conftest import run_launch

EXPORT_TESTS = Path(__file__).resolve().parent.parent / "export"
_export = pytest.importorskip("ftplan.export")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(_export, "export_project") or not (EXPORT_TESTS / "export_support.py").is_file(),
        reason="needs the exporter (ftplan.export) and tests/export/export_support.py",
    ),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_training_kit(root), root  # the export tests' tiny model, tokenizer and data


def export(tiny, name: str, **training) -> Path:
    from ftplan.export import export_project
    from ftplan.planner import make_plan, read_answers_text

    module, root = tiny
    text = module.answers_text(root / "model", root / "data.jsonl", **training)
    plan = make_plan(read_answers_text(text, "answers.toml"))
    out = root / name
    export_project(plan, text, out)
    return out


def metrics(project: Path) -> list[dict]:
    files = list(project.glob("**/metrics.jsonl"))
    assert files, "no metrics file"
    return [json.loads(x) for x in files[0].read_text().splitlines() if x.strip()]


def test_lora_project_smoke(tiny):
    project = export(tiny, "lora", method="lora", micro_batch_size=2)
    r = run_launch(str(project), "--smoke", "--smoke-steps", "2", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "✓  Project files" in r.stdout  # the exporter's manifest matches
    assert "Run finished at step 2" in r.stdout and "step 2/2" in r.stdout
    steps = [m["step"] for m in metrics(project) if "step" in m and "event" not in m]
    assert steps[-1] == 2
    # The smoke run writes apart (train.py --smoke): a later --resume does not continue it.
    assert (project / "output" / "smoke" / "checkpoint-2").is_dir()
    assert not list((project / "output").glob("checkpoint-*"))


def test_zero3_two_processes_on_cpu(tiny):
    project = export(tiny, "zero3", method="full", zero_stage=3, gpus_per_node=2, micro_batch_size=2)
    assert (project / "ds_config.json").is_file()
    r = run_launch(str(project), "--smoke", "--smoke-steps", "2", "--grace", "10", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "--nproc_per_node 2" in r.stdout and "FTPLAN_DIST_BACKEND=gloo" in r.stdout
    assert "Run finished at step 2" in r.stdout
