"""End-to-end: export a project for the tiny model and really run it on the CPU.

Each run is a few optimizer steps; the project runs as a user would run it (`bash launch.sh`,
`python merge_adapter.py`), in a subprocess, without ftplan on the path.
"""

from __future__ import annotations

import json
import re

import pytest
from export_support import KEEP_BEST_AND_LAST, metrics, run, run_steps, set_config

from ftplan.export import export_project

pytestmark = pytest.mark.slow

TRAIN_KEYS = {"step", "loss", "lr", "tokens_per_second", "peak_memory_bytes", "epoch", "max_steps", "time"}


def export(tiny_plan, tmp_path_factory, name: str, **training):
    plan, text = tiny_plan(**training)
    out = tmp_path_factory.mktemp(name) / "project"
    export_project(plan, text, out)
    return out


def checkpoints(project) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (project / "output").glob("checkpoint-*"))


def merge_and_generate(project, monkeypatch) -> None:
    """`python merge_adapter.py`, run in this process (its imports are the slow part), then load the
    merged model and generate from it."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(project)
    spec = importlib.util.spec_from_file_location(f"merge_{project.parent.name}", project / "merge_adapter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    merged = project / "output-merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name or "token_adapter" in name for name, _ in model.named_parameters())
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    ids = tok("The quick brown fox", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 5


@pytest.fixture(scope="module")
def lora_run(tiny_plan, tmp_path_factory):
    # Two new tokens: their embedding and output rows train through peft's trainable_token_indices.
    project = export(
        tiny_plan,
        tmp_path_factory,
        "lora",
        method="lora",
        micro_batch_size=4,
        gradient_accumulation_steps=1,
        new_tokens=2,
    )
    return project, run_steps(project, steps=3, checkpoints=KEEP_BEST_AND_LAST)


def test_lora_trains_and_saves_the_adapter(lora_run):
    project, proc = lora_run
    out = project / "output"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()  # adapter only
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter["trainable_token_indices"]) == {"embed_tokens", "lm_head"}
    assert "added 2 new tokens" in proc.stdout
    lines = metrics(project)
    train = [r for r in lines if "event" not in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:
        assert set(r) == TRAIN_KEYS
        assert r["peak_memory_bytes"] > 10_000_000 and r["tokens_per_second"] > 0 and r["max_steps"] == 3
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == "ok"
    spectra = [r for r in lines if r.get("event") == "lora_spectrum"]
    assert spectra and all(m["effective_rank"] <= 8 for m in spectra[-1]["modules"].values())
    assert spectra[-1]["modules"] and max(m["effective_rank"] for m in spectra[-1]["modules"].values()) > 1
    # Best 1 by eval loss + last 1: the others were really deleted.
    kept = checkpoints(project)
    assert 3 in kept and len(kept) <= 2
    assert "removed checkpoint-" in proc.stdout


def test_resume_restores_step_and_optimizer(lora_run):
    project, _ = lora_run
    proc = run(["bash", "launch.sh", "--max-steps", "5", "--resume"], project)
    assert re.search(r"resuming from .*checkpoint-3", proc.stdout)
    final = project / "output" / "checkpoint-5"
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == 5
    import torch

    optimizer = torch.load(final / "optimizer.pt", map_location="cpu", weights_only=False)
    steps = {int(s["step"]) for s in optimizer["state"].values()}
    assert steps == {5}, steps  # 2 if the optimizer had started afresh
    resumed = [r["step"] for r in metrics(project) if "event" not in r]
    assert resumed == [1, 2, 3, 4, 5]


def test_lora_merge_makes_a_model_that_generates(lora_run, monkeypatch):
    project, _ = lora_run
    merge_and_generate(project, monkeypatch)


def test_qlora_trains_in_4bit_on_cpu_and_merges(tiny_plan, tmp_path_factory, monkeypatch):
    project = export(
        tiny_plan, tmp_path_factory, "qlora", method="qlora", micro_batch_size=4, gradient_accumulation_steps=1
    )
    proc = run(["bash", "launch.sh", "--max-steps", "2"], project)
    assert "14 linear layers in 4-bit nf4" in proc.stdout
    assert (project / "output" / "adapter_model.safetensors").is_file()
    assert metrics(project)[-1]["status"] == "ok"
    merge_and_generate(project, monkeypatch)


@pytest.mark.parametrize("stage", [3, 2])
def test_full_finetuning_under_deepspeed_on_two_cpu_processes(tiny_plan, tmp_path_factory, stage):
    project = export(
        tiny_plan,
        tmp_path_factory,
        f"zero{stage}",
        method="full",
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        gpus_per_node=2,
        zero_stage=stage,
    )
    assert json.loads((project / "ds_config.json").read_text())["zero_optimization"]["stage"] == stage
    set_config(project, "checkpoints", save_steps=1)
    run(["bash", "launch.sh", "--max-steps", "2"], project, timeout=900)
    out = project / "output"
    weights = out / "model.safetensors"
    assert weights.is_file()
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as fh:
        embed = fh.get_tensor("model.embed_tokens.weight")
    assert embed.shape[1] == 64 and embed.shape[0] >= 250  # consolidated, not a ZeRO shard
    lines = metrics(project)
    assert [r["step"] for r in lines if "event" not in r] == [1, 2]
    assert lines[-1]["status"] == "ok"
    if stage == 3:
        assert any(p.name.startswith("global_step") for p in (out / "checkpoint-2").iterdir())
