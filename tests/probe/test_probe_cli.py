"""`ftplan probe DIR`: bad folders exit 2 with one message; a (fake) exported project is probed."""

from __future__ import annotations

import json
import textwrap

import pytest

from ftplan.probe.cli import main

FAKE_TRAIN = textwrap.dedent(
    '''
    """A stand-in for the exported train.py: the same five functions, a tiny random Llama."""
    import tomllib


    def load_config(path):
        with open(path, "rb") as f:
            return tomllib.load(f)


    def build_tokenizer(cfg):
        return None


    def build_model(cfg, tokenizer):
        from ftplan.probe.measure import build_model, tiny_llama_config

        t = cfg["training"]
        return build_model(
            tiny_llama_config(hidden=64, layers=2, vocab=256),
            method=cfg["method"]["kind"],
            precision=t["precision"],
            gradient_checkpointing=t["gradient_checkpointing"],
            lora_r=cfg["lora"]["r"],
            lora_dropout=cfg["lora"]["dropout"],
        )


    def build_datasets(cfg, tokenizer):
        import torch

        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, 256, (16, cfg["data"]["max_seq_len"]), generator=g)
        rows = [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in ids]
        return rows, None


    def build_trainer(cfg, model, tokenizer, train, eval, max_steps=None):
        from transformers import Trainer, TrainingArguments, default_data_collator

        t = cfg["training"]
        args = TrainingArguments(
            output_dir=cfg["checkpoints"]["output_dir"],
            per_device_train_batch_size=t["micro_batch_size"],
            max_steps=max_steps or 1,
            use_cpu=True,
            report_to=[],
            optim=t["optimizer"],
            max_grad_norm=t["max_grad_norm"],
        )
        return Trainer(model=model, args=args, train_dataset=train, data_collator=default_data_collator)
    '''
)

CONFIG = textwrap.dedent(
    """
    [method]
    kind = "lora"
    [lora]
    r = 8
    dropout = 0.0
    [data]
    max_seq_len = 64
    [training]
    precision = "fp32"
    optimizer = "adamw_torch"
    micro_batch_size = 2
    gradient_checkpointing = false
    max_grad_norm = 1.0
    [checkpoints]
    output_dir = "{out}"
    """
)


def test_missing_folder_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and err.count("\n") == 1


def test_folder_without_project_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "train.py" in capsys.readouterr().err


def test_bad_steps_exit_2(tmp_path, capsys):
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "train_config.toml").write_text(CONFIG.format(out=tmp_path / "out"))
    assert main([str(tmp_path), "--steps", "0"]) == 2


def _project(tmp_path):
    """A project whose plan.json is the real planner's, for a tiny local model on an A100."""
    from ftplan.planner import make_plan, read_answers_text
    from ftplan.probe.measure import tiny_llama_config

    model_dir = tmp_path / "tiny-model"
    model_dir.mkdir()
    config = tiny_llama_config(hidden=64, layers=2, vocab=256)
    (model_dir / "config.json").write_text(json.dumps(config))
    answers = f"""
[model]
name = "{model_dir}"
[data]
examples = 100
avg_tokens = 64
max_seq_len = 64
[hardware]
gpu = "A100-80GB"
[training]
method = "lora"
precision = "fp32"
optimizer = "adamw_torch"
micro_batch_size = 2
gradient_accumulation_steps = 1
gradient_checkpointing = false
lora_r = 8
lora_alpha = 16
lora_dropout = 0.0
"""
    plan = make_plan(read_answers_text(answers)).to_json()
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "plan.json").write_text(plan)
    (proj / "train.py").write_text(FAKE_TRAIN)
    (proj / "train_config.toml").write_text(CONFIG.format(out=tmp_path / "out"))
    return proj


@pytest.mark.slow
def test_probe_a_project_json(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    proj = _project(tmp_path)
    assert main([str(proj), "--steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"predicted", "measured", "error", "tokens_per_s"}
    assert out["measured"]["total"] > 0 and out["tokens_per_s"]["measured"] > 0
    planned = json.loads((proj / "plan.json").read_text())["methods"]["lora"]["time"]["tokens_per_second"]
    assert out["tokens_per_s"]["predicted"] == planned > 0
    assert "re-estimated for the CPU" in out["predicted"]["source"]
    assert abs(out["error"]) <= 0.10, out
    assert json.loads((proj / "probe.json").read_text())["error"] == out["error"]
