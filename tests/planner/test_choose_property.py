"""Auto-chosen settings fit whenever any rung of the ladder fits, and are the fastest that do."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.planner import read_answers_text
from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.catalog.models import MODEL_CONFIGS
from ftplan.planner.choose import (
    MICRO_BATCHES,
    _batch,
    _fsdp2_ladder,
    _ladder,
    _with,
    base_settings,
    choose_settings,
)
from ftplan.planner.device import Device
from ftplan.planner.memory import estimate_memory, usable_memory
from ftplan.planner.models import resolve_model
from ftplan.planner.timecost import DataShape, estimate_time

PLANNING_CASES = dict(
    model=st.sampled_from(sorted(MODEL_CONFIGS)),
    gpu=st.sampled_from(sorted(GPUS)),
    gpus=st.sampled_from([1, 2, 8]),
    seq=st.sampled_from([512, 2048, 8192, 32768]),
    method=st.sampled_from(["full", "lora", "qlora"]),
)
"""What the settings search is tried on: every catalog model and GPU, 1 to 8 GPUs, short to long
sequences, each method."""


def planning_case(model, gpu, gpus, seq):
    """The answers, architecture, device and data shape of one drawn case."""
    answers = read_answers_text(
        f'[model]\nname = "{model}"\n[hardware]\ngpu = "{gpu}"\ngpus_per_node = {gpus}\n[data]\nmax_seq_len = {seq}\n'
    )
    return answers, resolve_model(model).arch, Device(GPUS[gpu], gpus, 1), DataShape(10_000, min(seq, 600))


def starting_settings(method, answers, arch, device, data):
    """The search's starting settings and the fields the answers fix, with eager attention where the
    model class refuses sdpa (Gemma-2)."""
    s, fixed = base_settings(method, answers, device, data)
    return (s if s.attention in arch.attention_kernels else _with(s, attention="eager")), fixed


def exhaustive(method, answers, arch, device, data):
    """Every rung x every micro-batch: (hours, settings) of those that fit. DeepSpeed's ladder first;
    where none of its rungs fits, FSDP2's rungs without offload (the planner's engine choice)."""
    s, fixed = starting_settings(method, answers, arch, device, data)
    fitting = _engines(s, fixed, method, arch, device, data)
    if not fitting and s.precision == "bf16-mixed":
        fitting = _engines(_with(s, precision="bf16"), fixed, method, arch, device, data)  # the pure-bf16 fallback
    return fitting


def _engines(s, fixed, method, arch, device, data):
    fitting = _exhaustive(s, fixed, _ladder(method, device.world_size, device.is_cpu), arch, device, data)
    if not fitting:
        rungs = [rung for rung in _fsdp2_ladder(method, device.world_size, device.is_cpu) if rung[2] == "none"]
        fitting = _exhaustive(_with(s, sharding="fsdp2"), fixed, rungs, arch, device, data)
    return fitting


def _exhaustive(s, fixed, rungs, arch, device, data):
    fitting = []
    for ckpt, stage, offload in rungs:
        trial = _with(s, gradient_checkpointing=ckpt, zero_stage=stage, offload=offload if stage else "none")
        for mb in MICRO_BATCHES:
            candidate = _batch(trial, mb, fixed, device)
            if estimate_memory(arch, candidate, device).total <= usable_memory(device):
                fitting.append((estimate_time(arch, candidate, device, data).hours, candidate))
    return fitting


@settings(max_examples=150, deadline=None)
@given(**PLANNING_CASES)
def test_chosen_settings_fit_when_any_would_and_are_fastest(model, gpu, gpus, seq, method):
    answers, arch, device, data = planning_case(model, gpu, gpus, seq)
    chosen = choose_settings(method, answers, arch, device, data)
    fitting = exhaustive(method, answers, arch, device, data)
    chosen_fits = estimate_memory(arch, chosen, device).total <= usable_memory(device)
    assert chosen_fits == bool(fitting)
    if fitting:
        fastest = min(hours for hours, _ in fitting)
        assert estimate_time(arch, chosen, device, data).hours <= fastest * (1 + 1e-9)


@settings(max_examples=80, deadline=None)
@given(
    model=st.sampled_from(sorted(MODEL_CONFIGS)),
    gpu=st.sampled_from(sorted(GPUS)),
    method=st.sampled_from(["full", "lora", "qlora"]),
    attention=st.sampled_from(["sdpa", "eager"]),
)
def test_longest_sequence_and_largest_batch_are_exact(model, gpu, method, attention):
    from ftplan.planner.choose import largest_micro_batch_that_fits, longest_sequence_that_fits

    arch = resolve_model(model).arch
    device = Device(GPUS[gpu], 1, 1)
    s = base_settings(method, read_answers_text(f'[model]\nname = "{model}"\n'), device, DataShape(1000, 500))[0]
    s = _with(s, attention=attention, micro_batch_size=1)
    limit = usable_memory(device)

    def fits(**changes):
        return estimate_memory(arch, _with(s, **changes), device).total <= limit

    longest = longest_sequence_that_fits(arch, s, device)
    if longest:
        assert fits(max_seq_len=longest) and (longest >= 1 << 20 or not fits(max_seq_len=longest + 256))
    else:
        assert not fits(max_seq_len=256)
    largest = largest_micro_batch_that_fits(arch, s, device)
    if largest:
        assert fits(micro_batch_size=largest) and (largest >= 4096 or not fits(micro_batch_size=largest + 1))
    else:
        assert not fits(micro_batch_size=1)


def engine_rules_space(world_size: int, method: str):
    """Every (sharding, checkpointing, zero_stage, offload) the engines themselves accept, written from
    their documentation rather than from the planner's ladders: DeepSpeed runs stages 0-3 and offloads
    the optimizer from stage 1, the parameters only at stage 3; FSDP2 shards at stage 2
    (reshard_after_forward=False) or 3, and its one CPUOffloadPolicy moves parameters and optimizer
    together; sharding a single process only makes sense to reach an offload. One rule is the
    planner's own, stated here on purpose: it does not switch to FSDP2 to reach a CPU offload, and
    it never offloads an adapter run, and shards one at stage 3 (the frozen base) or not at all, and
    not on a single GPU (QLoRA is its answer there)."""
    space = []
    adapter_stages = (0, 3) if world_size > 1 else (0,)
    for ckpt in (False, True):
        for stage in (0, 1, 2, 3):
            for offload in ("none", "optimizer", "optimizer+params"):
                if offload == "optimizer+params" and stage != 3 or offload != "none" and stage == 0:
                    continue
                if method != "full" and (offload != "none" or stage not in adapter_stages):
                    continue
                if world_size == 1 and stage and offload == "none":
                    continue
                space.append(("deepspeed", ckpt, stage, offload))
        for stage in (0, 2, 3):
            if (stage == 0 or world_size > 1) and (method == "full" or stage in adapter_stages):
                space.append(("fsdp2", ckpt, stage, "none"))
    return space


@settings(max_examples=300, deadline=None)
@given(**PLANNING_CASES)
def test_chosen_settings_fit_whenever_any_engine_configuration_fits_and_are_its_fastest(model, gpu, gpus, seq, method):
    """An oracle independent of the ladders: if any configuration the engines accept fits, in either
    precision the planner may fall back to, the chosen settings fit (a dropped rung fails here)."""
    answers, arch, device, data = planning_case(model, gpu, gpus, seq)
    s, fixed = starting_settings(method, answers, arch, device, data)
    precisions = {s.precision, "bf16"} if s.precision == "bf16-mixed" else {s.precision}
    limit = usable_memory(device)
    fitting = []  # (sharding, precision, hours) of every accepted configuration that fits
    for p in precisions:
        for eng, ckpt, stage, off in engine_rules_space(gpus, method):
            for mb in MICRO_BATCHES:
                trial = _with(s, precision=p, sharding=eng, gradient_checkpointing=ckpt, zero_stage=stage, offload=off)
                trial = _batch(trial, mb, fixed, device)
                if estimate_memory(arch, trial, device).total <= limit:
                    fitting.append((eng, p, estimate_time(arch, trial, device, data).hours))
    chosen = choose_settings(method, answers, arch, device, data)
    assert (estimate_memory(arch, chosen, device).total <= limit) == bool(fitting), chosen
    same_engine = [h for eng, p, h in fitting if eng == chosen.sharding and p == chosen.precision]
    if fitting:  # the fastest of its engine and precision (which engine is the planner's policy)
        assert estimate_time(arch, chosen, device, data).hours <= min(same_engine) * (1 + 1e-9)
