"""Published GPU measurements (docs/sources.md, "Published measurements") next to the planner's prediction.

One table, one row per measured run: the settings the run used (sharding, loss, attention,
checkpointing, GPUs), what was measured (peak memory and/or tokens/s) and what kind of figure it
is. Where the source does not say (sequence lengths of an unpacked dataset, the optimizer) the
assumption is in ``note``.

Like is compared with like: ``figure`` says what the memory number counts, and
``predicted_memory`` takes the matching part of the planner's estimate (allocated: without the
CUDA context and workspaces; reserved: the allocator's pool, i.e. without the context outside
it; nvidia-smi: everything). ``calibration`` marks the rows the time model's constants were
chosen on; the others are held apart and reported separately, so the held-apart errors say how
well the model carries to runs it was not tuned on. The memory model is fitted to none of them
(it is built from CPU MemTracker steps, ``ftplan/probe/calibration.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GB = 10**9
GIB = 2**30
QV = ["q_proj", "v_proj"]
ATTN_MLP = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
# The CUDA context lives outside torch's caching allocator (~500 MiB on Ampere/Hopper with lazy
# module loading, the figure ftplan/planner/memory.py's CUDA_OVERHEAD starts from); cuBLAS
# workspaces and NCCL buffers are allocated through it and so count in "reserved".
CUDA_CONTEXT = GIB // 2

Figure = Literal["allocated", "reserved", "nvidia-smi"]


@dataclass(frozen=True)
class Reference:
    setup: str
    model: str
    gpu: str
    settings: dict
    source: str
    gpus: int = 1
    measured_gb: float = 0.0
    """Peak memory as published (0: not measured), per GPU unless ``per_gpu`` is False."""
    figure: Figure = "allocated"
    per_gpu: bool = True
    measured_tokens_per_s: float = 0.0
    """Training tokens per second per GPU as published (0: not measured)."""
    time_seq_len: int = 0
    """Tokens per sequence that set the throughput: the dataset's mean for a length-bucketed
    unpacked run (tokens/s then counts real tokens); 0 = ``max_seq_len`` (packed)."""
    calibration: bool = False
    """True: the time model's constants were chosen with this row in view."""
    note: str = ""
    kind: str = "peak"
    """"peak": compare peak memory; "max_seq": compare the longest sequence that fits (tokens)."""
    measured_tokens: int = 0
    extra: dict = field(default_factory=dict)


def _settings(**overrides) -> dict:
    """A row's settings: the keys it states over the defaults of a plain bf16 run."""
    return dict(overrides)


UNSLOTH_QLORA = _settings(
    method="qlora",
    lora_r=32,
    micro_batch_size=1,
    gradient_checkpointing=True,
    attention="flash_attention_2",
    optimizer="adamw_8bit",
    lora_dropout=0.0,
    loss="full_logits",
)
"""unsloth's longest-sequence benchmark setup (README, Jan 2025), on a 24 GB and an 80 GB GPU."""

# huggingface/peft method_comparison/MetaMathQA: Llama-3.2-3B on one L40S, plain torch loop, bf16
# weights and AdamW, batch 4, truncation 768, no checkpointing, SDPA, the model's own loss,
# batches bucketed by length; "train total tokens" / "train samples" = 210 tokens per example.
PEFT_SHAPE = dict(micro_batch_size=4, max_seq_len=768, gradient_checkpointing=False)
PEFT_BENCH = dict(PEFT_SHAPE, loss="full_logits", optimizer="adamw_torch", lora_dropout=0.0)
PEFT_SOURCE = "huggingface/peft method_comparison/MetaMathQA/results/{} (max reserved, whole run)"
PEFT_NOTE = "peak at the longest batch (4 x 768) assumed; tokens/s at the 210-token mean"
# (setup, settings over PEFT_BENCH, result file @ commit, max reserved GB, tokens/s, calibration)
PEFT_BENCH_RUNS = (
    (
        "LoRA r32 q,v",
        dict(method="lora", lora_r=32, lora_target_modules=QV),
        "lora--llama-3.2-3B-rank32.json @0a179c1",
        22.27,
        6770,
        True,
    ),
    (
        "LoRA r64 q,v",
        dict(method="lora", lora_r=64, lora_target_modules=QV),
        "lora--llama-3.2-3B-rank64.json @18e07f1",
        22.54,
        6660,
        False,
    ),
    (
        "LoRA r10 MLP",
        dict(method="lora", lora_r=10, lora_target_modules=MLP),
        "lora--llama-3.2-3B-rank10-target-mlp.json @1948110",
        24.71,
        5770,
        False,
    ),
    (
        "full, bf16 weights+AdamW",
        dict(method="full"),
        "full-finetuning--llama-3.2-3B-lr_0.00001.json @0a179c1",
        37.24,
        2310,
        True,
    ),
)


def _peft_bench_reference(setup, settings, result_file, gb, tokens_per_s, calibration):
    return Reference(
        f"Llama-3.2-3B {setup} b4 s<=768 no ckpt, 1x L40S",
        "meta-llama/Llama-3.2-3B",
        "L40S",
        _settings(**settings, **PEFT_BENCH),
        PEFT_SOURCE.format(result_file),
        measured_gb=gb,
        figure="reserved",
        measured_tokens_per_s=tokens_per_s,
        time_seq_len=210,
        calibration=calibration,
        note=PEFT_NOTE,
    )


# torchtune README "optimization flags": Llama-3.2-3B on one A100, b2, s4096 packed.
TORCHTUNE_FLAGS = dict(micro_batch_size=2, max_seq_len=4096)
# Its rows are cumulative: the model's own loss until "+ Chunked Cross Entropy", a 16-bit AdamW
# until "+ 8-bit AdamW" (LoRA and QLoRA: AdamW, compile, chunked CE, checkpointing). The AdamW is
# assumed fused, as torchtune's Llama-3.2 configs set it (recipes/configs/llama3_2/3B_full.yaml,
# 3B_lora_single_device.yaml: LoRA r64 alpha 128 on q, v, output and the MLP, dropout 0).
# (setup, settings, tokens/s, calibration, note)
TORCHTUNE_FULL = dict(method="full", optimizer="adamw_torch_fused", **TORCHTUNE_FLAGS)
TORCHTUNE_LORA = dict(lora_r=64, lora_alpha=128.0, lora_dropout=0.0, lora_target_modules=ATTN_MLP, compile=True)
TORCHTUNE_RUNS = (
    (
        "full, bf16 AdamW, packed, no ckpt",
        dict(gradient_checkpointing=False, loss="full_logits"),
        7075,
        True,
        "the time model's BASE_EFFICIENCY",
    ),
    (
        "full, + compile",
        dict(gradient_checkpointing=False, loss="full_logits", compile=True),
        8998,
        True,
        "COMPILED_EFFICIENCY",
    ),
    ("full, + compile + chunked CE", dict(gradient_checkpointing=False, compile=True), 9174, False, ""),
    ("full, + compile + chunked CE + ckpt", dict(compile=True), 7210, False, ""),
    (
        "LoRA r64 attn+MLP, compile + chunked CE + ckpt",
        dict(method="lora", **TORCHTUNE_LORA),
        8210,
        False,
        "activation offloading on (the full rows: -0.1 % tokens/s)",
    ),
    (
        "QLoRA r64 attn+MLP, compile + chunked CE + ckpt",
        dict(method="qlora", **TORCHTUNE_LORA),
        8035,
        False,
        "torchtune's NF4 tensors, planned as bitsandbytes'",
    ),
)


def _torchtune_reference(setup, settings, tokens_per_s, calibration, note):
    return Reference(
        f"Llama-3.2-3B {setup}, b2 s4096, 1x A100",
        "meta-llama/Llama-3.2-3B",
        "A100-80GB",
        _settings(**{**TORCHTUNE_FULL, **settings}),
        "torchtune README, optimization flags",
        measured_tokens_per_s=tokens_per_s,
        calibration=calibration,
        note=note,
    )


# AnswerDotAI/fsdp_qlora benchmarks_03_2024.md: its train.py on 1,024 dummy samples of 2,048
# tokens (time for all of them, so tokens/s per GPU = 1024 * 2048 / time / GPUs), reentrant
# checkpointing, FSDP1 full shard ("DDP": a full copy per GPU). train.py's defaults assumed
# where the note does not state them: LoRA r64 on all linear layers, AdamW, SDPA, bf16.
FSDP_QLORA_SOURCE = "AnswerDotAI/fsdp_qlora benchmarks_03_2024.md"
FSDP_QLORA_NOTE = "train.py defaults assumed (LoRA r64 all linear, AdamW, SDPA); FSDP1 planned as FSDP2"
# Why rows of this source stay outside the goals, by GPU and by engine.
FSDP_QLORA_OUTSIDE = {
    "H100-SXM": "tokens/s: 43 % of the H100's MAMF here (eager FSDP1 + bitsandbytes, early 2024; compute-bound, "
    "the source says: batch 12 and LoRA ran no faster) against the A100-derived 0.63; the only H100 throughput row",
    "FSDP": "memory: FSDP1 (flat-parameter buffers, and frees delayed by record_stream, which raise its reserved "
    "peak: torch docs, fully_shard), planned as FSDP2's per-parameter shards",
}
SAMPLES_X_TOKENS = 1024 * 2048
# (model, method, GPU, GPUs, sharded, micro-batch, accumulation, seconds, peak GiB reserved, calibration)
FSDP_QLORA_RUNS = (
    ("Llama-2-7B", "lora", "RTX-4090", 2, False, 4, 1, 437, 22.04, True),
    ("Llama-2-7B", "lora", "RTX-4090", 2, True, 6, 1, 481, 21.35, False),
    ("Llama-2-7B", "qlora", "RTX-4090", 2, False, 8, 1, 450, 20.94, False),
    ("Llama-2-7B", "qlora", "RTX-4090", 2, True, 10, 1, 466, 20.97, True),
    ("Llama-2-70B", "qlora", "A100-40GB", 2, True, 1, 16, 3277, 0.0, False),
    ("Llama-2-70B", "qlora", "A100-40GB", 4, True, 4, 2, 1266, 0.0, True),
    ("Llama-2-70B", "qlora", "A100-40GB", 8, True, 4, 1, 672, 0.0, False),
    ("Llama-2-70B", "qlora", "H100-SXM", 4, True, 8, 1, 667, 0.0, False),
)


def _fsdp_qlora_reference(model, method, gpu, gpus, sharded, batch, accumulation, seconds, gib, calibration):
    engine = "FSDP" if sharded else "DDP"
    return Reference(
        f"{model} {method} r64 all-linear b{batch}x{accumulation} s2048 ckpt {engine}, {gpus}x {gpu}",
        f"meta-llama/{model}-hf",
        gpu,
        _settings(
            method=method,
            lora_r=64,
            lora_alpha=16.0,
            lora_dropout=0.1,
            micro_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_seq_len=2048,
            loss="full_logits",
            sharding="fsdp2",
            zero_stage=3 if sharded else 0,
        ),
        FSDP_QLORA_SOURCE,
        gpus=gpus,
        measured_gb=gib * GIB / GB,
        figure="reserved",
        measured_tokens_per_s=SAMPLES_X_TOKENS / seconds / gpus,
        calibration=calibration,
        note="; ".join(
            [FSDP_QLORA_NOTE]
            + [why for key, why in FSDP_QLORA_OUTSIDE.items() if key == gpu or (key == "FSDP" and sharded)]
        ),
    )


REFERENCES: tuple[Reference, ...] = (
    Reference(
        "Llama-2-7B LoRA r8 q,v b4 s2048 ckpt, 1x RTX 4090",
        "meta-llama/Llama-2-7b-hf",
        "RTX-4090",
        _settings(
            method="lora",
            lora_r=8,
            lora_target_modules=QV,
            micro_batch_size=4,
            max_seq_len=2048,
            loss="full_logits",
        ),
        "torchtune README (May 2024)",
        measured_gb=21.3,
        note="allocator peak assumed (the README says 'peak memory')",
    ),
    Reference(
        "Llama-2-7B QLoRA r8 all-linear b4 s2048 compile, 1x RTX 4090",
        "meta-llama/Llama-2-7b-hf",
        "RTX-4090",
        _settings(
            method="qlora",
            lora_r=8,
            micro_batch_size=4,
            max_seq_len=2048,
            optimizer="adamw_torch_fused",
            loss="full_logits",
            compile=True,
        ),
        "torchtune README (May 2024)",
        measured_gb=12.3,
        note="torchtune keeps QLoRA activations in bf16; HF + prepare_model_for_kbit_training keeps fp32",
    ),
    Reference(
        "Llama-2-7B LoRA r8 q,v b2 ckpt, alpaca unpacked, 1x A100",
        "meta-llama/Llama-2-7b-hf",
        "A100-80GB",
        _settings(
            method="lora",
            lora_r=8,
            lora_target_modules=QV,
            micro_batch_size=2,
            max_seq_len=512,
            loss="full_logits",
        ),
        "torchtune docs tutorials/lora_finetune.rst",
        measured_gb=15.57,
        figure="reserved",
        calibration=True,
        note="unpacked alpaca: s=512 assumed (longest batches)",
    ),
    Reference(
        "Llama-2-7B QLoRA r8 q,v b2 ckpt, alpaca unpacked, 1x A100",
        "meta-llama/Llama-2-7b-hf",
        "A100-80GB",
        _settings(
            method="qlora",
            lora_r=8,
            lora_target_modules=QV,
            micro_batch_size=2,
            max_seq_len=512,
            optimizer="adamw_torch_fused",
            loss="full_logits",
        ),
        "torchtune docs tutorials/qlora_finetune.rst",
        measured_gb=9.29,
        figure="reserved",
        note="s=512 assumed; outside: torchtune's own NF4 tensors and LoRA modules, planned as HF + bitsandbytes",
    ),
    Reference(
        "Llama-3.1-8B QLoRA r32 all-linear b1 FA2: longest sequence on 24 GB",
        "meta-llama/Llama-3.1-8B",
        "RTX-4090",
        UNSLOTH_QLORA,
        "unsloth README (Jan 2025)",
        kind="max_seq",
        measured_tokens=5789,
        note="the HF + FlashAttention-2 baseline of unsloth's table; optimizer assumed",
    ),
    Reference(
        "Llama-3.1-8B QLoRA r32 all-linear b1 FA2: longest sequence on 80 GB",
        "meta-llama/Llama-3.1-8B",
        "A100-80GB",
        UNSLOTH_QLORA,
        "unsloth README (Jan 2025)",
        kind="max_seq",
        measured_tokens=28454,
    ),
    Reference(
        "Llama-2-70B LoRA r8 all-linear s2048 FA2 ckpt ZeRO-3 b8, 8x H100",
        "meta-llama/Llama-2-70b-hf",
        "H100-SXM",
        _settings(
            method="lora",
            lora_r=8,
            micro_batch_size=8,
            max_seq_len=2048,
            attention="flash_attention_2",
            zero_stage=3,
            loss="full_logits",
        ),
        "peft docs accelerate/deepspeed.md",
        gpus=8,
        measured_gb=64.0,
        figure="nvidia-smi",
        calibration=True,
    ),
    Reference(
        "Llama-2-70B QLoRA r8 all-linear s2048 FA2 ckpt ZeRO-3 b2, 2x A100-40GB",
        "meta-llama/Llama-2-70b-hf",
        "A100-40GB",
        _settings(
            method="qlora",
            lora_r=8,
            micro_batch_size=2,
            max_seq_len=2048,
            attention="flash_attention_2",
            zero_stage=3,
            loss="full_logits",
        ),
        "peft docs accelerate/deepspeed.md",
        gpus=2,
        measured_gb=36.6,
        figure="nvidia-smi",
    ),
    *(_torchtune_reference(*run) for run in TORCHTUNE_RUNS),
    *(_peft_bench_reference(*run) for run in PEFT_BENCH_RUNS),
    *(_fsdp_qlora_reference(*run) for run in FSDP_QLORA_RUNS),
)


def _row_settings(ref: Reference, seq_len: int | None = None):
    from ftplan.planner.settings import Settings

    base = dict(precision="bf16", optimizer="adamw_torch", gradient_accumulation_steps=1, lora_dropout=0.05)
    base.update(ref.settings)
    if "lora_alpha" not in base:
        base["lora_alpha"] = 2.0 * base.get("lora_r", 16)
    if seq_len:
        base["max_seq_len"] = seq_len
    return Settings(**base)


def _device(ref: Reference):
    from ftplan.planner.catalog.gpus import GPUS
    from ftplan.planner.device import Device

    per_node = min(ref.gpus, 8)
    return Device(GPUS[ref.gpu], per_node, max(1, ref.gpus // per_node))


def comparable_memory(total: int, overhead: int, figure: Figure) -> int:
    """The part of the planner's per-GPU total that a published figure of this kind counts."""
    if figure == "allocated":
        return total - overhead
    if figure == "reserved":
        return total - min(overhead, CUDA_CONTEXT)
    return total


def predict_reference(ref: Reference) -> dict:
    """The planner's prediction for a reference row, in the units the row was measured in."""
    from ftplan.planner.choose import longest_sequence_that_fits
    from ftplan.planner.memory import estimate_memory
    from ftplan.planner.models import resolve_model
    from ftplan.planner.timecost import DataShape, estimate_time

    arch = resolve_model(ref.model).arch
    s = _row_settings(ref)
    device = _device(ref)
    if ref.kind == "max_seq":
        return {"predicted_tokens": longest_sequence_that_fits(arch, s, device), "measured_tokens": ref.measured_tokens}
    out: dict = {}
    if ref.measured_gb:
        est = estimate_memory(arch, s, device)
        per_gpu = comparable_memory(est.total, est.overhead, ref.figure)
        out["predicted_gb"] = (per_gpu if ref.per_gpu else per_gpu * ref.gpus) / GB
        out["components"] = est.model_dump()
        out["peak_phase"] = est.peak_phase
    if ref.measured_tokens_per_s:
        timed = _row_settings(ref, ref.time_seq_len) if ref.time_seq_len else s
        time = estimate_time(arch, timed, device, DataShape(10_000, timed.max_seq_len))
        out["predicted_tokens_per_s"] = time.tokens_per_second / device.world_size
    return out


def error(predicted: float, measured: float) -> float:
    """Relative error of a prediction (+0.10 = 10 % over)."""
    return (predicted - measured) / measured


def accuracy_rows() -> list[dict]:
    """Every measured row with its prediction and errors (memory and tokens/s where measured)."""
    rows = []
    for ref in REFERENCES:
        if ref.kind != "peak" or not (ref.measured_gb or ref.measured_tokens_per_s):
            continue
        p = predict_reference(ref)
        row = {"ref": ref, **p}
        if ref.measured_gb:
            row["memory_error"] = error(p["predicted_gb"], ref.measured_gb)
        if ref.measured_tokens_per_s:
            row["tokens_error"] = error(p["predicted_tokens_per_s"], ref.measured_tokens_per_s)
        rows.append(row)
    return rows


def error_summary(rows: list[dict], key: str, calibration: bool) -> tuple[int, float, float]:
    """(rows, median |error|, worst |error|) of one metric over the calibration or held-apart rows."""
    errors = sorted(abs(r[key]) for r in rows if key in r and r["ref"].calibration == calibration)
    if not errors:
        return 0, 0.0, 0.0
    n = len(errors)
    median = errors[n // 2] if n % 2 else (errors[n // 2 - 1] + errors[n // 2]) / 2
    return n, median, errors[-1]
