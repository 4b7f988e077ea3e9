"""Per-GPU memory of one training step, by component, at the step's peak.

Built from what the exported ``train.py`` really holds (transformers Trainer / TRL, peft,
bitsandbytes, DeepSpeed), not from a bytes-per-parameter rule of thumb:

* model states: ZeRO paper (arXiv 1910.02054) for the DeepSpeed split; pure-bf16 training keeps
  bf16 optimizer states (torch AdamW's states take the parameter's dtype);
* activations: Korthikanti et al. 2022 (arXiv 2205.05198) structure, with per-token constants
  for Llama-style blocks measured on real CPU steps with ``MemTracker``
  (``benchmarks/estimator_accuracy.py`` prints the comparison);
* logits: b*s*V elements, upcast to fp32 for the loss (torchtune measured ~8.3 B/element).

The peak is the largest of the step's phases (end of forward, peak of backward, optimizer
step), not the sum of each component's maximum; ``components`` report each part's value
at that peak phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GIB, GPU
from ftplan.planner.settings import Settings

# CUDA context + cuBLAS/cuDNN workspaces + NCCL buffers outside the caching allocator.
# ~500 MiB context on Ampere/Hopper with lazy module loading, plus allocator fragmentation
# headroom is *not* included here (it is in USABLE_FRACTION).
CUDA_OVERHEAD = 1 * GIB
NCCL_OVERHEAD = 1 * GIB // 2
# Fraction of device memory a run can use before fragmentation makes allocations fail.
USABLE_FRACTION = 0.95

# NF4 storage: 4 bits per weight + one fp32 absmax per 64 weights, or with double quant
# an 8-bit absmax per 64 weights and one fp32 constant per 256 blocks (QLoRA paper, sec. 3).
NF4_BITS_DOUBLE_QUANT = 4 + 8 / 64 + 32 / (64 * 256)
NF4_BITS = 4 + 32 / 64


def dtype_bytes(precision: str, *, cpu: bool = False) -> int:
    """Bytes per element of weights as loaded for the given precision."""
    return 2 if precision == "bf16" else 4


def compute_bytes(precision: str) -> int:
    """Bytes per activation element: 16-bit under bf16/fp16 autocast, else 4."""
    return 4 if precision == "fp32" else 2


@dataclass(frozen=True)
class Device:
    gpu: GPU
    gpus_per_node: int = 1
    nodes: int = 1

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def is_cpu(self) -> bool:
        return self.gpu.name == "cpu"


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    cpu_memory: int
    phases: dict = field(default_factory=dict)
    """Allocated bytes at each phase of the step; the peak phase decides the components."""
    peak_phase: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "overhead": self.overhead,
            "total": self.total,
        }


# ---- trainable parameters --------------------------------------------------------------


def new_token_params(arch: ModelArch, s: Settings) -> int:
    """Parameters that train because of new tokens."""
    if not s.new_tokens:
        return 0
    matrices = 1 if arch.tied_embeddings else 2
    if s.is_peft and s.train_new_token_rows:
        return matrices * s.new_tokens * arch.hidden_size
    if s.is_peft:  # modules_to_save: whole embedding (and lm_head) copies train
        return matrices * (arch.vocab_size + s.new_tokens) * arch.hidden_size
    return 0


def trainable_params(arch: ModelArch, s: Settings) -> int:
    if s.method == "full":
        return arch.params + s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
    return arch.lora_params(s.lora_r, s.lora_target_modules) + new_token_params(arch, s)


# ---- model states ----------------------------------------------------------------------


def optimizer_bytes_per_param(optimizer: str, param_bytes: int) -> float:
    """Optimizer state bytes per trainable parameter.

    torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype; bitsandbytes' 8-bit
    Adam keeps two uint8 states plus a fp32 absmax per 256-element block (paged variants
    live in unified memory but are counted on the GPU, where they sit while training).
    """
    if optimizer in ("adamw_torch", "adamw_torch_fused"):
        return 2 * param_bytes
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return 2 + 2 * 4 / 256
    if optimizer == "paged_adamw_32bit":
        return 8
    if optimizer == "adafactor":
        return 0.05 * param_bytes  # factored second moment: rows + columns per matrix
    return 0.0  # sgd without momentum keeps no state


def _weight_bytes(arch: ModelArch, s: Settings) -> int:
    """Bytes of the model's weights as train.py loads them (before ZeRO sharding)."""
    vocab_extra = s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
    if s.method == "qlora":
        quantized = arch.quantizable_params
        rest = arch.params - quantized + vocab_extra
        # prepare_model_for_kbit_training upcasts every non-4-bit parameter to fp32.
        return int(quantized * NF4_BITS_DOUBLE_QUANT / 8) + rest * 4
    per = dtype_bytes(s.precision)
    return (arch.params + vocab_extra) * per


def _trainable_bytes(s: Settings) -> int:
    """Bytes per trainable parameter's value (LoRA adapters are kept in fp32 by peft)."""
    if s.is_peft:
        return 4
    return dtype_bytes(s.precision)


# ---- activations -----------------------------------------------------------------------

# Bytes stored for backward per token per layer, in units of the activation element size,
# for a Llama-style block (RMSNorm, GQA attention through SDPA, SwiGLU MLP). Measured with
# MemTracker on CPU steps of tiny Llama configs (benchmarks/estimator_accuracy.py).
ACT_HIDDEN_COEF = 10.0  # residual stream, norm inputs/outputs (norms keep fp32 copies)
ACT_QKV_COEF = 4.0  # q, k, v after RoPE and the attention output
ACT_FFN_COEF = 4.0  # gate, up, silu(gate), silu(gate)*up


def layer_activation_bytes(arch: ModelArch, s: Settings, tokens: int) -> int:
    """Activations one decoder layer keeps for backward, without checkpointing."""
    e = compute_bytes(s.precision)
    q_dim = arch.heads * arch.head_dim
    kv_dim = arch.kv_heads * arch.head_dim
    per_token = (
        ACT_HIDDEN_COEF * arch.hidden_size
        + ACT_QKV_COEF * (q_dim + kv_dim)
        + ACT_FFN_COEF * arch.intermediate_size * (arch.experts_per_token or 1)
    ) * e
    if s.is_peft and s.lora_dropout > 0:
        # peft applies dropout to each adapted Linear's input separately: a copy + mask.
        per_token += sum(lin.d_in for lin in arch.lora_targets(s.lora_target_modules)) * (e + 1)
    total = per_token * tokens
    if s.attention == "eager":
        seqs = tokens // max(s.max_seq_len, 1)
        # scores, softmax output (and its fp32 upcast) stored per head: s x s each.
        total += seqs * arch.heads * s.max_seq_len**2 * (2 * e + 4)
    return int(total)


def logits_bytes(arch: ModelArch, s: Settings, tokens: int) -> int:
    """Logits (compute dtype), their fp32 upcast for the loss and its saved log-softmax."""
    e = compute_bytes(s.precision)
    vocab = arch.vocab_size + s.new_tokens
    return int(tokens * vocab * (e + 4 + 4 if e == 2 else 4 + 4))


def activation_bytes(arch: ModelArch, s: Settings) -> int:
    """Peak activation memory of one micro-batch, logits included."""
    tokens = s.micro_batch_size * s.max_seq_len
    e = compute_bytes(s.precision)
    per_layer = layer_activation_bytes(arch, s, tokens)
    if s.gradient_checkpointing:
        # Each layer keeps its input; one layer is recomputed at a time during backward.
        stored = arch.layers * tokens * arch.hidden_size * e + per_layer
    else:
        stored = arch.layers * per_layer
    return stored + logits_bytes(arch, s, tokens)


# ---- the estimate ----------------------------------------------------------------------


def _zero_shards(s: Settings, world: int) -> tuple[int, int, int]:
    """Divisors for (weights, gradients, optimizer states) under the ZeRO stage."""
    n = max(world, 1)
    if s.zero_stage == 0:
        return 1, 1, 1
    if s.zero_stage == 1:
        return 1, 1, n
    if s.zero_stage == 2:
        return 1, n, n
    return n, n, n


def estimate_memory(arch: ModelArch, s: Settings, device: Device) -> MemoryEstimate:
    """Memory per GPU (host memory when the device is the CPU) at the step's peak."""
    world = device.world_size
    trainable = trainable_params(arch, s)
    weights = _weight_bytes(arch, s)
    deepspeed = s.zero_stage > 0
    value_bytes = _trainable_bytes(s)
    if deepspeed:
        # DeepSpeed bf16/fp16: 16-bit params and grads, fp32 master + Adam moments (12 B).
        grad_bytes_pp = 2 if s.method == "full" else 4
        opt_pp = (
            4 + optimizer_bytes_per_param(s.optimizer, 4)
            if s.method == "full"
            else optimizer_bytes_per_param(s.optimizer, 4)
        )
    else:
        grad_bytes_pp = value_bytes
        opt_pp = optimizer_bytes_per_param(s.optimizer, value_bytes)
    w_div, g_div, o_div = _zero_shards(s, world)
    frozen_bytes = weights - (trainable * value_bytes if s.method == "full" else 0)
    if s.method == "full":
        weights_gpu = weights // w_div
    else:
        # Adapters are added on top of the (frozen) base weights.
        weights_gpu = (weights + trainable * value_bytes) // w_div
    del frozen_bytes
    if s.zero_stage == 3:
        # The largest module is gathered whole (in 16 bits) while it runs; prefetch keeps ~2.
        weights_gpu += 2 * arch.largest_layer_params * 2
    gradients = int(trainable * grad_bytes_pp) // g_div
    optimizer = int(trainable * opt_pp) // o_div

    cpu_memory = 0
    if s.offload in ("optimizer", "optimizer+params") and deepspeed:
        cpu_memory += optimizer * device.gpus_per_node + int(trainable * 4 // o_div) * device.gpus_per_node
        optimizer = 0
    if s.offload == "optimizer+params" and s.zero_stage == 3:
        cpu_memory += weights_gpu * device.gpus_per_node
        weights_gpu = 4 * arch.largest_layer_params * 2

    activations = activation_bytes(arch, s)
    # Phases: forward end holds all activations; the optimizer step holds full gradients and
    # the optimizer's temporaries (foreach AdamW materialises one state-sized buffer).
    step_temp = 0 if s.optimizer == "adamw_torch_fused" else int(trainable * value_bytes) // o_div
    base = weights_gpu + optimizer
    phases = {
        "forward": base + activations + (gradients if s.gradient_accumulation_steps > 1 else 0),
        "optimizer_step": base + gradients + step_temp,
    }
    peak_phase = max(phases, key=phases.get)
    overhead = 0 if device.is_cpu else CUDA_OVERHEAD + (NCCL_OVERHEAD if world > 1 else 0)
    if peak_phase == "forward":
        comp_grads = gradients if s.gradient_accumulation_steps > 1 else 0
        comp_act = activations
    else:
        comp_grads = gradients + step_temp
        comp_act = 0
    return MemoryEstimate(
        weights=int(weights_gpu),
        gradients=int(comp_grads),
        optimizer=int(optimizer),
        activations=int(comp_act),
        overhead=overhead,
        cpu_memory=int(cpu_memory),
        phases={k: int(v) for k, v in phases.items()},
        peak_phase=peak_phase,
    )


def usable_memory(device: Device) -> int:
    return int(device.gpu.memory * USABLE_FRACTION)
