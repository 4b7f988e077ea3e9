"""FSDP2 as a sharding engine: the model states it keeps, the planner's choice and its reason,
the ladder's rungs and the OOM advice."""

from __future__ import annotations

from ftplan.planner import make_plan, read_answers_text
from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.device import Device
from ftplan.planner.memory import MemoryModel
from ftplan.planner.model_states import FSDP_GATHERED_UNITS, trainable_params
from ftplan.planner.models import resolve_model
from ftplan.planner.settings import Settings

LLAMA_8B = "meta-llama/Llama-3.1-8B"


def answers(model=LLAMA_8B, gpu="A100-80GB", gpus=8, seq=2048, **training):
    rows = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in training.items())
    rows = rows.replace("True", "true").replace("False", "false")
    text = (f'[model]\nname = "{model}"\n[data]\nexamples = 10000\navg_tokens = 1024\nmax_seq_len = {seq}\n'
            f'[hardware]\ngpu = "{gpu}"\ngpus_per_node = {gpus}\n[training]\n{rows}')  # fmt: skip
    return read_answers_text(text, "answers.toml")


def states(arch: ModelArch, s: Settings, world: int):
    return MemoryModel(arch, s, Device(GPUS["A100-80GB"], world, 1))


def test_bf16_full_finetune_keeps_8_bytes_per_parameter_sharded():
    arch = resolve_model(LLAMA_8B).arch
    s = Settings(method="full", precision="bf16", zero_stage=3, sharding="fsdp2", optimizer="adamw_torch_fused")
    m = states(arch, s, 8)
    p = trainable_params(arch, s)
    assert m.gradients == 2 * p // 8 and m.optimizer == 4 * p // 8  # bf16 grads, bf16 AdamW moments
    gathered = FSDP_GATHERED_UNITS * arch.largest_layer_params * 2 + arch.lm_head_params * 2
    assert m.weights == 2 * arch.params // 8 + gathered
    ds = states(arch, s.model_copy(update={"sharding": "deepspeed"}), 8)
    assert ds.optimizer == 12 * p // 8  # DeepSpeed: fp32 master + moments
    mixed = states(arch, s.model_copy(update={"precision": "bf16-mixed"}), 8)
    assert mixed.optimizer == 8 * p // 8 and mixed.gradients == 4 * p // 8  # fp32 shards under MixedPrecisionPolicy


def test_stage_2_keeps_the_gathered_model_and_offload_moves_shards_to_the_host():
    arch = resolve_model(LLAMA_8B).arch
    s = Settings(method="full", precision="bf16", zero_stage=3, sharding="fsdp2")
    three, two = states(arch, s, 8), states(arch, s.model_copy(update={"zero_stage": 2}), 8)
    # every unit stays gathered from its forward to its backward (less the units stage 3 gathers at a time)
    assert two.weights - three.weights > 2 * arch.params - (FSDP_GATHERED_UNITS + 1) * 2 * arch.largest_layer_params
    off = states(arch, s.model_copy(update={"offload": "optimizer+params"}), 8)
    assert off.optimizer == 0 and off.gradients == 0 and off.weights < three.weights
    assert off.cpu_memory >= (three.weights - (off.weights)) * 8  # shards of the 8 GPUs of the node


def test_sharded_qlora_keeps_16_bit_non_quantized_weights_and_activations():
    arch = resolve_model("meta-llama/Llama-3.1-70B").arch
    s = Settings(method="qlora", precision="bf16", zero_stage=3, optimizer="paged_adamw_8bit", max_seq_len=4096)
    ds, fsdp = states(arch, s, 2), states(arch, s.model_copy(update={"sharding": "fsdp2"}), 2)
    assert fsdp.activations.e == 2 and ds.activations.e == 4
    rest = arch.params - arch.quantizable_params
    assert ds.weights - fsdp.weights > rest * 2 // 2 * 0.9  # fp32 upcasts skipped: 2 B less per parameter, sharded
    assert fsdp.peak(1, 4096, 1) < ds.peak(1, 4096, 1)


def test_default_plans_stay_deepspeed_and_fsdp2_is_chosen_where_zero_does_not_fit():
    fits_anyway = make_plan(answers(gpus=8)).methods["full"]
    assert fits_anyway.settings.sharding == "deepspeed" and fits_anyway.fits
    qlora = make_plan(answers("meta-llama/Llama-3.1-70B", gpu="L4", gpus=8, seq=4096)).methods["qlora"]
    assert qlora.fits and qlora.settings.sharding == "fsdp2" and qlora.settings.zero_stage == 3
    assert "sharding" in qlora.settings.chosen_by_planner
    assert any(w.startswith("sharding: FSDP2 chosen because DeepSpeed ZeRO does not fit") for w in qlora.warnings)


def test_fsdp2_asked_for_plans_on_its_own_ladder():
    plan = make_plan(answers("meta-llama/Llama-3.1-70B", gpus=8, sharding="fsdp2")).methods["full"]
    s = plan.settings
    assert s.sharding == "fsdp2" and s.zero_stage in (2, 3) and s.offload in ("none", "optimizer+params")
    assert "sharding" not in s.chosen_by_planner
    one = make_plan(answers("meta-llama/Llama-3.1-70B", gpus=1, sharding="fsdp2")).methods["full"]
    assert one.settings.zero_stage == 3 and one.settings.offload == "optimizer+params"
    assert one.cpu_memory > 2 * resolve_model("meta-llama/Llama-3.1-70B").arch.params  # shards on the host
    slower = make_plan(answers("meta-llama/Llama-3.1-70B", gpus=8, sharding="fsdp2", zero_stage=3, offload="none",
                               micro_batch_size=1)).methods["full"]  # fmt: skip
    assert slower.time.tokens_per_second < make_plan(answers(gpus=8, sharding="fsdp2", zero_stage=3)).methods[
        "full"].time.tokens_per_second  # fmt: skip


def test_oom_advice_has_fsdp2_rungs(tmp_path):
    import json

    from ftplan.failures import next_rung
    from ftplan.project import load_project

    def project(name, **settings):
        plan = make_plan(answers(gpus=8, gradient_checkpointing=True, micro_batch_size=1, **settings))
        root = tmp_path / name
        root.mkdir()
        (root / "plan.json").write_text(plan.to_json())
        (root / "train_config.toml").write_text('[method]\nkind = "full"\n[training]\ndeepspeed = ""\n')
        (root / "train.py").write_text("")
        return load_project(root)

    lines, why = next_rung(project("ds", zero_stage=3, offload="none", precision="bf16"))
    assert lines == ['training.sharding = "fsdp2"'] and "fp32 master" in why
    lines, _ = next_rung(project("fsdp2", zero_stage=2, sharding="fsdp2"))
    assert lines == ["training.zero_stage = 3"]
    lines, _ = next_rung(project("fsdp3", zero_stage=3, sharding="fsdp2", offload="none"))
    assert lines == ["training.zero_stage = 3", 'training.offload = "optimizer+params"']
    assert (
        json.loads((tmp_path / "fsdp3" / "plan.json").read_text())["methods"]["full"]["settings"]["sharding"] == "fsdp2"
    )


def test_the_oom_ladder_walks_the_readme_order():
    """``next_rung`` applied again and again takes the README's rungs in order, each once: micro-batch,
    checkpointing, ZeRO-2, ZeRO-3, offload of the optimizer, then of the parameters, QLoRA, then
    shorter sequences. The launcher's out-of-memory advice is this function (no second ladder)."""
    from ftplan.planner.choose import next_rung
    from ftplan.planner.settings import Settings

    keys = {"training.micro_batch_size": "micro_batch_size", "training.gradient_accumulation_steps":
            "gradient_accumulation_steps", "training.gradient_checkpointing": "gradient_checkpointing",
            "training.zero_stage": "zero_stage", "training.offload": "offload", "training.method": "method",
            "training.sharding": "sharding", "data.max_seq_len": "max_seq_len"}  # fmt: skip
    s = Settings(method="full", precision="bf16-mixed", micro_batch_size=4, gradient_checkpointing=False)
    walked = []
    for _ in range(10):
        changes, _why = next_rung(s, world_size=8)
        walked.append(changes)
        s = s.model_copy(update={keys[k]: v for k, v in changes.items()})
    assert walked[:9] == [
        {"training.micro_batch_size": 2, "training.gradient_accumulation_steps": 2},
        {"training.micro_batch_size": 1, "training.gradient_accumulation_steps": 4},
        {"training.gradient_checkpointing": True},
        {"training.zero_stage": 2},
        {"training.zero_stage": 3},
        {"training.zero_stage": 3, "training.offload": "optimizer"},
        {"training.zero_stage": 3, "training.offload": "optimizer+params"},
        {"training.method": "qlora"},
        {"data.max_seq_len": 1024},
    ]
    assert walked[9] == {"data.max_seq_len": 512}
