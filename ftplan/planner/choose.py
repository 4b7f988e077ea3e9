"""Choose each method's settings: sound defaults, then the fastest rung of the ladder that fits.

Defaults follow common practice (the QLoRA paper, arXiv:2305.14314; peft and TRL docs): LR 1e-5..5e-5 for full fine-tuning and 1e-4..3e-4
for LoRA, alpha = 2 r, rank by data size, all linear layers, 3 % warmup with cosine decay.
The ladder trades speed for memory: bigger micro-batches and no recomputation first, then
activation checkpointing, ZeRO-2, ZeRO-3, optimizer offload and parameter offload. What the
user set is never changed; it only narrows the ladder.
"""

from __future__ import annotations

import math

from ftplan.planner.answers import Answers, Method
from ftplan.planner.arch import ModelArch
from ftplan.planner.device import Device
from ftplan.planner.memory import MemoryModel, usable_memory
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import DataShape, estimate_time

TARGET_GLOBAL_SEQUENCES = 32
OFFLOAD_COST = {"none": 0, "optimizer": 1, "optimizer+params": 2}
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
    elif method == "full":
        # fp32 master weights: pure bf16 weights lose updates below 2^-8 of a weight (lr 2e-5).
        precision, optimizer = "bf16-mixed", "adamw_torch_fused"
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


def _ladder(method: Method, world_size: int, is_cpu: bool = False):
    """DeepSpeed's (checkpointing, zero_stage, offload) rungs, fastest first."""
    if world_size == 1:
        # One GPU shards nothing: ZeRO-2 and 3 only to reach CPU offload of a full fine-tune.
        # ZeRO-2 with the optimizer offloaded is ZeRO-Offload's own single-GPU recipe; it keeps
        # the weights on the GPU, so it is faster than ZeRO-3 wherever it fits.
        stages = [0, 2, 3] if method == "full" and not is_cpu else [0]
    elif method == "full":
        stages = [0, 2, 3]
    else:
        stages = [0, 3]  # adapters are tiny: only sharding the frozen base weights helps
    rungs = []
    for stage in stages:
        offloads = ["none"] if stage == 0 else ["none", "optimizer", "optimizer+params"]
        if stage and world_size == 1:
            offloads = ["optimizer", "optimizer+params"]
        if stage and method != "full":
            offloads = ["none"]
        for offload in offloads:
            if offload == "optimizer+params" and stage != 3:
                continue
            for ckpt in (False, True):
                rungs.append((ckpt, stage, offload))
    return rungs


def _stages_for_offload(rungs, s: Settings, fixed: set[str]):
    """Rungs with at least the ZeRO stage that the user's offload needs (DeepSpeed offloads
    the optimizer from stage 2 and the parameters at stage 3) when zero_stage is left out."""
    if "offload" not in fixed or s.offload == "none" or "zero_stage" in fixed:
        return rungs
    need = 3 if s.offload == "optimizer+params" else 2
    return list(dict.fromkeys((ckpt, max(stage, need), offload) for ckpt, stage, offload in rungs))


def _fsdp2_ladder(method: Method, world_size: int, is_cpu: bool = False):
    """FSDP2's (checkpointing, zero_stage, offload) rungs, fastest first: stage 0 is plain DDP as
    for DeepSpeed; 2 keeps gathered weights until backward (full fine-tuning only), 3 reshards
    them after forward; FSDP2's only offload (CPUOffloadPolicy) moves the parameters with the
    optimizer. One GPU: stage 3 only to reach that offload."""
    if world_size == 1:
        stages = [0, 3] if method == "full" and not is_cpu else [0]
    else:
        stages = [0, 2, 3] if method == "full" else [0, 3]
    rungs = []
    for stage in stages:
        offloads = ["none"] if stage != 3 else ["none", "optimizer+params"]
        if stage == 3 and world_size == 1:
            offloads = ["optimizer+params"]
        for offload in offloads:
            for ckpt in (False, True):
                rungs.append((ckpt, stage, offload))
    return rungs


def _with(s: Settings, **changes) -> Settings:
    return s.model_copy(update=changes)


def choose_settings(
    method: Method, answers: Answers, arch: ModelArch, device: Device, data: DataShape, host_ram: int | None = None
) -> Settings:
    """The fastest settings that fit, by the planner's own memory and time models.

    When nothing fits, the most memory-frugal rung is returned (the plan marks it as not
    fitting and says what would). ``host_ram``: bytes per node a CPU-offload rung must fit in
    (None: not known, not checked).
    """
    s, fixed = base_settings(method, answers, device, data)
    if "attention" not in fixed and s.attention not in arch.attention_kernels:
        s = _with(s, attention="eager")  # the model class refuses sdpa (Gemma-2's softcapping)
    if "lora_dropout" not in fixed and s.is_peft and arch.lora_adapts_expert_tensors(s.lora_target_modules):
        s = _with(s, lora_dropout=0.0)  # peft's LoRA on fused expert tensors takes no dropout
    if device.is_cpu:
        return _cpu_settings(s, fixed)
    chosen, fits = _choose_engine(s, fixed, method, arch, device, data, host_ram)
    if s.precision == "bf16-mixed" and "precision" not in fixed and not fits:
        # The deliberate fallback (method_warnings says why): pure bf16 when mixed fits nowhere.
        pure, pure_fits = _choose_engine(_with(s, precision="bf16"), fixed, method, arch, device, data, host_ram)
        if pure_fits:
            return pure
    return chosen


def _choose_engine(
    s: Settings, fixed: set[str], method: Method, arch: ModelArch, device: Device, data: DataShape, host_ram
) -> tuple[Settings, bool]:
    """(settings, fits) under the user's engine, else DeepSpeed, else FSDP2 where ZeRO does not fit.

    DeepSpeed stays the engine wherever it fits (the plans made before FSDP2 was planned); where it
    does not, FSDP2 may (its stage-2/3 layouts keep fewer gathered buffers). Without CPU offload
    only: an offloaded plan trades days of wall clock for the GPU memory and the planner does not
    switch engines to reach one. Under torch.compile, ZeRO-3 is left out (it fails there): stage 3,
    offloaded or not, is FSDP2's.
    """
    fsdp2_ladder = _stages_for_offload(_fsdp2_ladder(method, device.world_size, device.is_cpu), s, fixed)
    if s.sharding == "fsdp2":
        return _search(arch, s, fixed, device, data, fsdp2_ladder, host_ram)
    deepspeed = _stages_for_offload(_ladder(method, device.world_size, device.is_cpu), s, fixed)
    if s.compile:  # torch.compile fails under ZeRO-3 (checks.semantic_problems): FSDP2 shards instead
        needs_zero3 = ("zero_stage" in fixed and s.zero_stage == 3) or (
            "offload" in fixed and s.offload == "optimizer+params"
        )
        deepspeed = [] if needs_zero3 else [rung for rung in deepspeed if rung[1] != 3]
    found, fits = _search(arch, s, fixed, device, data, deepspeed, host_ram)
    if fits or "sharding" in fixed:
        return found, fits
    # Offload stays DeepSpeed's, except under compile, where FSDP2's is the only one left.
    rungs = [rung for rung in fsdp2_ladder if rung[2] == "none" or s.compile]
    fsdp, fsdp_fits = _search(arch, _with(s, sharding="fsdp2"), fixed, device, data, rungs, host_ram)
    if fsdp_fits or not deepspeed:  # no DeepSpeed rung was open: FSDP2's answer, fitting or not
        return _with(fsdp, chosen_by_planner=tuple(sorted({*fsdp.chosen_by_planner, "sharding"}))), fsdp_fits
    return found, False


def _search(
    arch: ModelArch, s: Settings, fixed: set[str], device: Device, data: DataShape, rungs, host_ram: int | None
) -> tuple[Settings, bool]:
    """(the fastest rung of ``rungs`` that fits at its largest fitting micro-batch, True), or
    (the most memory-frugal rung, False) when none fits. ``host_ram``: a CPU-offload rung's
    host memory must fit in it (None: not checked)."""
    limit = usable_memory(device)
    best: tuple[float, Settings] | None = None
    frugal: tuple[Settings, int] | None = None  # the last rung tried, at its smallest micro-batch
    maxed: list[tuple[bool, int, int]] = []  # rungs that fit at the largest micro-batch
    for ckpt, stage, offload in rungs:
        rank = (ckpt, stage, OFFLOAD_COST[offload])
        if any(all(a <= b for a, b in zip(done, rank, strict=True)) for done in maxed):
            continue  # a rung no slower in every respect already fits at the largest batch
        rung = {"gradient_checkpointing": ckpt, "zero_stage": stage, "offload": offload}
        trial = _with(s, **{k: v for k, v in rung.items() if k not in fixed})
        if "offload" not in fixed and trial.offload != "none" and not trial.zero_stage:
            trial = _with(trial, offload="none")
        sizes = [trial.micro_batch_size] if "micro_batch_size" in fixed else sorted(MICRO_BATCHES)
        frugal = (trial, sizes[0])
        if best is not None:
            fastest = estimate_time(arch, _batch(trial, sizes[-1], fixed, device), device, data).hours
            if fastest >= best[0]:
                continue  # even its largest micro-batch would not be faster than the best so far
        # Larger micro-batches are faster: the largest that fits is this rung's best. Memory is
        # not monotone in it (a smaller micro-batch means accumulation, which keeps gradients
        # alive through the forward pass), so the search runs per accumulation regime.
        memory = MemoryModel(arch, trial, device)
        if host_ram is not None and memory.cpu_memory > host_ram:
            continue  # the offloaded states would not fit in the node's RAM

        def fits(mb: int, trial=trial, memory=memory) -> bool:
            accumulation = _accumulation_steps(mb, fixed, device, trial.gradient_accumulation_steps)
            return memory.peak(mb, trial.max_seq_len, accumulation) <= limit

        mb = _largest_fitting(sizes, fits, device, fixed)
        if mb is None:
            continue
        candidate = _batch(trial, mb, fixed, device)
        if mb == sizes[-1]:
            maxed.append(rank)
        seconds = estimate_time(arch, candidate, device, data).hours
        if best is None or seconds < best[0] - 1e-12:
            best = (seconds, candidate)
    if best:
        return best[1], True
    return (_batch(*frugal, fixed, device) if frugal else s), False


def _batch(trial: Settings, mb: int, fixed: set[str], device: Device) -> Settings:
    """The rung's settings at micro-batch ``mb``, with accumulation to match."""
    steps = _accumulation_steps(mb, fixed, device, trial.gradient_accumulation_steps)
    return _with(trial, micro_batch_size=mb, gradient_accumulation_steps=steps)


def _cpu_settings(s: Settings, fixed: set[str]) -> Settings:
    """A CPU plan is a smoke test of the recipe: small batches, one sequence per step."""
    changes = {"micro_batch_size": 2, "gradient_accumulation_steps": 1, "gradient_checkpointing": False}
    return _with(s, **{k: v for k, v in changes.items() if k not in fixed})


def _accumulation_steps(mb: int, fixed: set[str], device: Device, current: int) -> int:
    """Gradient accumulation that brings the global batch to the target, unless the user set it."""
    if "gradient_accumulation_steps" in fixed:
        return current
    return max(1, math.ceil(TARGET_GLOBAL_SEQUENCES / (mb * device.world_size)))


def _largest_fitting(sizes: list[int], fits, device: Device, fixed: set[str]) -> int | None:
    """The largest micro-batch that fits, by bisection within each accumulation regime.

    Memory grows with the micro-batch as long as gradient accumulation stays on (or off);
    where accumulation switches off, gradients no longer live through the forward pass and
    memory drops. So the sizes split into two monotone runs, searched largest first.
    """
    if "gradient_accumulation_steps" in fixed:
        runs = [sizes]
    else:
        no_accumulation = [mb for mb in sizes if mb * device.world_size >= TARGET_GLOBAL_SEQUENCES]
        runs = [no_accumulation, [mb for mb in sizes if mb not in no_accumulation]]
    for run in runs:
        if run:
            found = _largest(run, fits)
            if found is not None:
                return found
    return None


SEQ_STEP = 256
LONGEST_SEQ_CAP = 1 << 20
LARGEST_MICRO_BATCH_CAP = 4096


def fitting_limits(arch: ModelArch, s: Settings, device: Device, memory: MemoryModel | None = None) -> tuple[int, int]:
    """(longest max_seq_len at micro-batch 1, largest micro-batch at the plan's length) that
    fit, each 0 where none does; both at the plan's accumulation.

    Without eager attention (or SDPA's sliding-window masks), memory depends on a micro-batch's tokens (b * s) alone, so one
    search for the most tokens that fit answers both, starting from the plan's own shape.
    ``memory``: the settings' model when the caller has built it already.
    """
    if device.is_cpu:
        return 0, 0
    memory = memory or MemoryModel(arch, s, device)
    limit = usable_memory(device)
    accumulation, seq = s.gradient_accumulation_steps, s.max_seq_len
    if memory.activations.quadratic:  # s*s scores or masks: the two questions differ
        longest = _largest_by_secant(
            lambda length: memory.peak(1, length, accumulation), limit, step=SEQ_STEP, cap=LONGEST_SEQ_CAP
        )
        largest = _largest_by_secant(
            lambda mb: memory.peak(mb, seq, accumulation), limit, step=1, cap=LARGEST_MICRO_BATCH_CAP
        )
        return longest, largest
    most = _largest_by_secant(
        lambda tokens: memory.peak(1, tokens, accumulation),
        limit,
        step=1,
        cap=max(LONGEST_SEQ_CAP, LARGEST_MICRO_BATCH_CAP * seq),
        start=s.micro_batch_size * seq,
    )
    return min(most // SEQ_STEP * SEQ_STEP, LONGEST_SEQ_CAP), min(most // seq, LARGEST_MICRO_BATCH_CAP)


def most_frugal(method: Method, answers: Answers, s: Settings, device: Device, data: DataShape) -> Settings:
    """``s`` at the method's most memory-frugal rung: checkpointing, sharding and offload as
    far as its ladder goes, whatever the user fixed kept.

    The plan's "longest sequence that fits" is asked of these settings, so the three methods
    are compared as methods, not as settings: full planned with checkpointing against LoRA
    planned without told the reader full fits longer sequences (28,160 vs 5,888 on an A100).
    """
    if device.is_cpu:
        return s
    _, fixed = base_settings(method, answers, device, data)
    ladder = _fsdp2_ladder if s.uses_fsdp else _ladder
    ckpt, stage, offload = ladder(method, device.world_size, device.is_cpu)[-1]
    rung = {"gradient_checkpointing": ckpt, "zero_stage": stage, "offload": offload}
    frugal = _with(s, **{k: v for k, v in rung.items() if k not in fixed})
    if "offload" not in fixed and frugal.offload != "none" and not frugal.zero_stage:
        frugal = _with(frugal, offload="none")
    return frugal


def next_rung(s: Settings, world_size: int) -> tuple[dict[str, object], str]:
    """(answers changes by dotted key, why) for the next memory-saving step beyond ``s``, in the
    ladder's own order (the README's): micro-batch, activation checkpointing, then the engine's
    rungs as ``choose_settings`` walks them, FSDP2 where it keeps less than ZeRO-3, QLoRA, and
    last a shorter sequence. ``ftplan launch`` answers an out-of-memory with it."""
    if s.micro_batch_size > 1:
        half = s.micro_batch_size // 2
        return {
            "training.micro_batch_size": half,
            "training.gradient_accumulation_steps": s.gradient_accumulation_steps * 2,
        }, (
            f"half the micro-batch ({s.micro_batch_size} -> {half}) halves the activations; "
            "twice the accumulation keeps the global batch"
        )
    if not s.gradient_checkpointing:
        return {"training.gradient_checkpointing": True}, (
            "activation checkpointing recomputes activations in the backward pass: far less memory, about a third more compute"
        )
    switch = _fsdp2_switch(s)
    if switch is not None:
        return switch
    engine = _next_engine_rung(s, world_size)
    if engine is not None:
        return engine
    if s.method != "qlora":
        return {"training.method": "qlora"}, "QLoRA stores the frozen base weights in 4 bits"
    return {"data.max_seq_len": max(16, s.max_seq_len // 2)}, (
        "every rung of the ladder is taken; shorter sequences are what is left (or more GPUs)"
    )


ENGINE_RUNG_WHY = {
    ("deepspeed", 2, "none"): "ZeRO-2 shards gradients and optimizer states across the GPUs",
    ("deepspeed", 3, "none"): "ZeRO-3 also shards the weights across the GPUs",
    ("deepspeed", 3, "optimizer"): "DeepSpeed CPU offload moves the optimizer states to host memory",
    ("deepspeed", 3, "optimizer+params"): "offloading the parameters too leaves only the working layers on the GPU",
    ("fsdp2", 2, "none"): "FSDP2 at stage 2 shards gradients and optimizer states",
    ("fsdp2", 3, "none"): "FSDP2 at stage 3 reshards the weights after each layer's forward",
    ("fsdp2", 3, "optimizer+params"): (
        "FSDP2's CPU offload keeps the sharded parameters, gradients and optimizer states in host memory"
    ),
}


def _next_engine_rung(s: Settings, world_size: int) -> tuple[dict[str, object], str] | None:
    """The next (zero_stage, offload) of the engine's ladder: more sharding before any offload
    (offload costs far more time), never a lower stage than the current one."""
    ladder = _fsdp2_ladder if s.sharding == "fsdp2" else _ladder
    here = (OFFLOAD_COST[s.offload], s.zero_stage)
    rungs = sorted({(OFFLOAD_COST[offload], stage, offload) for _, stage, offload in ladder(s.method, world_size)})
    for cost, stage, offload in rungs:
        if (cost, stage) > here and stage >= s.zero_stage:
            changes: dict[str, object] = {"training.zero_stage": stage}
            if offload != s.offload:
                changes["training.offload"] = offload
            return changes, ENGINE_RUNG_WHY[(s.sharding, stage, offload)]
    return None


def _fsdp2_switch(s: Settings) -> tuple[dict[str, object], str] | None:
    """FSDP2 where it keeps less than ZeRO-3 without offload does (bf16 full fine-tuning: no
    fp32 master weights; QLoRA: no fp32 upcasts), as ``choose_settings`` switches engines."""
    if s.sharding != "deepspeed" or s.zero_stage != 3 or s.offload != "none":
        return None
    if s.method == "full" and s.precision == "bf16":
        return {"training.sharding": "fsdp2"}, (
            "FSDP2 keeps the bf16 parameters without DeepSpeed's fp32 master weights: 8 bytes per parameter, not 16"
        )
    if s.method == "qlora":
        return {"training.sharding": "fsdp2"}, (
            "QLoRA under FSDP2 keeps norms, embeddings and activations in bf16 (ZeRO-3 runs them in fp32)"
        )
    return None


def longest_sequence_that_fits(arch: ModelArch, s: Settings, device: Device) -> int:
    """The largest max_seq_len (multiple of 256) at micro-batch 1 that fits, or 0."""
    return fitting_limits(arch, s, device)[0]


def largest_micro_batch_that_fits(arch: ModelArch, s: Settings, device: Device) -> int:
    """The largest micro-batch (at the plan's sequence length) that fits, or 0."""
    return fitting_limits(arch, s, device)[1]


def _largest_by_secant(memory, limit: int, step: int, cap: int, start: int = 0) -> int:
    """The largest multiple of ``step`` up to ``cap`` whose ``memory`` is within ``limit``, or 0.

    Memory is a maximum of affine (or, with eager attention, quadratic) phases of the
    argument, so a secant through two points past the loss tile's kink lands on the answer;
    a bisection between the proven bounds finishes it whatever the shape. ``start`` (the
    plan's own shape, which usually fits) puts the first two points near the answer.
    """
    hi = cap + step  # the smallest value known not to fit
    xa = max(step, min(start, cap) // step * step)
    ma = memory(xa)
    if ma > limit:
        if xa == step:
            return 0
        hi, xa = xa, step
        ma = memory(xa)
        if ma > limit:
            return 0
    lo = xa
    if hi - lo <= step:
        return min(lo, cap)
    xb = min(2 * xa, hi - step)
    mb = memory(xb)
    if mb <= limit:
        lo = xb
    else:
        hi = xb
    for _ in range(4):
        if hi - lo <= step:
            return min(lo, cap)
        slope = max(mb - ma, 1) / (xb - xa)
        guess = int(xb + (limit - mb) / slope) // step * step
        guess = min(max(guess, lo + step), hi - step)
        mg = memory(guess)
        if mg <= limit:
            lo = guess
            if guess + step >= hi or memory(guess + step) > limit:
                return min(guess, cap)
            lo = guess + step
        else:
            hi = guess
        xa, ma, xb, mb = xb, mb, guess, mg
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if memory(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return min(lo, cap)


def _largest(values: list[int], fits) -> int | None:
    """The largest of ascending ``values`` for which the monotone ``fits`` holds."""
    lo, hi = 0, len(values) - 1
    if fits(values[-1]):
        return values[-1]
    if not fits(values[0]):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(values[mid]):
            lo = mid
        else:
            hi = mid - 1
    return values[lo]
