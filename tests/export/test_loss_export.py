"""training.loss in the exported project: train.py runs the loss the plan counted."""

from __future__ import annotations

import json

import pytest
from export_support import metrics, run

from ftplan.export import export_project
from ftplan.probe.cli import main as probe

pytestmark = pytest.mark.slow


def test_full_logits_project_trains_with_the_models_own_loss(tiny_plan, tmp_path, capsys, monkeypatch):
    pytest.importorskip("trl")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")
    plan, text = tiny_plan(method="lora", loss="full_logits", micro_batch_size=2, gradient_accumulation_steps=1)
    project = tmp_path / "project"
    export_project(plan, text, project, method="lora")
    assert 'loss = "full_logits"' in (project / "train_config.toml").read_text()
    assert probe([str(project), "--steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["error"]) <= 0.10, out  # predicted with the model's own loss, measured with train.py's trainer
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_full_logits", project / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    cfg = train.load_config(project / "train_config.toml")
    assert train.trainer_class(cfg) is train.ModelLossSFTTrainer
    cfg["training"]["loss"] = "chunked"
    assert train.trainer_class(cfg) is train.SFTTrainer
    run(["bash", "launch.sh", "--max-steps", "2"], project)
    lines = [r for r in metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] > 0 for r in lines)
