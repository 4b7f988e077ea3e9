"""Training time from FLOPs and achievable GPU throughput; dollars, and the hidden costs.

FLOPs per token: 6 x matmul parameters for full fine-tuning, 4 x for LoRA/QLoRA (frozen
weights need no weight gradients), one more forward (2 x) with activation checkpointing, plus
attention's 12 * L * s * d_q (EleutherAI cookbook ``calc/calc_transformer_flops.py``).
Achieved throughput: the GPU's best measured bf16 matmul rate (stas00/ml-engineering MAMF
table, FACTS.md) times a model-level efficiency. torchtune's Llama-3.2-3B full fine-tune on
one A100 reached ~0.5 of dense peak (7,075 tokens/s, FACTS.md "Measured throughput"), i.e.
~0.58 of the A100's 271 TFLOP/s matmul ceiling; that is ``BASE_EFFICIENCY``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftplan.planner.arch import ModelArch
from ftplan.planner.memory import Device, trainable_params
from ftplan.planner.settings import Settings

BASE_EFFICIENCY = 0.58
# bitsandbytes dequantises every 4-bit weight in forward and backward; HF + bnb QLoRA runs
# measured ~20-35 % slower than bf16 LoRA (torchtune with compile: 2 %). 0.8 is the middle.
QLORA_SLOWDOWN = 0.8
# Small micro-batches leave the GPU underfed; below this many tokens per micro-batch the
# efficiency falls off with the fourth root.
SATURATING_TOKENS = 8192
PCIE_GBS = 25.0  # host <-> GPU, PCIe 4.0 x16 in practice
NETWORK_GBS = 12.5  # between nodes, 100 Gb/s per GPU (InfiniBand/RoCE); per-GPU share
COMM_OVERLAP = 0.5  # share of communication hidden behind compute
CPU_ADAM_PARAMS_PER_S = 1.0e9  # DeepSpeed CPUAdam, one socket, fp32 params per second

S3_USD_PER_GB_MONTH = 0.023  # AWS S3 Standard, first 50 TB
EXPERIMENT_RUNS = 15  # the lesson: budget 10-20 runs to reach a production model
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class DataShape:
    examples: int
    avg_tokens: int


def tokens_per_epoch(data: DataShape, s: Settings) -> int:
    """Tokens the GPU processes per epoch: real tokens when packed, padded ones otherwise."""
    real = min(data.avg_tokens, s.max_seq_len)
    if s.packing or s.micro_batch_size == 1:
        return data.examples * real
    # Padding to the longest example of each micro-batch: roughly 1.6 x the mean for the
    # long-tailed length distributions of chat data, capped by max_seq_len.
    padded = min(s.max_seq_len, int(real * 1.6))
    return data.examples * padded


def matmul_params(arch: ModelArch) -> int:
    """Parameters that take part in a matmul per token (embedding lookup excluded)."""
    found = arch.memo.get("matmul_params")
    if found is None:
        found = arch.memo["matmul_params"] = _matmul_params_uncached(arch)
    return found


def _matmul_params_uncached(arch: ModelArch) -> int:
    linear = arch.layers * sum(lin.d_in * lin.d_out for lin in arch.layer_linears)
    if arch.experts:
        linear += arch.layers * arch.expert_params_per_layer * arch.experts_per_token // arch.experts
    return linear + arch.vocab_size * arch.hidden_size


def flops_per_token(arch: ModelArch, s: Settings, seq_len: int) -> float:
    p = matmul_params(arch)
    passes = 6.0 if s.method == "full" else 4.0
    if s.gradient_checkpointing:
        passes += 2.0
    attention = 12 * arch.layers * seq_len * arch.heads * arch.head_dim
    if s.gradient_checkpointing:
        attention *= 4 / 3
    lora = 6.0 * trainable_params(arch, s) if s.is_peft else 0.0
    return passes * p + attention + lora


def achieved_tflops(device: Device, s: Settings) -> float:
    gpu = device.gpu
    eff = BASE_EFFICIENCY * min(1.0, (s.micro_batch_size * s.max_seq_len / SATURATING_TOKENS) ** 0.25)
    if s.method == "qlora":
        eff *= QLORA_SLOWDOWN
    if not gpu.bf16 and gpu.name != "cpu":
        eff *= 0.8  # fp16 mixed with loss scaling, no FlashAttention-2
    return gpu.matmul_tflops * eff


def _comm_seconds_per_step(arch: ModelArch, s: Settings, device: Device) -> float:
    """Gradient and parameter traffic per optimizer step that compute cannot hide."""
    world = device.world_size
    if world == 1:
        return 0.0
    trainable = trainable_params(arch, s)
    grad_bytes = 2 * trainable * (2 if s.method == "full" else 4)  # ring all-reduce: 2x data
    volume = grad_bytes
    if s.uses_fsdp:
        volume = fsdp2_comm_bytes_per_step(arch, s, trainable)
    elif s.zero_stage == 3:
        # all-gather weights in forward and backward for every micro-batch.
        volume += 2 * 2 * arch.params * s.gradient_accumulation_steps
    bandwidth = device.gpu.interconnect_gbs if device.nodes == 1 else min(device.gpu.interconnect_gbs, NETWORK_GBS)
    return volume / (bandwidth * 1e9)


def fsdp2_comm_bytes_per_step(arch: ModelArch, s: Settings, trainable: int) -> float:
    """Bytes each GPU moves per optimizer step under FSDP2 (ring all-gather and reduce-scatter move
    (N-1)/N of the unsharded size each, ~1x, where an all-reduce moves 2x).

    Every micro-batch all-gathers the weights in forward and, at zero_stage 3, again in backward;
    gradients are reduce-scattered every micro-batch (train.py syncs each batch, so accumulation
    holds sharded, not unsharded, gradients)."""
    from ftplan.planner.memory import fsdp_frozen_gather_bytes, fsdp_param_bytes

    stored, gathered = fsdp_param_bytes(s)
    if s.method == "full":
        weights = arch.params * gathered
        reduce_bytes = gathered
    else:
        weights = arch.params * fsdp_frozen_gather_bytes(s) + trainable * gathered
        reduce_bytes = stored
    gathers = 2 if s.zero_stage == 3 else 1
    return (gathers * weights + trainable * reduce_bytes) * s.gradient_accumulation_steps


def _offload_seconds_per_step(arch: ModelArch, s: Settings) -> float:
    if s.offload == "none" or s.zero_stage == 0:
        return 0.0
    if s.uses_fsdp:
        return _fsdp2_offload_seconds_per_step(arch, s)
    trainable = trainable_params(arch, s)
    seconds = trainable * (2 + 2) / (PCIE_GBS * 1e9) + trainable / CPU_ADAM_PARAMS_PER_S
    if s.offload == "optimizer+params":
        seconds += 3 * 2 * arch.params * s.gradient_accumulation_steps / (PCIE_GBS * 1e9)
    return seconds


def _fsdp2_offload_seconds_per_step(arch: ModelArch, s: Settings) -> float:
    """CPUOffloadPolicy: every all-gather copies the shards to the GPU, every reduce-scatter copies
    the gradient shards back, and torch's AdamW steps on the host (rate as DeepSpeed's CPUAdam:
    an optimistic bound for torch's own CPU kernels)."""
    trainable = trainable_params(arch, s)
    gathers = 2 if s.zero_stage == 3 else 1
    copies = (gathers * 2 * arch.params + 4 * trainable) * s.gradient_accumulation_steps
    return copies / (PCIE_GBS * 1e9) + trainable / CPU_ADAM_PARAMS_PER_S


@dataclass(frozen=True)
class TimeEstimate:
    tokens: int
    flops: float
    hours: float
    gpu_hours: float
    tokens_per_second: float
    steps: int

    def as_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "flops": self.flops,
            "hours": self.hours,
            "gpu_hours": self.gpu_hours,
            "tokens_per_second": self.tokens_per_second,
            "steps": self.steps,
        }


def estimate_time(arch: ModelArch, s: Settings, device: Device, data: DataShape) -> TimeEstimate:
    tokens = int(tokens_per_epoch(data, s) * s.epochs)
    seq_len = s.max_seq_len if s.packing else min(s.max_seq_len, data.avg_tokens)
    flops = flops_per_token(arch, s, seq_len) * tokens
    world = device.world_size
    tokens_per_step = s.micro_batch_size * s.max_seq_len * s.gradient_accumulation_steps * world
    steps = max(1, math.ceil(tokens / tokens_per_step))
    compute_s = flops / (achieved_tflops(device, s) * 1e12 * world)
    comm_s = _comm_seconds_per_step(arch, s, device) * steps
    offload_s = _offload_seconds_per_step(arch, s) * steps
    seconds = compute_s + (1 - COMM_OVERLAP) * comm_s + max(0.0, COMM_OVERLAP * comm_s - compute_s) + offload_s
    hours = seconds / 3600
    return TimeEstimate(
        tokens=tokens,
        flops=flops,
        hours=hours,
        gpu_hours=hours * world,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        steps=steps,
    )


# ---- cost --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    usd: float
    usd_per_gpu_hour: float
    checkpoint_gb: float
    checkpoints_kept: int
    checkpoint_storage_usd_month: float
    artifact_gb: float
    serving_variants: int
    serving_storage_gb: float
    serving_gpus: int
    serving_usd_month: float
    experiment_runs: int
    experiments_usd: float
    runs_within_budget: int | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def estimate_cost(
    arch: ModelArch,
    s: Settings,
    device: Device,
    time: TimeEstimate,
    price: float,
    variants: int,
    budget_usd: float | None,
    checkpoints_kept: int = 5,
) -> CostEstimate:
    """One run's dollars, and the costs the lesson calls hidden, for this case."""
    usd = time.gpu_hours * price
    trainable = trainable_params(arch, s)
    model_gb = 2 * arch.params / 1e9
    if s.method == "full":
        # A resumable checkpoint: bf16 weights + fp32 master and Adam moments when mixed.
        optimizer_bytes = 12 if s.zero_stage or s.precision != "bf16" else 4
        checkpoint_gb = (2 + optimizer_bytes) * trainable / 1e9
        artifact_gb = model_gb
        storage_gb = variants * model_gb
        serving_models = variants
    else:
        checkpoint_gb = (4 + 8) * trainable / 1e9
        artifact_gb = 2 * trainable / 1e9
        storage_gb = model_gb + variants * artifact_gb
        serving_models = 1  # adapters hot-swap on one base model (vLLM multi-LoRA, Punica)
    gpu_memory_gb = device.gpu.memory / 1e9 if device.gpu.memory else 80.0
    per_model_gpus = max(1, math.ceil(model_gb * 1.3 / gpu_memory_gb))  # weights + KV cache
    serving_gpus = serving_models * per_model_gpus
    experiments = EXPERIMENT_RUNS * usd
    return CostEstimate(
        usd=usd,
        usd_per_gpu_hour=price,
        checkpoint_gb=checkpoint_gb,
        checkpoints_kept=checkpoints_kept,
        checkpoint_storage_usd_month=checkpoint_gb * checkpoints_kept * S3_USD_PER_GB_MONTH,
        artifact_gb=artifact_gb,
        serving_variants=variants,
        serving_storage_gb=storage_gb,
        serving_gpus=serving_gpus,
        serving_usd_month=serving_gpus * price * HOURS_PER_MONTH,
        experiment_runs=EXPERIMENT_RUNS,
        experiments_usd=experiments,
        runs_within_budget=int(budget_usd // usd) if budget_usd and usd > 0 else None,
    )
