"""The train.py stages as `ftplan probe` uses them: import the module, call each stage, run one step.

Runs in a subprocess (the project's own interpreter state), with data in the alpaca, text and
chat formats and general text mixed in.
"""

from __future__ import annotations

import json

import pytest
from export_support import run, set_config

from ftplan.export import export_project

pytestmark = pytest.mark.slow

SCRIPT = r"""
import importlib.util, json, os, sys
from pathlib import Path

project = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("train", project / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
assert not (project / "output").exists(), "importing train.py did work"

cfg = train.load_config(project / "train_config.toml")
tok = train.build_tokenizer(cfg)
train_ds, eval_ds = train.build_datasets(cfg, tok)
assert train_ds.column_names == ["input_ids", "assistant_masks"] and eval_ds is not None
texts = [tok.decode(ids) for ids in train_ds["input_ids"]]
assert any("<|user|>" in t and "<|assistant|>" in t for t in texts)  # alpaca rows through the chat template
general = sum(t.startswith("General text") for t in texts)
# General text trains on every token; the alpaca rows on their outputs only.
assert all(all(m) for t, m in zip(texts, train_ds["assistant_masks"]) if t.startswith("General text"))
assert all(0 < sum(m) < len(m) for t, m in zip(texts, train_ds["assistant_masks"]) if "<|user|>" in t)
report = {"train": len(train_ds), "eval": len(eval_ds), "general": general}

# Format detection on each format.
from datasets import Dataset
for rows, fmt in (
    ([{"text": "a b"}], "text"),
    ([{"instruction": "i", "input": "", "output": "o"}], "alpaca"),
    ([{"messages": [{"role": "user", "content": "u"}]}], "messages"),
    ([{"prompt": "p", "completion": "c"}], "prompt_completion"),
):
    assert train.detect_format(Dataset.from_list(rows).column_names) == fmt

model = train.build_model(cfg, tok)
trainer = train.build_trainer(cfg, model, tok, train_ds, eval_ds, max_steps=1)
trainer.train()
report["global_step"] = trainer.state.global_step

# A failing run still ends its metrics file, with the error.
bad = project / "bad_config.toml"
bad.write_text((project / "train_config.toml").read_text().replace(str(Path(cfg["data"]["path"])), "missing.jsonl"))
try:
    train.main(["--config", str(bad), "--max-steps", "1"])
except BaseException as exc:
    report["failure"] = type(exc).__name__
lines = (project / "output" / "metrics.jsonl").read_text().splitlines()
report["last"] = json.loads(lines[-1])
print("REPORT", json.dumps(report))
"""


def test_stages_formats_and_general_mixing(tiny_plan, tmp_path):
    data = tmp_path / "alpaca.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"Say {i}", "input": "" if i % 2 else "twice", "output": f"{i} {i}"}) + "\n"
            for i in range(40)
        )
    )
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"text": f"General text number {i}."}) + "\n" for i in range(100)))
    plan, text = tiny_plan(method="full", micro_batch_size=2, gradient_accumulation_steps=1)
    project = tmp_path / "project"
    export_project(plan, text, project)
    set_config(project, "data", path=str(data), format="auto", eval_fraction=0.1, general_path="../general.jsonl")
    set_config(project, "data", general_ratio=0.2)
    proc = run(["python", "-c", SCRIPT, str(project)], project)
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    assert report["eval"] == 4
    assert report["general"] == 9  # 36 task rows * 0.2 / 0.8
    assert report["train"] == 36 + 9
    assert report["global_step"] == 1
    assert report["failure"] and report["last"]["event"] == "end" and report["last"]["status"] == "error"
