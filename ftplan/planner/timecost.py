"""Training time from FLOPs and achievable GPU throughput; dollars, and the hidden costs.

FLOPs per token: 6 x matmul parameters for full fine-tuning, 4 x for LoRA/QLoRA (frozen
weights need no weight gradients), one more forward (2 x) with activation checkpointing, plus
attention's 12 * L * s * d_q (EleutherAI cookbook ``calc/calc_transformer_flops.py``).
Achieved throughput: the GPU's best measured bf16 matmul rate (stas00/ml-engineering MAMF
table, docs/sources.md "GPUs") times a model-level efficiency. torchtune's Llama-3.2-3B full fine-tune on
one A100 reached 7,075 tokens/s (docs/sources.md "Published measurements"); with its optimizer
step counted apart (below) that is about 0.63 of the A100's 271 TFLOP/s matmul ceiling:
``BASE_EFFICIENCY`` (chosen when the run was read as stepping PagedAdamW8bit, +1.3 %; read as the
fused 16-bit AdamW its table implies, the row is -1.9 %, and the constant is kept).

Beside the matmuls, four costs are bound by memory bandwidth, not FLOPs, and are added as bytes
moved at the GPU's HBM rate (``memory_bound_seconds``): the loss over the vocabulary (the
model's own cross-entropy on fp32 logits moves more than TRL's fused head), the optimizer step (a pass over every
trainable parameter's value, gradient and states, several passes for torch's multi-kernel
AdamW), peft's LoRA adapters (the input cast to the adapter dtype, the adapter output, its
scaling and the add, forward and backward: per token, whatever the rank), and bitsandbytes'
NF4 dequantisation (every 4-bit weight written out in bf16 for each forward, recompute and
backward: per micro-batch, whatever its tokens). With ``training.compile`` the matmul-level
efficiency is ``COMPILED_EFFICIENCY`` and the model's own loss moves as few bytes as a fused one.
The published runs these were checked on are
in ``ftplan/probe/references.py`` (``benchmarks/estimator_accuracy.py`` prints them).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from ftplan.planner.arch import ModelArch
from ftplan.planner.device import Device
from ftplan.planner.model_states import trainable_params
from ftplan.planner.settings import Settings

BASE_EFFICIENCY = 0.63
# Share of the datasheet HBM bandwidth that element-wise kernels (optimizer steps, casts, adds)
# reach on A100/H100/L40S-class GPUs.
HBM_EFFICIENCY = 0.9
# Passes over a trainable parameter's value-sized tensors in one optimizer step, gradient
# clipping (a norm read, a scaling read + write: 3) included. torch's foreach AdamW
# (torch/optim/adam.py ``_multi_tensor_adam``) runs ~9 element-wise kernels (decay, lerp, mul,
# addcmul, sqrt, two divs, add eps, addcdiv): 22 reads and writes; the fused kernel reads
# value, gradient and two moments and writes three of them once: 7. bitsandbytes' 8-bit Adam is
# one kernel over the value (read + write) and gradient plus 1-byte moments (see
# OPTIMIZER_STATE_PASSES). Adafactor's factored update is several element-wise kernels.
OPTIMIZER_VALUE_PASSES = {
    "adamw_torch": 22 + 3,
    "adamw_torch_fused": 7 + 3,
    "adamw_8bit": 3 + 3,
    "paged_adamw_8bit": 3 + 3,
    "paged_adamw_32bit": 3 + 3,
    "adafactor": 10 + 3,
    "sgd": 3 + 3,
}
# Optimizer state read and written once by the single-kernel steps (bytes of state per
# parameter: memory.optimizer_bytes_per_param); the multi-kernel AdamW's are in its passes.
OPTIMIZER_STATE_PASSES = {"adamw_8bit": 2, "paged_adamw_8bit": 2, "paged_adamw_32bit": 2}
# Bytes per logit (vocabulary entry) per token that the loss moves beside the LM head's matmul.
# The model's own loss (transformers ``ForCausalLMLoss``): bf16 logits written (2), upcast to
# fp32 (read 2, write 4), log-softmax (read 4, write 4); backward: its gradient (read 4, write 4),
# the upcast's (read 4, write 2) and the read by the head's backward (2): 30. TRL's fused head
# works on bf16 tiles it reuses: a tile written and read for the log-sum-exp in forward, again
# in backward with its gradient written and read: ~12.
LOSS_BYTES_PER_LOGIT = {"full_logits": 30, "chunked": 12}
# torch.compile (``training.compile``) fuses the element-wise work of every layer (norms, rotary,
# activations, residual adds, casts) and the model's own loss (the upcast and log-softmax read the
# bf16 logits once, as TRL's fused head does). Its matmul-level efficiency is chosen on the one
# published pair that changes compile alone: torchtune's Llama-3.2-3B full fine-tune on one A100,
# packed b2 x s4096, no checkpointing, 7,075 -> 8,998 tokens/s (README "optimization flags").
COMPILED_EFFICIENCY = 0.82
# NF4 dequantisation per use of a 4-bit weight: read the packed nibbles (0.5 B) and write the
# bf16 copy (2 B) that the matmul then reads (2 B).
DEQUANT_BYTES_PER_WEIGHT = 4.5
# Small micro-batches leave the GPU underfed; below this many tokens per micro-batch the
# efficiency falls off with the fourth root. The matmuls' tiles are tokens x width, so the
# threshold is for a model SATURATING_WIDTH wide (Llama-3.2-3B, where it was set: torchtune's
# 8,192-token micro-batches run at full efficiency, peft's ~840-token ones at ~0.57 of it) and
# scales inversely with the hidden size (a 70B model's 8,192-wide matmuls fill the GPU at
# 2,048 tokens: AnswerDotAI/fsdp_qlora's b1 x 2,048 70B runs are not slower per token).
SATURATING_TOKENS = 8192
SATURATING_WIDTH = 3072
PCIE_GBS = 25.0  # host <-> GPU, PCIe 4.0 x16 in practice
NETWORK_GBS = 12.5  # between nodes, 100 Gb/s per GPU (InfiniBand/RoCE); per-GPU share
COMM_OVERLAP = 0.5  # share of communication hidden behind compute
CPU_ADAM_PARAMS_PER_S = 1.0e9  # DeepSpeed CPUAdam, one socket, fp32 params per second

S3_USD_PER_GB_MONTH = 0.023  # AWS S3 Standard, first 50 TB
EXPERIMENT_RUNS = 15  # the lesson: budget 10-20 runs to reach a production model
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class DataSample:
    """What the shell measured in the data file: every example counted, a sample tokenized."""

    examples: int
    lengths: tuple[int, ...]
    """Tokens of each sampled example as the run tokenizes it (before truncation)."""
    trained: tuple[int, ...]
    """Of those, the tokens the loss covers (answers only, or all), in the same order."""
    tokenizer: str | None
    """The tokenizer that counted them; None: characters / 4."""
    checked: int
    """Records parsed and checked (all of them unless the file is large)."""
    format: str
    train_on: str
    prompts: tuple[int, ...] = ()
    """Untrained tokens before each sampled example's first trained one (0 when all train)."""

    @property
    def mean_tokens(self) -> int:
        return max(1, round(sum(self.lengths) / max(len(self.lengths), 1)))


QUANTILES = 256  # length points the planner keeps of a measured sample
PACKING_SAMPLE = 2048  # examples packed to estimate sequences per example


@dataclass(frozen=True)
class DataShape:
    examples: int
    avg_tokens: int
    lengths: tuple[int, ...] = ()
    """Sorted example lengths (quantiles of the measured sample); empty when not measured."""
    prompts: tuple[int, ...] = ()
    """Sorted untrained-prefix lengths (prompt tokens before the first answer); empty: none known."""

    @staticmethod
    def from_sample(
        examples: int, avg_tokens: int, lengths: tuple[int, ...], prompts: tuple[int, ...] = ()
    ) -> DataShape:
        return DataShape(examples, avg_tokens, _quantiles(lengths), _quantiles(prompts))


def _quantiles(values: tuple[int, ...]) -> tuple[int, ...]:
    ordered = sorted(values)
    n = len(ordered)
    if n > QUANTILES:
        ordered = [ordered[int((i + 0.5) * n / QUANTILES)] for i in range(QUANTILES)]
    return tuple(ordered)


def dropped_share(data: DataShape, max_seq_len: int) -> float:
    """Share of examples whose prompt alone reaches max_seq_len: truncation cuts their whole answer
    away and TRL's SFTTrainer drops them as fully masked (packing off; measured on the sample)."""
    if not data.prompts:
        return 0.0
    return sum(p >= max_seq_len for p in data.prompts) / len(data.prompts)


def real_tokens_per_example(data: DataShape, max_seq_len: int) -> float:
    """Mean tokens of an example after truncation at max_seq_len."""
    if data.lengths:
        return sum(min(n, max_seq_len) for n in data.lengths) / len(data.lengths)
    return float(min(data.avg_tokens, max_seq_len))


@functools.lru_cache(maxsize=1024)
def _expected_longest(lengths: tuple[int, ...], max_seq_len: int, batch: int) -> float:
    """E[longest of ``batch`` examples drawn at random]: the padded length of a micro-batch.

    With sorted lengths L_1..L_n, the k-th is the longest of b draws with probability
    (k/n)^b - ((k-1)/n)^b.
    """
    n = len(lengths)
    return sum(min(x, max_seq_len) * ((k / n) ** batch - ((k - 1) / n) ** batch) for k, x in enumerate(lengths, 1))


def padded_tokens_per_example(data: DataShape, s: Settings) -> float:
    """Tokens the GPU processes per example: real ones when packed, padded to the micro-batch's
    longest otherwise (TRL pads each batch to its longest sequence)."""
    real = real_tokens_per_example(data, s.max_seq_len)
    if s.packing or s.micro_batch_size == 1:
        return real
    if data.lengths:
        return _expected_longest(data.lengths, s.max_seq_len, s.micro_batch_size)
    # Not measured: roughly 1.6 x the mean for the long-tailed lengths of chat data.
    return float(min(s.max_seq_len, int(real * 1.6)))


@functools.lru_cache(maxsize=256)
def _bins_per_example(lengths: tuple[int, ...], max_seq_len: int) -> float:
    """Packed sequences per example by best-fit decreasing, TRL's default packing_strategy
    ("bfd", overflow truncated: trl/data_utils.py ``_pack_bfd``), run on the sample."""
    # The sample repeated to some 2,000 examples: a part-filled last sequence then weighs little.
    repeated = lengths * max(1, math.ceil(PACKING_SAMPLE / len(lengths)))
    free: list[int] = []  # room left in each packed sequence, kept sorted
    for n in sorted((min(x, max_seq_len) for x in repeated), reverse=True):
        i = bisect.bisect_left(free, n)
        if i < len(free):
            room = free.pop(i) - n
        else:
            room = max_seq_len - n
        bisect.insort(free, room)
    return len(free) / len(repeated)


def eval_fraction(examples: int) -> float:
    """data.eval_fraction of the exported run: 500 examples held out for evaluation, at most 5 %
    and at least 0.1 % of the data (the exporter writes it; train.py splits by it)."""
    return round(min(0.05, max(0.001, 500 / max(1, examples))), 4)


def train_examples(examples: int) -> int:
    """Examples left to train on after train.py holds out its eval split: ceil(examples x
    eval_fraction) go to evaluation when that leaves at least one to train on."""
    held_out = math.ceil(examples * eval_fraction(examples))
    return examples - held_out if examples > held_out else examples


def sequences_per_epoch(data: DataShape, s: Settings) -> int:
    """Sequences the dataloader yields per epoch from the train split: one per example, or the packed ones."""
    examples = train_examples(data.examples)
    if not s.packing:
        return max(1, round(examples * (1 - dropped_share(data, s.max_seq_len))))
    if data.lengths:
        return max(1, math.ceil(examples * _bins_per_example(data.lengths, s.max_seq_len)))
    return max(1, math.ceil(examples * real_tokens_per_example(data, s.max_seq_len) / s.max_seq_len))


def optimizer_steps(data: DataShape, s: Settings, world: int) -> int:
    """Optimizer steps of the run as the HF Trainer counts them: batches per process
    (ceil(sequences / (micro-batch x world))), then ceil over accumulation per epoch, then
    ceil(epochs x steps per epoch) (transformers ``Trainer.set_initial_training_values``)."""
    batches = math.ceil(sequences_per_epoch(data, s) / (s.micro_batch_size * world))
    per_epoch = max(1, math.ceil(batches / s.gradient_accumulation_steps))
    return max(1, math.ceil(s.epochs * per_epoch))


def tokens_per_epoch(data: DataShape, s: Settings) -> int:
    """Tokens the GPU processes per epoch (the train split): real tokens when packed, padded ones otherwise."""
    return int(train_examples(data.examples) * padded_tokens_per_example(data, s))


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


def achieved_tflops(arch: ModelArch, device: Device, s: Settings) -> float:
    gpu = device.gpu
    work = s.micro_batch_size * s.max_seq_len * arch.hidden_size
    base = COMPILED_EFFICIENCY if s.compile else BASE_EFFICIENCY
    eff = base * min(1.0, (work / (SATURATING_TOKENS * SATURATING_WIDTH)) ** 0.25)
    if not gpu.bf16 and gpu.name != "cpu":
        eff *= 0.8  # fp16 mixed with loss scaling, no FlashAttention-2
    return gpu.matmul_tflops * eff


def optimizer_step_bytes(arch: ModelArch, s: Settings, device: Device) -> float:
    """HBM bytes one GPU moves in an optimizer step (none when the states are offloaded to the
    CPU, whose cost ``_offload_seconds_per_step`` has).

    Counted for all trainable parameters, sharded or not: a ZeRO/FSDP step updates 1/N of them
    but on fp32 master values (DeepSpeed) with a cast and re-gather after it, and the settings
    search ranks a higher sharding stage as never faster than a lower one (``choose._search``);
    modelling the shard's saving would break that ranking without a published run to weigh it."""
    from ftplan.planner.model_states import adapter_bytes, dtype_bytes, optimizer_bytes_per_param

    if s.offload != "none" and s.zero_stage > 0:
        return 0.0
    trainable = trainable_params(arch, s)
    value = adapter_bytes(s) if s.is_peft else dtype_bytes(s.precision)
    state = optimizer_bytes_per_param(s.optimizer, value) * OPTIMIZER_STATE_PASSES.get(s.optimizer, 0)
    return trainable * (OPTIMIZER_VALUE_PASSES.get(s.optimizer, 3) * value + state)


def adapter_bytes_per_token(arch: ModelArch, s: Settings) -> float:
    """HBM bytes peft's LoRA layers move per token beside their (tiny) matmuls.

    Per adapted Linear, with activations of ``e`` bytes and adapters of ``a``: forward casts
    the input to the adapter dtype (e + a per input feature, when they differ), lora_A reads it
    (a), lora_B writes its output (a per output feature), the scaling reads and writes it (2a)
    and the add reads it and the base output and writes the sum (2e); backward moves about as
    much again. Counted per (d_in + d_out), both taken as half of it. MoE expert adapters see a
    token only in its ``experts_per_token`` experts.
    """
    if not s.is_peft:
        return 0.0
    from ftplan.planner.activations import act_bytes
    from ftplan.planner.model_states import adapter_bytes

    e, a = act_bytes(s), adapter_bytes(s)
    per_feature = (e + a if a != e else 0) + 3 * a + 2 * e
    features = arch.lora_params(1, s.lora_target_modules)
    if arch.experts:
        expert = arch.layers * arch._moe_lora_per_layer(1, s.lora_target_modules)
        features -= expert * (1 - arch.experts_per_token / arch.experts)
    return per_feature * features


def loss_bytes_per_token(arch: ModelArch, s: Settings) -> float:
    """HBM bytes the loss moves per token over the vocabulary (LOSS_BYTES_PER_LOGIT)."""
    per_logit = LOSS_BYTES_PER_LOGIT["chunked" if s.compile else s.loss]
    return per_logit * (arch.vocab_size + s.new_tokens)


def dequant_bytes_per_micro_batch(arch: ModelArch, s: Settings) -> float:
    """HBM bytes of bitsandbytes' NF4 dequantisation per micro-batch: every 4-bit weight is
    dequantised for the forward, for the backward's input gradient and, with checkpointing,
    for the recompute (each GPU dequantises the whole gathered model under ZeRO-3/FSDP)."""
    if s.method != "qlora":
        return 0.0
    uses = 3 if s.gradient_checkpointing else 2
    return arch.quantizable_params * DEQUANT_BYTES_PER_WEIGHT * uses


def memory_bound_seconds(arch: ModelArch, s: Settings, device: Device, tokens: float, steps: int) -> float:
    """Seconds one GPU spends on the bandwidth-bound work above for ``tokens`` (its share) over
    ``steps`` optimizer steps."""
    if device.is_cpu or not device.gpu.bandwidth_gbs:
        return 0.0  # CPU steps are timed from measurements (cpu_step_seconds)
    micro_batches = steps * s.gradient_accumulation_steps
    moved = (
        tokens * (adapter_bytes_per_token(arch, s) + loss_bytes_per_token(arch, s))
        + micro_batches * dequant_bytes_per_micro_batch(arch, s)
        + steps * optimizer_step_bytes(arch, s, device)
    )
    return moved / (device.gpu.bandwidth_gbs * 1e9 * HBM_EFFICIENCY)


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
    from ftplan.planner.model_states import fsdp_frozen_gather_bytes, fsdp_param_bytes

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


# ---- CPU throughput (smoke runs): calibrated from measured steps ---------------------------
# A CPU step of a small model is largely fixed cost: the Trainer/TRL loop, collation and TRL's
# per-step metrics per micro-batch, the per-layer dispatch of forward and backward kernels, and
# under ZeRO-3 the gather / release / reduce-scatter of every layer over gloo; the FLOPs run at a
# rate the machine's cores share between processes (launch gives each cores // processes threads).
# Fitted to `benchmarks/cpu_throughput.py` (exported projects, trainer.train() under the probe's
# engine, steps 2-5 of 6 timed) on the 2-core CI machine when idle (load < 0.3), 2026-12-02,
# torch 2.13 CPU, transformers 5.24, TRL 1.16, DeepSpeed 0.19.8. Measured tokens/s -> this model:
#   Llama h64 L2 (vocab ~300), b2 s64: LoRA 2,517 -> 2,500; ZeRO-3 x 2 processes 733 and ~2,000 -> 1,160
#   Llama h512 L4, b4 s128: full 860 -> 797; LoRA 1,070 -> 1,091
# The same runs on the machine shared by other jobs (load 5-8) were 2-20x slower: CPU figures are
# for an idle host.
CPU_MATMUL_FLOPS = 70e9  # achieved FLOP/s of the whole host (forward + backward), the h512 cases
CPU_MICRO_BATCH_S = 0.04  # fixed seconds per micro-batch, the h64 LoRA case
CPU_LAYER_S = 0.005  # seconds per decoder layer and micro-batch (forward + backward dispatch)
# ZeRO-3 over gloo, per layer and micro-batch: the h64 ZeRO-3 x 2 case measured 733 tokens/s
# (0.35 s/step, 400 examples, 6 steps) and ~2,000 (0.13 s/step, 48 examples, 4 steps) on the idle
# machine; 0.08 s sits between them (1,160 tokens/s), within a factor 2 of both.
CPU_ZERO3_LAYER_S = 0.08


def cpu_step_seconds(arch: ModelArch, s: Settings, flops_per_step: float) -> float:
    """Seconds of one optimizer step on the CPU: each process's fixed costs above (in parallel, one
    per core), plus all processes' FLOPs of the step at the host's measured rate."""
    per_layer = CPU_LAYER_S + (CPU_ZERO3_LAYER_S if s.zero_stage == 3 else 0.0)
    fixed = s.gradient_accumulation_steps * (CPU_MICRO_BATCH_S + arch.layers * per_layer)
    return fixed + flops_per_step / CPU_MATMUL_FLOPS


def _fsdp2_offload_seconds_per_step(arch: ModelArch, s: Settings) -> float:
    """CPUOffloadPolicy: every all-gather copies the shards to the GPU, every reduce-scatter copies
    the gradient shards back, and torch's AdamW steps on the host (rate as DeepSpeed's CPUAdam:
    an optimistic bound for torch's own CPU kernels)."""
    trainable = trainable_params(arch, s)
    gathers = 2 if s.zero_stage == 3 else 1
    copies = (gathers * 2 * arch.params + 4 * trainable) * s.gradient_accumulation_steps
    return copies / (PCIE_GBS * 1e9) + trainable / CPU_ADAM_PARAMS_PER_S


class Time(BaseModel):
    """One run's time, as the plan's JSON carries it (``methods.<m>.time``)."""

    model_config = ConfigDict(frozen=True)

    tokens: int
    flops: float
    hours: float
    gpu_hours: float
    tokens_per_second: float
    steps: int


def estimate_time(arch: ModelArch, s: Settings, device: Device, data: DataShape) -> Time:
    tokens = int(tokens_per_epoch(data, s) * s.epochs)
    seq_len = s.max_seq_len if s.packing else max(1, round(padded_tokens_per_example(data, s)))
    flops = flops_per_token(arch, s, seq_len) * tokens
    world = device.world_size
    steps = optimizer_steps(data, s, world)
    compute_s = flops / (achieved_tflops(arch, device, s) * 1e12 * world)
    compute_s += memory_bound_seconds(arch, s, device, tokens / world, steps)
    comm_s = _comm_seconds_per_step(arch, s, device) * steps
    offload_s = _offload_seconds_per_step(arch, s) * steps
    seconds = compute_s + (1 - COMM_OVERLAP) * comm_s + max(0.0, COMM_OVERLAP * comm_s - compute_s) + offload_s
    if device.is_cpu:  # measured CPU steps (communication and offload included), not the GPU model
        seconds = steps * cpu_step_seconds(arch, s, flops / steps)
    hours = seconds / 3600
    return Time(
        tokens=tokens,
        flops=flops,
        hours=hours,
        gpu_hours=hours * world,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        steps=steps,
    )


# ---- cost --------------------------------------------------------------------------------


class Cost(BaseModel):
    """One run's dollars and the hidden costs, as the plan's JSON carries them (``methods.<m>.cost``)."""

    model_config = ConfigDict(frozen=True)

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


def estimate_cost(
    arch: ModelArch,
    s: Settings,
    device: Device,
    time: Time,
    price: float,
    variants: int,
    budget_usd: float | None,
    checkpoints_kept: int = 5,
) -> Cost:
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
    return Cost(
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
