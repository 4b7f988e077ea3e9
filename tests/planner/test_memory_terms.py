"""The plan's memory terms (``methods.<m>.memory_terms``): each component's terms add up to its figure,
at the peak and at every other point of the step, and the memoised model states are the fresh ones."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from ftplan.planner import make_plan, read_answers_text
from ftplan.planner.catalog.gpus import CPU, GPUS
from ftplan.planner.device import Device
from ftplan.planner.memory import PHASES, MemoryModel
from ftplan.planner.model_states import COMPONENTS, model_states, model_states_uncached
from ftplan.planner.models import resolve_model
from ftplan.planner.settings import Settings

LLAMA_8B = "meta-llama/Llama-3.1-8B"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"


def answers(model=LLAMA_8B, gpu="A100-80GB", gpus=1, seq=2048, **training):
    rows = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in training.items()).replace("False", "false")
    text = (f'[model]\nname = "{model}"\n[data]\nexamples = 10000\navg_tokens = 1024\nmax_seq_len = {seq}\n'
            f'[hardware]\ngpu = "{gpu}"\ngpus_per_node = {gpus}\n[training]\n{rows}')  # fmt: skip
    return read_answers_text(text, "answers.toml")


PLANS = {
    "lora-1xA100": answers(),
    "moe-qlora-8xA100": answers(MIXTRAL, gpus=8, method="qlora"),
    "70b-full-zero3-8xH100": answers("meta-llama/Llama-3.1-70B", gpu="H100-SXM", gpus=8, zero_stage=3),
    "fsdp2-full-8xA100": answers(gpus=8, method="full", zero_stage=3, sharding="fsdp2"),
    "fsdp2-qlora-offload-2xL4": answers(gpu="L4", gpus=2, method="qlora", zero_stage=3, sharding="fsdp2", offload="optimizer+params"),
    "zero3-offload-4xL4": answers(gpu="L4", gpus=4, method="full", zero_stage=3, offload="optimizer+params"),
    "zero2-optimizer-offload-1xA100": answers(method="full", zero_stage=2, offload="optimizer"),
    "eager-no-checkpointing": answers("Qwen/Qwen2.5-0.5B", seq=1024, attention="eager", gradient_checkpointing=False),
    "cpu": answers("Qwen/Qwen2.5-0.5B", gpu="cpu", seq=256, method="lora"),
}  # fmt: skip


def sums(terms) -> Counter:
    found = Counter()
    for term in terms:
        found[term.component] += term.bytes
    return found


@pytest.mark.parametrize("case", sorted(PLANS))
def test_the_terms_of_each_component_add_up_to_the_plans_figure(case):
    plan = make_plan(PLANS[case])
    for method, mp in plan.methods.items():
        figures = {**mp.memory.model_dump(exclude={"total"}), "cpu_memory": mp.cpu_memory}
        found = sums(mp.memory_terms)
        assert {component: found[component] for component in figures} == figures, method
        assert all(t.component in COMPONENTS and t.bytes and t.source for t in mp.memory_terms)
        assert {t.phase for t in mp.memory_terms} <= {None, mp.memory.peak_phase}


def test_the_terms_name_the_engine_that_shards_and_what_is_offloaded():
    zero3 = make_plan(PLANS["zero3-offload-4xL4"]).methods["full"]
    assert zero3.settings.zero_stage == 3 and zero3.settings.offload == "optimizer+params"
    names = {(t.component, t.name): t for t in zero3.memory_terms}
    assert names["weights", "ZeRO-3 sharding"].source == "ZeRO-3: ÷ 4 GPUs"
    assert names["weights", "ZeRO-3 sharding"].bytes < 0 and names["weights", "offloaded to the host"].bytes < 0
    assert ("cpu_memory", "offloaded parameters") in names
    fsdp = make_plan(PLANS["fsdp2-full-8xA100"]).methods["full"]
    assert fsdp.settings.uses_fsdp
    assert any(t.name == "FSDP2 sharding" and t.source == "FSDP2: ÷ 8 GPUs" for t in fsdp.memory_terms)


def test_the_weights_term_reads_the_models_own_count():
    plan = make_plan(PLANS["lora-1xA100"])
    arch = resolve_model(LLAMA_8B).arch
    lora = plan.methods["lora"]
    base = next(t for t in lora.memory_terms if t.name == "base weights (frozen)")
    assert base.source == f"{arch.params:,} params × 2 B (bf16)" and base.bytes == 2 * arch.params
    adapters = next(t for t in lora.memory_terms if t.name == "LoRA adapters")
    assert adapters.bytes == 4 * lora.trainable_params  # peft's fp32 adapters
    layers = next(t for t in lora.memory_terms if t.component == "activations" and "layers" in t.source)
    assert layers.source.startswith(
        "traced layer + LoRA inputs: "
    )  # the catalog's Llama is planned from its traced code


SETTINGS = [
    Settings(method=m, micro_batch_size=2, max_seq_len=1024, gradient_checkpointing=c, attention=a, zero_stage=z, sharding=e)
    for m, c, a, (z, e) in itertools.product(
        ("full", "lora", "qlora"), (True, False), ("sdpa", "eager"), ((0, "deepspeed"), (2, "deepspeed"), (3, "fsdp2"))
    )
]  # fmt: skip


@pytest.mark.parametrize("accumulation", [1, 4])
@pytest.mark.parametrize("device", [Device(GPUS["A100-80GB"], 4), Device(CPU)], ids=["4xA100", "cpu"])
def test_the_terms_at_every_point_of_the_step_add_up_to_that_point(device, accumulation):
    """Not only at the peak: every point of PHASES, so a change to the phases that the terms miss fails here."""
    arch = resolve_model("Qwen/Qwen2.5-0.5B").arch
    for s in SETTINGS:
        model = MemoryModel(arch, s, device)
        for point, (g, a, t) in zip(PHASES, model.phases(model.activations.at(2, 1024), accumulation), strict=True):
            found = sums(model.phase_terms(point, 2, 1024, accumulation))
            assert (found["gradients"], found["activations"]) == (g, a), (s, point)
            assert found["optimizer"] == model.optimizer + t and found["weights"] == model.weights, (s, point)
            assert found["overhead"] == model.overhead and found["cpu_memory"] == model.cpu_memory


VARIED = {
    "method": ["full", "qlora"],
    "precision": ["fp32", "bf16-mixed"],
    "optimizer": ["adamw_8bit", "adamw_torch"],
    "zero_stage": [1, 2],
    "offload": ["optimizer"],
    "sharding": ["fsdp2"],
    "new_tokens": [64],
    "train_new_token_rows": [False],
    "lora_r": [64],
    "lora_target_modules": [["q_proj", "v_proj"]],
}


def test_the_memoised_states_are_keyed_by_every_setting_they_read():
    """Each setting changed alone, after the base settings' states are memoised, gives the fresh states;
    a setting the states read but the memo key misses would return the base's here."""
    arch = resolve_model("Qwen/Qwen2.5-0.5B").arch
    base = Settings(method="lora", zero_stage=3, new_tokens=8, train_new_token_rows=True)
    for device in (Device(GPUS["A100-80GB"], 4), Device(GPUS["A100-80GB"], 8, 2)):
        model_states(arch, base, device)
        for field, values in VARIED.items():
            for value in values:
                s = base.model_copy(update={field: value})
                assert model_states(arch, s, device).terms == model_states_uncached(arch, s, device).terms, field


class ReadSettings:
    """Settings that record which fields are read (properties count as the fields they read)."""

    DERIVED = {
        "is_peft": {"method"},
        "uses_fsdp": {"sharding", "zero_stage"},
        "uses_deepspeed": {"sharding", "zero_stage"},
    }

    def __init__(self, settings: Settings):
        self.settings, self.read = settings, set()

    def __getattr__(self, name):
        self.read |= self.DERIVED.get(name, {name})
        return getattr(self.settings, name)


def test_the_memo_key_holds_every_setting_the_states_read():
    arch = resolve_model(MIXTRAL).arch
    read = set()
    for method, (stage, engine), offload in itertools.product(
        ("full", "lora", "qlora"), ((0, "deepspeed"), (3, "deepspeed"), (3, "fsdp2")), ("none", "optimizer+params")
    ):
        s = ReadSettings(Settings(method=method, zero_stage=stage, sharding=engine, offload=offload, new_tokens=8))
        model_states_uncached(arch, s, Device(GPUS["A100-80GB"], 8, 2))
        read |= s.read
    assert read == set(VARIED)
