"""FSDP2 exported and trained: two CPU processes (gloo), full fine-tuning, LoRA and QLoRA; the saved model
loads; accelerate_config.yaml is read by accelerate's own config loader."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest
from export_support import metrics, run

from ftplan.export import export_project

pytestmark = pytest.mark.slow


def export_fsdp2(tiny_plan, tmp_path, method: str):
    plan, text = tiny_plan(method=method, micro_batch_size=2, gradient_accumulation_steps=1, gpus_per_node=2,
                           zero_stage=3, sharding="fsdp2")  # fmt: skip
    assert plan.methods[method].settings.sharding == "fsdp2"
    project = tmp_path / "project"
    export_project(plan, text, project, method=method)
    return project


def test_accelerate_reads_the_fsdp2_config(tiny_plan, tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    project = export_fsdp2(tiny_plan, tmp_path, "full")
    config = load_config_from_file(str(project / "accelerate_config.yaml"))
    assert str(config.distributed_type).endswith("FSDP") and config.num_processes == 2
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    train_config = tomllib.loads((project / "train_config.toml").read_text())
    assert train_config["training"]["sharding"] == "fsdp2" and train_config["fsdp"]["reshard_after_forward"] is True


def test_fsdp2_full_finetuning_trains_on_two_cpu_processes_and_saves_a_loadable_model(tiny_plan, tmp_path):
    project = export_fsdp2(tiny_plan, tmp_path, "full")
    # A hang (a collective one rank never joins) fails in minutes, not at pytest's end; the run takes ~30 s.
    proc = run(["bash", "launch.sh", "--max-steps", "2"], project, timeout=300)
    output = proc.stdout + proc.stderr
    # 2 decoder layers, embeddings, the [norm, lm_head] tail and the root: each rank holds half the parameters
    assert "[train] FSDP2: 6 units; this rank holds 56,224 of 112,448 parameters (float32)" in output
    lines = [r for r in metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and lines[0]["loss"] > 0
    assert (project / "output" / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()  # FSDP's own checkpoint
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(project / "output")
    assert model.get_input_embeddings().weight.shape == (300, 64)  # the gathered model, not a shard
    # With an eval split the Trainer reloads the best checkpoint on every rank (FSDP2: rank 0 reads
    # pytorch_model_fsdp.bin and broadcasts) before save_model gathers it: the result is that checkpoint.
    from safetensors.torch import load_file

    result = json.loads((project / "output" / "result.json").read_text())
    assert (result["result"], result["checkpoint"]) == ("best", "checkpoint-2")
    saved, best = (load_file(project / "output" / d / "model.safetensors") for d in (".", "checkpoint-2"))
    assert saved.keys() == best.keys() and all(saved[k].equal(best[k]) for k in saved)


def saved_adapters(project):
    """The adapter in output/, loaded onto its base with peft as a user would: its LoRA tensors."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = project / "output"
    base = AutoModelForCausalLM.from_pretrained(
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    model = PeftModel.from_pretrained(base, out)
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def test_fsdp2_lora_trains_on_two_cpu_processes_and_saves_a_loadable_adapter(tiny_plan, tmp_path):
    project = export_fsdp2(tiny_plan, tmp_path, "lora")
    proc = run(["bash", "launch.sh", "--max-steps", "2"], project, timeout=300)
    assert "[train] FSDP2: 5 units; this rank holds" in proc.stdout + proc.stderr
    lines = [r for r in metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and lines[0]["loss"] > 0
    adapters = saved_adapters(project)
    assert adapters and all(p.ndim == 2 and min(p.shape) > 0 for p in adapters.values())  # whole, not shards


def test_fsdp2_lora_resumes_from_its_checkpoint_where_an_unstopped_run_would_be(tiny_plan, tmp_path):
    """`launch.sh --resume` under FSDP2 continues a 2-step run at step 3 and ends at step 4, and its
    step 3 sees what a run never stopped sees: the same loss, so the sharded adapter weights (loaded
    on every rank from pytorch_model_fsdp.bin) and the data position came back, not a fresh start."""
    project = export_fsdp2(tiny_plan, tmp_path, "lora")
    unstopped = tmp_path / "unstopped"
    shutil.copytree(project, unstopped)
    run(["bash", "launch.sh", "--max-steps", "2"], project, timeout=300)
    assert (project / "output" / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()
    proc = run(["bash", "launch.sh", "--max-steps", "4", "--resume"], project, timeout=300)
    assert f"[train] resuming from {project / 'output' / 'checkpoint-2'}" in proc.stdout + proc.stderr
    records = metrics(project)
    ends = [i for i, r in enumerate(records) if r.get("event") == "end"]
    assert [records[i]["status"] for i in ends] == ["ok", "ok"] and records[ends[1]]["step"] == 4
    resumed = [r for r in records[ends[0] :] if "event" not in r]
    assert [r["step"] for r in resumed] == [3, 4]
    state = json.loads((project / "output" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    run(["bash", "launch.sh", "--max-steps", "4"], unstopped, timeout=300)
    reference = {r["step"]: r["loss"] for r in metrics(unstopped) if "event" not in r}
    assert sorted(reference) == [1, 2, 3, 4]
    assert resumed[0]["loss"] == pytest.approx(reference[3], rel=1e-6)


def test_fsdp2_qlora_trains_on_two_cpu_processes_and_saves_a_loadable_adapter(tiny_plan, tmp_path):
    """QLoRA under FSDP2 (bf16 quant storage, no prepare_model_for_kbit_training): the 4-bit base
    is sharded with the adapters, two steps train, and the adapter saved loads onto the base."""
    project = export_fsdp2(tiny_plan, tmp_path, "qlora")
    bnb = json.loads((project / "bnb_config.json").read_text())
    assert bnb["bnb_4bit_quant_storage"] == "bfloat16"
    proc = run(["bash", "launch.sh", "--max-steps", "2"], project, timeout=300)
    output = proc.stdout + proc.stderr
    assert "[train] 14 linear layers in 4-bit nf4" in output  # 7 per decoder layer, quantized on load
    # The sharded parameters are the 4-bit ones: the 128,832 of the LoRA model less its 73,728 linear
    # weights plus those packed two 4-bit values a byte, four to one bf16 storage element (18,432);
    # bf16 = the quant storage, fp32 = the CPU compute dtype of norms, embeddings and adapters.
    assert "[train] FSDP2: 5 units; this rank holds 36,768 of 73,536 parameters (bfloat16, float32)" in output
    lines = [r for r in metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and lines[0]["loss"] > 0
    adapters = saved_adapters(project)
    assert adapters and all(p.ndim == 2 and min(p.shape) > 0 for p in adapters.values())  # whole, not shards
    # lora_B starts at zero: non-zero after two steps means the gradients reached the adapters
    assert any(p.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n)
