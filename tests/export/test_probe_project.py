"""`ftplan probe` on a real exported project (the export's train.py, a tiny local model)."""

from __future__ import annotations

import json

import pytest

from ftplan.export import export_project
from ftplan.probe.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["lora", "full"])
def test_probe_exported_project(tiny_plan, tmp_path, capsys, monkeypatch, method):
    pytest.importorskip("trl")
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, value)
    plan, text = tiny_plan(method=method, micro_batch_size=2, gradient_accumulation_steps=2)
    project = tmp_path / "project"
    export_project(plan, text, project, method=method)
    assert main([str(project), "--steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method and out["device"] == "cpu"
    assert out["measured"]["total"] > 0 and out["predicted"]["total"] > 0
    assert set(out["measured"]["phases"]) == {"forward", "backward", "optimizer_step"}
    assert out["measured"]["gradients"] >= 0 and out["measured"]["weights"] > 0
    saved = json.loads((project / "probe.json").read_text())
    assert saved["error"] == out["error"]


def test_probe_holds_qloras_model_states(tiny_plan, tmp_path, capsys, monkeypatch):
    """TRL's SFTTrainer turns a quantized model's adapters to bf16: the plan's weights and optimizer
    states must be those of bf16 adapters (they were fp32, and twice the measured optimizer)."""
    pytest.importorskip("trl")
    pytest.importorskip("bitsandbytes")
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, value)
    plan, text = tiny_plan(method="qlora")
    project = tmp_path / "project"
    export_project(plan, text, project, method="qlora")
    assert main([str(project), "--steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    predicted, measured = out["predicted"], out["measured"]
    for component in ("weights", "optimizer"):
        assert abs(predicted[component] - measured[component]) <= 0.05 * measured[component], (component, out)
    assert abs(out["error"]) <= 0.10
