"""Choose each method's settings: sound defaults, then the fastest rung of the ladder that fits.

Defaults follow the lesson (shared/seed): LR 1e-5..5e-5 for full fine-tuning and 1e-4..3e-4
for LoRA, alpha = 2 r, rank by data size, all linear layers, 3 % warmup with cosine decay.
The ladder trades speed for memory: bigger micro-batches and no recomputation first, then
activation checkpointing, ZeRO-2, ZeRO-3, optimizer offload and parameter offload. What the
user set is never changed; it only narrows the ladder.
"""

from __future__ import annotations

import math

from ftplan.planner.answers import Answers, Method
from ftplan.planner.arch import ModelArch
from ftplan.planner.memory import Device, estimate_memory, usable_memory
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import DataShape, estimate_time

TARGET_GLOBAL_SEQUENCES = 32
MICRO_BATCHES = (32, 16, 8, 4, 2, 1)
DEFAULT_EPOCHS = {"instruction": 2.0, "domain_knowledge": 1.0, "task_specific": 3.0, "new_vocabulary": 2.0}


def lora_rank_for(examples: int, objective: str) -> int:
    """The lesson's rank guide: 4-8 small/format, 16-32 standard, 64-128 large/complex."""
    if objective == "domain_knowledge" or examples > 500_000:
        return 64
    if examples < 10_000:
        return 8
    return 16


def base_settings(method: Method, answers: Answers, device: Device, data: DataShape) -> tuple[Settings, set[str]]:
    """Defaults for the method with the user's answers applied; returns the user-fixed names."""
    t = answers.training
    gpu = device.gpu
    cpu = device.is_cpu
    if cpu:
        precision, optimizer = "fp32", "adamw_torch"
    elif not gpu.bf16:
        precision, optimizer = "fp16-mixed", "adamw_torch_fused"
    else:
        precision, optimizer = "bf16", "adamw_torch_fused"
    if method == "qlora" and not cpu:
        optimizer = "paged_adamw_8bit"
    rank = lora_rank_for(data.examples, answers.objective.kind)
    narrow = answers.objective.kind in ("task_specific", "domain_knowledge")
    defaults = dict(
        method=method,
        precision=precision,
        optimizer=optimizer,
        micro_batch_size=4,
        gradient_accumulation_steps=4,
        gradient_checkpointing=True,
        attention="sdpa",
        zero_stage=0,
        offload="none",
        learning_rate=2e-5 if method == "full" else 2e-4,
        max_seq_len=answers.data.max_seq_len,
        packing=answers.data.packing,
        epochs=answers.data.epochs or DEFAULT_EPOCHS[answers.objective.kind],
        lora_r=rank,
        lora_alpha=float(2 * (t.lora_r or rank)),
        lora_dropout=0.05,
        lora_target_modules="all-linear",
        new_tokens=answers.objective.new_tokens,
        train_new_token_rows=method != "full" and answers.objective.new_tokens > 0,
        general_data_ratio=0.05 if method == "full" and narrow else 0.0,
    )
    user = {k: v for k, v in t.model_dump().items() if v is not None and k != "method"}
    fixed = set(user)
    if method == "full":
        user = {k: v for k, v in user.items() if not k.startswith("lora_")}
    defaults.update(user)
    chosen = tuple(sorted(k for k in defaults if k not in fixed and k not in ("method",)))
    return Settings(**defaults, chosen_by_planner=chosen), fixed


def _ladder(method: Method, device: Device, fixed: set[str]):
    """(checkpointing, zero_stage, offload) rungs, fastest first."""
    if device.world_size == 1:
        # ZeRO-3 on one GPU only to reach CPU offload of a full fine-tune.
        stages = [0, 3] if method == "full" and not device.is_cpu else [0]
    elif method == "full":
        stages = [0, 2, 3]
    else:
        stages = [0, 3]  # adapters are tiny: only sharding the frozen base weights helps
    rungs = []
    for stage in stages:
        offloads = ["none"] if stage == 0 else ["none", "optimizer", "optimizer+params"]
        if stage == 3 and device.world_size == 1:
            offloads = ["optimizer", "optimizer+params"]
        if stage and method != "full":
            offloads = ["none"]
        for offload in offloads:
            if offload == "optimizer+params" and stage != 3:
                continue
            for ckpt in (False, True):
                rungs.append((ckpt, stage, offload))
    return rungs


def _with(s: Settings, **changes) -> Settings:
    return s.model_copy(update=changes)


def choose_settings(method: Method, answers: Answers, arch: ModelArch, device: Device, data: DataShape) -> Settings:
    """The fastest settings that fit, by the planner's own memory and time models.

    When nothing fits, the most memory-frugal rung is returned (the plan marks it as not
    fitting and says what would).
    """
    s, fixed = base_settings(method, answers, device, data)
    limit = usable_memory(device) if not device.is_cpu else None
    best: tuple[float, Settings] | None = None
    frugal: Settings | None = None
    for ckpt, stage, offload in _ladder(method, device, fixed):
        trial = s
        if "gradient_checkpointing" not in fixed:
            trial = _with(trial, gradient_checkpointing=ckpt)
        if "zero_stage" not in fixed:
            trial = _with(trial, zero_stage=stage)
        if "offload" not in fixed:
            trial = _with(trial, offload=offload if trial.zero_stage else "none")
        sizes = [trial.micro_batch_size] if "micro_batch_size" in fixed else list(MICRO_BATCHES)
        for mb in sizes:
            candidate = _fit_batch(_with(trial, micro_batch_size=mb), fixed, device)
            if limit is None:
                fits = True
            else:
                fits = estimate_memory(arch, candidate, device).total <= limit
            frugal = candidate
            if not fits:
                continue
            seconds = estimate_time(arch, candidate, device, data).hours
            if best is None or seconds < best[0] - 1e-12:
                best = (seconds, candidate)
            break  # larger micro-batches are faster; the first that fits is this rung's best
        if limit is None:
            break
    return best[1] if best else (frugal or s)


def _fit_batch(s: Settings, fixed: set[str], device: Device) -> Settings:
    if "gradient_accumulation_steps" in fixed:
        return s
    per_step = s.micro_batch_size * device.world_size
    return _with(s, gradient_accumulation_steps=max(1, math.ceil(TARGET_GLOBAL_SEQUENCES / per_step)))


def longest_sequence_that_fits(arch: ModelArch, s: Settings, device: Device) -> int:
    """The largest max_seq_len (multiple of 256) at micro-batch 1 that fits, or 0."""
    if device.is_cpu:
        return 0
    limit = usable_memory(device)
    lo, hi = 0, 1 << 20
    one = _with(s, micro_batch_size=1)
    while hi - lo > 256:
        mid = (lo + hi) // 2 // 256 * 256 or 256
        if estimate_memory(arch, _with(one, max_seq_len=mid), device).total <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def largest_micro_batch_that_fits(arch: ModelArch, s: Settings, device: Device) -> int:
    if device.is_cpu:
        return 0
    limit = usable_memory(device)
    best, mb = 0, 1
    while mb <= 4096 and estimate_memory(arch, _with(s, micro_batch_size=mb), device).total <= limit:
        best, mb = mb, mb * 2
    return best
