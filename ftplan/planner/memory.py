"""Per-GPU memory of one training step, by component, at the step's peak.

Built from what the exported ``train.py`` really holds (transformers Trainer / TRL, peft,
bitsandbytes, DeepSpeed), not from a bytes-per-parameter rule of thumb:

* model states: ZeRO paper (arXiv 1910.02054) for the DeepSpeed split; pure-bf16 training keeps
  bf16 optimizer states (torch AdamW's states take the parameter's dtype);
* activations: what each decoder layer saves for backward is traced from the model's own code
  (``ftplan.derive.trace``: one meta-device training step per layer kind, stored in the card or, for
  the hand-written catalog, ``catalog/traces.json``; ``traced_layer_saved``). Without a trace (a
  plain llama / mistral / qwen2 config.json) the Korthikanti et al. 2022 (arXiv 2205.05198) structure,
  tensor by tensor for Llama-style blocks, which equals the trace there (RMSNorm fp32 upcasts,
  SDPA's q/k/v/out/logsumexp, SwiGLU's gate/up/silu, peft's fp32 adapter inputs), each count checked with ``MemTracker`` on real CPU steps of tiny
  configs (``ftplan.probe.calibration.GRID``; ``benchmarks/estimator_accuracy.py`` prints it);
* logits: b*s*V elements; HF's loss upcasts them to fp32: 4 B/logit kept for backward and
  12 B/logit at the start of backward (torchtune's ~8.3 B/element is the forward side).

The peak is the largest of the step's phases (end of forward, peak of backward, optimizer
step), not the sum of each component's maximum; ``components`` report each part's value
at that peak phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftplan.planner.arch import (
    FORMULA_MODEL_TYPES,  # noqa: F401  (re-exported)
    ModelArch,
)
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
        # prepare_model_for_kbit_training upcasts every non-4-bit parameter to fp32; under FSDP2
        # train.py skips it (FSDP2 shards one floating dtype: the bf16 quant storage), so they stay bf16.
        return int(quantized * NF4_BITS_DOUBLE_QUANT / 8) + rest * (2 if s.uses_fsdp else 4)
    per = dtype_bytes(s.precision)
    return (arch.params + vocab_extra) * per


def _trainable_bytes(s: Settings) -> int:
    """Bytes per trainable parameter's value: LoRA adapters are fp32 (peft), QLoRA's bf16 (TRL)."""
    if s.is_peft:
        return adapter_bytes(s)
    return dtype_bytes(s.precision)


def adapter_bytes(s: Settings) -> int:
    """Bytes per element of the LoRA adapters and of the inputs peft casts to their dtype."""
    return QLORA_ADAPTER_BYTES if s.method == "qlora" else ADAPTER_BYTES


# ---- activations -----------------------------------------------------------------------
#
# What a Llama-style decoder layer keeps for backward, tensor by tensor. Every term below was
# read off the modules (transformers 5 LlamaDecoderLayer, peft LoRA Linear, torch autograd's
# saved tensors) and checked with MemTracker on CPU steps of tiny Llama configs: the per-layer
# bytes per token solve exactly to these counts for four shapes that vary h, q, k and f
# independently (full fp32: 24h+8q+8k+16f, full bf16: 16h+4q+4k+8f, LoRA fp32: 16h+8q+8k+16f,
# LoRA bf16: 28h+8q+4k+10f, + 4 B logsumexp per head + 8 B rsqrt; benchmarks/estimator_accuracy.py
# reruns the comparison). h = hidden, q = heads*head_dim, k = kv_heads*head_dim, f = ffn.

FP32 = 4
ADAPTER_BYTES = 4
"""peft keeps LoRA adapters in fp32 (autocast_adapter_dtype) and casts each adapter's input to it."""
QLORA_ADAPTER_BYTES = 2
"""TRL's SFTTrainer (what train.py runs) casts a quantized model's trainable adapters to bf16,
whatever the compute dtype (trl/trainer/sft_trainer.py, "the PEFT adapter weights are converted
to bf16", after the QLoRA paper): bf16 values, gradients and AdamW states."""
RMSNORM_INPUT_BYTES = FP32
"""LlamaRMSNorm upcasts its input to fp32 and keeps that copy for pow/mul backward (4 B per
element of h, twice per layer and once after the last layer), plus one fp32 rsqrt per token."""
SDPA_LSE_BYTES = FP32
"""SDPA (flash / memory-efficient / CPU flash) saves q, k, v, its output and a fp32 logsumexp per
head and token; with GQA it runs on the kv heads directly (enable_gqa), so k, v are kv-sized."""
SWIGLU_SAVED = 3
"""gate, up and silu(gate) (act_fn saves its input, the product saves both factors)."""
LOGITS_SAVED_BYTES = FP32
"""HF's ForCausalLMLoss upcasts the logits to fp32; log_softmax keeps its fp32 output for backward."""
LOGITS_BACKWARD_EXTRA_BYTES = 2 * FP32
"""At the start of backward the fp32 nll_loss gradient and log_softmax's fp32 input gradient
exist together with the saved log-softmax: 12 B per logit in all (measured on every CPU case)."""
LOSS_IMPLEMENTATION = "trl_fused"
"""Which loss the logits terms model. The exported train.py trains with TRL's SFTTrainer, which
patches in a fused, tiled LM head (trl/kernels/chunked_logprob.py): no (b, s, V) logits exist.
"trl_fused" models it (tile buffer, fp32 hidden/weight gradients; on the CPU the torch
fallback's per-logit temporaries, measured); "hf" is the model's own cross-entropy on fp32
logits (HF Trainer, measured: 4 B/logit saved, 12 B/logit at the start of backward). The GPU side
of "trl_fused" is read from TRL's code (Triton folds tiles in place) and awaits a GPU check."""
TRL_MODELED = ">=1.15,<2"
"""The TRL releases whose SFTTrainer loss the "trl_fused" model describes (read from each wheel's
trl/trainer/sft_trainer.py and sft_config.py): 1.15 added ``add_fused_lm_head`` and always patches
it in; 1.6-1.14 default to ``loss_type="chunked_nll"`` (per-chunk fp32 logits under checkpointing:
no full logits, other constants); 1.0-1.5 default to "nll", the model's own loss on full logits
(what ``training.loss = "full_logits"`` plans). requirements.txt pins this range; the launch
preflight warns when the installed TRL is outside it."""
LOSS_MODELS = {"chunked": "trl_fused", "full_logits": "hf"}
"""The logits model of each ``training.loss``: chunked = TRL's fused LM head (no b*s*V logits; Liger's
fused linear cross-entropy and torchtune's chunked CE keep as little); full_logits = the model's own loss."""


def loss_model(s: Settings) -> str:
    """The logits model the settings' ``loss`` runs (``LOSS_IMPLEMENTATION`` for the default)."""
    return LOSS_IMPLEMENTATION if s.loss == "chunked" else LOSS_MODELS[s.loss]


TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
"""TRL's fused head projects [min(N, 4096), 32768] tiles into one reused buffer (compute dtype);
its backward accumulates the hidden gradient (N x h) and, when lm_head trains, the weight
gradient (V x h) in fp32 before casting them back."""
TRL_CPU_FORWARD_TEMP = 13
TRL_CPU_BACKWARD_TEMP = 29
"""Bytes per logit of a tile for TRL's torch fallback (no Triton, e.g. on the CPU): measured with
MemTracker, forward 12.0-12.9, backward 27.8-28.9 over four tiny configs (fp32/bf16, V 512/32000)."""
LAYER_BACKWARD_WORK = 3
"""Transient while a layer's MLP runs backward: 3 ffn-sized gradients (down_proj's input, silu
and up branches) plus the hidden-sized gradient flowing down, in the activation dtype
(MemTracker's TEMP at the backward peak is exactly (3f + h) * e in every no-checkpointing case)."""
DROPOUT_MASK_BYTES_CUDA = 1
"""peft's nn.Dropout on each adapter's input keeps, per input element, its output (lora_A's
input, in the adapter dtype) + native_dropout's bool mask (the fused kernel torch uses on CUDA)."""
"""Off CUDA torch builds dropout as input * noise with a noise tensor in the input's dtype kept
for backward (measured, fp32 adapters: +4 B per down_proj input element over no dropout, 8 B in all)."""
EAGER_SCORE_BYTES = FP32
"""Eager attention keeps softmax(dtype=float32)'s output per head: s*s fp32, plus its cast back
to the activation dtype when that is 16-bit."""
CHECKPOINT_RECOMPUTE_ALIVE = 1.0
CPU_ADAMW_TEMP_TENSORS = 2
"""torch AdamW off CUDA runs the single-tensor path: two temporaries the size of the largest
trainable tensor (sqrt(exp_avg_sq) and its quotient) plus one the size of the largest layer
matrix (measured: optimizer-phase peak - end of backward = 3 x h*f without a big embedding
trainable, 2 x V*h + h*f with one)."""
FOREACH_ADAMW_TEMP = 1
"""On CUDA torch AdamW defaults to foreach: _foreach_sqrt(exp_avg_sq) materialises one
state-sized list for all trainable parameters; fused AdamW has none."""


def compute_bytes(precision: str) -> int:
    """Bytes per activation element: 16-bit under bf16 / mixed precision, else 4."""
    return 4 if precision == "fp32" else 2


def act_bytes(s: Settings) -> int:
    """Bytes per element of the hidden states the model really carries.

    QLoRA: prepare_model_for_kbit_training casts the embeddings, norms and lm_head to fp32 and
    bitsandbytes' Linear4bit returns its input's dtype, so the residual stream is fp32 whatever
    the compute dtype (measured: QLoRA bf16 activations = LoRA fp32 activations).
    """
    if s.method == "qlora" and not s.uses_fsdp:  # under FSDP2 train.py keeps them in 16 bits
        return FP32
    return compute_bytes(s.precision)


_ADAPTER_INPUT = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "qkv_proj": "attn_in",
    "o_proj": "attn_out",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "gate_up_proj": "mlp_in",
    "down_proj": "mlp_act",
}


@dataclass(slots=True)
class Activations:
    """Activation bytes of one micro-batch, by what holds them (built by the thousand in the
    planner's searches, hence slots and no frozen-instance checks)."""

    layer_saved: int
    """One decoder layer's saved tensors without checkpointing."""
    layer_input: int
    """One layer's input: all a checkpointed layer keeps until its recompute."""
    layer_work: int
    """Transient bytes while one layer runs backward (gradients in flight)."""
    forward_work: int
    """Transient bytes while one layer runs forward (with checkpointing nothing else is kept)."""
    head_saved: int
    """Final norm, rotary tables and the input batch."""
    shared_saved: int
    """Rotary tables and the input batch (alive until the end of backward)."""
    final_norm_input: int
    """The final norm's fp32 input copy, freed before the layers' backward starts."""
    logits_saved: int
    logits_forward_extra: int
    """Logits in the model dtype and their fp32 copy, alive at the end of forward only."""
    logits_backward_extra: int
    checkpointing: bool
    layers: int

    @property
    def stored(self) -> int:
        """Everything kept for backward at the end of forward (what the plan shows)."""
        per_layer = self.layer_input if self.checkpointing else self.layer_saved
        return self.layers * per_layer + self.head_saved + self.logits_saved


def _layer_saved_per_token(arch: ModelArch, s: Settings, cpu: bool = False) -> tuple[float, float, float]:
    """Memoised ``_layer_saved_per_token_uncached``: the settings search asks for the same
    per-token figures with many batch sizes and sequence lengths."""
    targets = s.lora_target_modules if isinstance(s.lora_target_modules, str) else tuple(s.lora_target_modules)
    key = ("saved", s.method, s.precision, s.attention, s.lora_r, s.lora_dropout > 0, targets, cpu)
    if s.uses_fsdp:
        key += ("fsdp2",)
    memo = arch.memo
    found = memo.get(key)
    if found is None:
        found = memo[key] = _layer_saved_per_token_uncached(arch, s, cpu)
    return found


def _layer_saved_per_token_uncached(arch: ModelArch, s: Settings, cpu: bool = False) -> tuple[float, float, float]:
    """Bytes one layer saves for backward per token: (attention half, MLP half, down_proj's input).

    The attention half is the input norm, q/k/v/out and their adapters; the MLP half the
    post-attention norm, SwiGLU and their adapters. Eager's s*s scores are counted separately.
    """
    e = act_bytes(s)
    h, f = arch.hidden_size, arch.intermediate_size * (arch.experts_per_token or 1)
    q, k = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    full = s.method == "full"
    norm = RMSNORM_INPUT_BYTES * h + FP32 + (2 * e * h if full else 0)  # + normalised x, output
    attn, mlp = norm, norm
    if s.attention == "eager":
        kv = q if arch.kv_heads < arch.heads else k  # repeat_kv copies are what the matmuls save
        attn += e * (q + 2 * kv)  # q, k, v; the softmax output is counted per sequence
        out_saved = False
    else:
        attn += e * (2 * q + 2 * k) + SDPA_LSE_BYTES * arch.heads
        out_saved = True
    mlp += SWIGLU_SAVED * e * f
    down_in = 0.0
    if full:
        mlp += e * f  # silu(gate) * up, down_proj's input
        down_in = e * f
        if not out_saved:
            attn += e * q  # o_proj's input
    if s.is_peft:
        extra_attn, extra_mlp, adapter_down_in = _adapter_saved_per_token(arch, s, cpu, out_saved)
        attn += extra_attn
        mlp += extra_mlp
        down_in = adapter_down_in or down_in
    return attn, mlp, down_in


def _adapter_saved_per_token(arch: ModelArch, s: Settings, cpu: bool, out_saved: bool) -> tuple[float, float, float]:
    """What peft's LoRA adapters add to a frozen layer's saved bytes per token: (attention half, MLP half,
    down_proj adapter's input). Each adapter keeps lora_A's output (r values) and its input cast to the
    adapter dtype; one copy serves every adapter on the same input when no cast is needed (and none when
    that input is already kept: SDPA's output for o_proj). Dropout keeps its output and mask/noise."""
    e = act_bytes(s)
    f = arch.intermediate_size * (arch.experts_per_token or 1)
    q = arch.heads * arch.head_dim
    attn = mlp = down_in = 0.0
    dims = {"attn_in": arch.hidden_size, "attn_out": q, "mlp_in": arch.hidden_size, "mlp_act": f}
    counts = dict.fromkeys(dims, 0)
    a = adapter_bytes(s)
    dropout = 2 * a if cpu else a + DROPOUT_MASK_BYTES_CUDA  # output + noise / mask
    for lin in arch.lora_targets(s.lora_target_modules):
        group = _ADAPTER_INPUT.get(lin.name.rsplit(".", 1)[-1], "attn_in")
        counts[group] += 1
        extra = a * s.lora_r  # lora_A's output, saved by lora_B
        if group.startswith("attn"):
            attn += extra
        else:
            mlp += extra
    for group, n in counts.items():
        if not n:
            continue
        d = dims[group]
        if s.lora_dropout > 0:
            extra = n * dropout * d
        elif e == a:
            extra = 0 if (group == "attn_out" and out_saved) else a * d  # shared input
        else:
            extra = n * a * d  # each adapter casts its input to the adapter dtype and keeps it
        if group.startswith("attn"):
            attn += extra
        else:
            mlp += extra
        if group == "mlp_act":
            down_in = extra / n
    return attn, mlp, down_in


def traced_layer_saved(arch: ModelArch, s: Settings) -> tuple[float, float] | None:
    """The traced (bytes per token, bytes per sequence per seq_len^2) of one average decoder layer for
    these settings (the card's, or the hand catalog's ``catalog/traces.json``), base model only (LoRA
    adapters are added from ``_adapter_saved_per_token``); None when the model was not traced: then
    the Llama-shaped formula above is used (tests/planner/test_traced_vs_formula.py holds it to the
    trace for the Llama-shaped types it is kept for).

    LoRA / QLoRA use the ``frozen`` trace; the dtype is that of the hidden states the run carries
    (``act_bytes``: fp32 for QLoRA's fp32 residual stream, bf16 for every 16-bit compute dtype);
    every non-eager kernel keeps what flash-attention keeps.
    """
    mode = "full" if s.method == "full" else "frozen"
    dtype = "fp32" if act_bytes(s) == FP32 else "bf16"
    attention = "eager" if s.attention == "eager" else "flash"
    key = ("traced", mode, dtype, attention)
    if key not in arch.memo:
        arch.memo[key] = arch.traced_saved(mode, dtype, attention)
    found = arch.memo[key]
    if found is None:
        return None
    per_token, per_score = found
    return per_token, (per_score if attention == "eager" else 0.0)


def activations(arch: ModelArch, s: Settings, cpu: bool = False, loss: str | None = None) -> Activations:
    """The activation model of one micro-batch (see the constants above); ``cpu``: torch's CPU kernels."""
    return ActivationModel(arch, s, cpu, loss).at(s.micro_batch_size, s.max_seq_len)


class ActivationModel:
    """Bytes per token (and per attention score) of everything a micro-batch keeps or works on.

    Everything but the batch shape is folded into coefficients once; ``at`` scales them to a
    micro-batch, so a search over shapes is a few multiplications per try.
    """

    def __init__(self, arch: ModelArch, s: Settings, cpu: bool = False, loss: str | None = None):
        e = act_bytes(s)
        h, f = arch.hidden_size, arch.intermediate_size * (arch.experts_per_token or 1)
        q, k = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
        attn, mlp, down_in = _layer_saved_per_token(arch, s, cpu)
        full = s.method == "full"
        self.e, self.heads, self.layers, self.h = e, arch.heads, arch.layers, h
        self.eager = s.attention == "eager"
        self.checkpointing = s.gradient_checkpointing
        self.layer_saved = attn + mlp
        self.mlp_saved = mlp
        # eager's softmax output per head (+ its cast back to 16 bits), per sequence per seq_len^2
        self.score_saved = arch.heads * (EAGER_SCORE_BYTES + (e if e < FP32 else 0)) if self.eager else 0.0
        traced = traced_layer_saved(arch, s)
        if traced is not None:  # the model's own code, traced on the meta device (card), replaces the formula
            adapters = _adapter_saved_per_token(arch, s, cpu, not self.eager)[:2] if s.is_peft else (0.0, 0.0)
            saved = traced[0] + sum(adapters)
            self.mlp_saved = mlp * saved / max(attn + mlp, 1.0)  # the formula's MLP share of it
            self.layer_saved = saved
            self.score_saved = traced[1]
        self.mlp_work = (LAYER_BACKWARD_WORK * f + h) * e
        # Measured: with fp32 activations the peak comes after down_proj's backward has freed
        # its saved input; with 16-bit activations it comes before (MemTracker, every case).
        self.mlp_freed = down_in if e == FP32 else 0
        self.attn_work = (2 * q + 2 * k) * e
        # bitsandbytes dequantizes one weight at a time to the compute dtype (and its transpose in backward)
        self.dequantized = 2 * 2 * arch.largest_matrix if s.method == "qlora" else 0
        self.final_norm = RMSNORM_INPUT_BYTES * h + FP32 + (2 * e * h if full else 0)
        self.shared = 2 * arch.head_dim * e
        self.vocab = arch.vocab_size + s.new_tokens
        self.logit_bytes = (
            FP32 if s.method == "qlora" and not s.uses_fsdp else compute_bytes(s.precision)
        )  # lm_head's dtype
        self.fused_loss = (loss or loss_model(s)) == "trl_fused"
        self.cpu = cpu
        head_trains = full or bool(s.new_tokens)
        self.head_weight_grad = self.vocab * h * (FP32 + self.logit_bytes) if head_trains else 0

    def at(self, b: int, seq: int) -> Activations:
        """The activations of a micro-batch of ``b`` sequences of ``seq`` tokens."""
        e, h = self.e, self.h
        tokens = b * seq
        layer_saved = self.layer_saved * tokens
        mlp_work = self.mlp_work * tokens
        if self.mlp_freed:
            mlp_work -= self.mlp_freed * tokens
        attn_work = self.attn_work * tokens
        forward_work = mlp_work
        if self.eager:
            scores = b * self.heads * seq * seq
            layer_saved += b * seq * seq * self.score_saved
            attn_work += scores * (e + FP32)  # softmax backward: the probabilities' gradient + fp32 input grad
            forward_work = max(forward_work, scores * (3 * e + FP32))  # q@k^T, scaled, masked, fp32 softmax
        mlp_work += self.dequantized
        # The layer's backward peaks either in the MLP (everything saved + MLP gradients) or in the
        # attention (the MLP half already freed + attention gradients / eager's s*s gradients).
        work = max(mlp_work, attn_work - self.mlp_saved * tokens)
        head = self.final_norm * tokens  # final norm
        shared = self.shared * tokens  # rotary cos and sin, shared by all layers
        shared += 2 * 8 * tokens  # input_ids and labels (int64)
        head += shared
        logit_bytes = self.logit_bytes
        logits = tokens * self.vocab
        if self.fused_loss:
            tile = min(tokens, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * logit_bytes
            logits_saved = tokens * (h * logit_bytes + 2 * FP32 + 8)  # gathered hidden, log_z, entropy, targets
            logits_forward_extra = tile
            logits_backward_extra = tile + tokens * h * FP32 + self.head_weight_grad
            if self.cpu:  # without Triton each tile is folded with torch ops: fp32 temporaries per logit of a tile
                tile_logits = min(tokens, TRL_TOKEN_CHUNK) * min(self.vocab, TRL_VOCAB_CHUNK)
                logits_forward_extra += TRL_CPU_FORWARD_TEMP * tile_logits
                logits_backward_extra += TRL_CPU_BACKWARD_TEMP * tile_logits
        else:
            logits_saved = LOGITS_SAVED_BYTES * logits
            logits_forward_extra = logits * (logit_bytes + (FP32 if logit_bytes < FP32 else 0))
            logits_backward_extra = LOGITS_BACKWARD_EXTRA_BYTES * logits
        return Activations(
            layer_saved=int(layer_saved),
            layer_input=int(e * h * tokens),
            layer_work=int(work),
            forward_work=int(forward_work),
            head_saved=int(head),
            shared_saved=int(shared),
            final_norm_input=int((RMSNORM_INPUT_BYTES * h + FP32) * tokens),
            logits_saved=int(logits_saved),
            logits_forward_extra=int(logits_forward_extra),
            logits_backward_extra=int(logits_backward_extra),
            checkpointing=self.checkpointing,
            layers=self.layers,
        )


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


# ---- FSDP2 ------------------------------------------------------------------------------
#
# What torch.distributed.fsdp.fully_shard keeps, as accelerate's fsdp2_prepare_model sets it up
# (accelerate/utils/fsdp_utils.py) for the exported train.py: one unit per decoder layer
# (transformer_layer_cls_to_wrap), the embeddings and the [final norm, lm_head] tail as their own
# units, the tail not resharded after forward. Each parameter is a DTensor sharded on dim 0 in
# its original dtype: bf16 when the model is loaded in bf16 and accelerate's mixed precision is
# "no" (precision "bf16": no fp32 master copy, bf16 AdamW states; 8 B/param, unlike DeepSpeed's
# 16), fp32 with a MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16) under *-mixed
# (accelerate upcasts trainable parameters to fp32). zero_stage 3 = reshard_after_forward=True,
# 2 = False (every unit stays gathered from its forward to its backward).

FSDP_GATHERED_UNITS = 3
"""Decoder-layer units unsharded at once: the one computing, the next one prefetched (FSDP2
issues the next all-gather before the current unit runs, in forward and in backward), and the
all-gather output of the prefetched one while it is copied out into the parameters."""
FSDP_REDUCE_UNITS = 2
"""Units whose unsharded gradients exist at once in backward: the one being reduce-scattered and
the one computing its gradients."""


def fsdp_param_bytes(s: Settings) -> tuple[int, int]:
    """(bytes of a trainable parameter as FSDP2 stores its shard, bytes as it is gathered for compute)."""
    if s.is_peft:
        value = adapter_bytes(s)
        return value, value
    if s.precision in ("bf16-mixed", "fp16-mixed"):
        return FP32, 2  # fp32 master shards, gathered in param_dtype
    stored = dtype_bytes(s.precision)
    return stored, stored


def fsdp_frozen_gather_bytes(s: Settings) -> float:
    """Bytes per parameter of a gathered decoder layer's frozen weights (LoRA/QLoRA's base)."""
    if s.method == "qlora":
        return NF4_BITS_DOUBLE_QUANT / 8  # the 4-bit weights travel in their bf16 quant storage
    return FP32 if s.precision == "fp32" else 2  # bf16 as loaded, or cast to param_dtype under *-mixed


@dataclass(frozen=True)
class Fsdp2States:
    weights: int
    """Sharded parameters + the units gathered while they compute (per GPU)."""
    gradients: int
    optimizer: int
    reduce_buffer: int
    """Unsharded gradients of the units being reduce-scattered (backward only)."""
    cpu_memory: int
    """Host RAM per node: the offloaded shards, or rank 0's full copy while loading."""


def fsdp2_states(arch: ModelArch, s: Settings, device: Device, trainable: int, weights: int) -> Fsdp2States:
    """Model states per GPU under FSDP2 at ``s.zero_stage`` 2 or 3 (``weights`` as loaded, unsharded)."""
    n = max(device.world_size, 1)
    stored, gathered = fsdp_param_bytes(s)
    frozen_gather = fsdp_frozen_gather_bytes(s)
    if s.method == "full":
        loaded = (weights // dtype_bytes(s.precision)) * stored  # *-mixed: the fp32 copy accelerate keeps
        unit = arch.largest_layer_params * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * gathered
        everything = (arch.params + s.new_tokens * arch.hidden_size) * gathered
        unit_grads = arch.layer_params
    else:
        loaded = weights + trainable * stored
        per_layer = trainable // max(arch.layers, 1)
        unit = int(arch.layer_params * frozen_gather) + per_layer * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * (FP32 if s.precision == "fp32" else 2)
        everything = int(weights) + trainable * gathered
        unit_grads = per_layer
    sharded = loaded // n
    gathered_bytes = FSDP_GATHERED_UNITS * unit + tail
    if (
        s.zero_stage < 3
    ):  # reshard_after_forward=False (stage 2; FSDP2 has no 1): the model stays gathered until backward
        gathered_bytes = everything + unit
    reduce_bytes = gathered if s.method == "full" else stored
    gradients = trainable * stored // n
    optimizer = int(trainable * optimizer_bytes_per_param(s.optimizer, stored)) // n
    reduce_buffer = FSDP_REDUCE_UNITS * unit_grads * reduce_bytes
    loading = weights  # cpu_ram_efficient_loading: rank 0 reads the checkpoint, the others wait on meta
    if s.offload != "none":  # CPUOffloadPolicy: shards, their gradients and the optimizer step live on the host
        host = (sharded + gradients + optimizer) * device.gpus_per_node
        return Fsdp2States(gathered_bytes, 0, 0, reduce_buffer, max(host, loading))
    return Fsdp2States(sharded + gathered_bytes, gradients, optimizer, reduce_buffer, loading)


def _largest_trainable_tensors(arch: ModelArch, s: Settings) -> tuple[int, int]:
    """(largest trainable tensor, largest trainable decoder-layer matrix), in elements."""
    if s.method == "full":
        layer = arch.largest_matrix
        if arch.experts:
            layer = max(layer, arch.expert_params_per_layer // arch.experts)
        embedding = arch.embedding_params + s.new_tokens * arch.hidden_size
        return max(embedding, layer), layer
    targets = arch.lora_targets(s.lora_target_modules)
    largest = max((s.lora_r * max(lin.d_in, lin.d_out) for lin in targets), default=0)
    return largest, largest


def _step_temp(arch: ModelArch, s: Settings, device: Device, trainable_bytes: int, value_bytes: int) -> int:
    """Temporaries of optimizer.step() beyond the states themselves."""
    if s.uses_deepspeed:
        # DeepSpeed's fused Adam on fp32 partitions, plus the fp32 -> 16-bit copy-back buffer.
        return 0
    if s.uses_fsdp and s.offload != "none":
        return 0  # the step runs on the host
    shards = device.world_size if s.uses_fsdp else 1
    if s.optimizer == "adamw_torch_fused" or s.optimizer not in ("adamw_torch",):
        return 0
    if device.is_cpu:
        largest, layer = _largest_trainable_tensors(arch, s)
        return (CPU_ADAMW_TEMP_TENSORS * largest + layer) * value_bytes // shards
    return FOREACH_ADAMW_TEMP * trainable_bytes  # already the sharded gradients' size under FSDP2


def estimate_memory(arch: ModelArch, s: Settings, device: Device, loss: str | None = None) -> MemoryEstimate:
    """Memory per GPU (host memory when the device is the CPU) at the step's peak."""
    return MemoryModel(arch, s, device, loss).estimate()


PHASES = (
    "forward_end",
    "forward_layer",
    "backward_start",
    "backward_top_layer",
    "backward_bottom_layer",
    "backward_end",
    "optimizer_step",
)
"""The points of a step the memory model checks, in the order they happen."""


class MemoryModel:
    """One method's settings on one device, as a function of the batch shape.

    Phases (what is alive at each, with set_to_none zero_grad as the Trainer does):
    forward end: weights + optimizer states + saved activations + logits (+ accumulated grads);
    backward: the largest of its start (all activations + 12 B per logit), the top layer
    (activations + first gradients + that layer's recompute and working set), the bottom layer
    (all gradients but the embedding's + one layer's activations) and its end (all gradients);
    optimizer step: gradients + states + the step's temporaries.

    The model states (weights, gradients, optimizer states, offload) do not depend on the
    micro-batch, the sequence length or accumulation, so they are worked out once here; the
    planner's searches over batch shapes then pay for one activation model per shape
    (``peak``) instead of a full estimate and a copy of the settings.
    """

    def __init__(self, arch: ModelArch, s: Settings, device: Device, loss: str | None = None):
        self.settings = s
        world = device.world_size
        trainable = trainable_params(arch, s)
        weights = _weight_bytes(arch, s)
        deepspeed = s.uses_deepspeed
        value_bytes = _trainable_bytes(s)
        if deepspeed:
            # DeepSpeed bf16/fp16: 16-bit params and grads, fp32 master + Adam moments (12 B);
            # LoRA's fp32 adapters need no master copy, QLoRA's bf16 ones do.
            sixteen_bit = s.method in ("full", "qlora")
            grad_bytes_pp = 2 if sixteen_bit else 4
            opt_pp = optimizer_bytes_per_param(s.optimizer, 4) + (4 if sixteen_bit else 0)
        else:
            grad_bytes_pp = value_bytes
            opt_pp = optimizer_bytes_per_param(s.optimizer, value_bytes)
        w_div, g_div, o_div = _zero_shards(s, world)
        if s.method == "full":
            weights_gpu = weights // w_div
        else:
            # Adapters are added on top of the (frozen) base weights.
            weights_gpu = (weights + trainable * value_bytes) // w_div
        if s.zero_stage == 3:
            # The largest module is gathered whole (in 16 bits) while it runs; prefetch keeps ~2.
            weights_gpu += 2 * arch.largest_layer_params * 2
        gradients = int(trainable * grad_bytes_pp) // g_div
        optimizer = int(trainable * opt_pp) // o_div

        cpu_memory = 0
        if s.offload in ("optimizer", "optimizer+params") and deepspeed:
            cpu_memory += optimizer * device.gpus_per_node + int(trainable * 4 // o_div) * device.gpus_per_node
            optimizer = 0
        if s.offload == "optimizer+params" and s.zero_stage == 3 and deepspeed:
            cpu_memory += weights_gpu * device.gpus_per_node
            weights_gpu = 4 * arch.largest_layer_params * 2
        self.reduce_buffer = 0
        if s.uses_fsdp:
            fsdp = fsdp2_states(arch, s, device, trainable, weights)
            weights_gpu, gradients, optimizer = fsdp.weights, fsdp.gradients, fsdp.optimizer
            cpu_memory, self.reduce_buffer = fsdp.cpu_memory, fsdp.reduce_buffer

        # Gradients present at each point of backward (sharded like the full set). Backward runs
        # lm_head first, then the layers top-down, each MLP before its attention.
        if s.method == "full":
            head_params = arch.lm_head_params + arch.final_norm_params
            if arch.tied_embeddings:
                head_params += arch.embedding_params  # lm_head's gradient is the embedding's
            layer_params = arch.layer_params
            first_matrix = arch.largest_matrix
        else:
            head_params = 0
            layer_params = trainable // max(arch.layers, 1)
            first_matrix = layer_params // 2
        frac = gradients / max(trainable, 1)
        self.weights, self.gradients, self.optimizer, self.cpu_memory = weights_gpu, gradients, optimizer, cpu_memory
        self.g_top = int((head_params + first_matrix) * frac)
        self.g_bottom = int((head_params + (arch.layers - 1) * layer_params + first_matrix) * frac)
        self.step_temp = _step_temp(arch, s, device, gradients, value_bytes)
        self.overhead = 0 if device.is_cpu else CUDA_OVERHEAD + (NCCL_OVERHEAD if world > 1 else 0)
        self.activations = ActivationModel(arch, s, cpu=device.is_cpu, loss=loss)

    def _phases(self, batch: int, seq_len: int, accumulation: int) -> tuple[tuple[int, int, int], ...]:
        """(gradients, activations, step temporaries) alive at each of ``PHASES``."""
        act = self.activations.at(batch, seq_len)
        gradients = self.gradients
        held = gradients if accumulation > 1 else 0  # grads kept across micro-batches
        stored = act.stored
        ckpt = act.checkpointing
        recompute = int(CHECKPOINT_RECOMPUTE_ALIVE * act.layer_saved) if ckpt else 0
        # Forward: the end (logits, their fp32 copy, log-softmax) or, with checkpointing, one
        # layer's transient forward on top of the stored layer inputs.
        if ckpt:
            top_acts = stored - act.logits_saved - act.final_norm_input + recompute + act.layer_work
            bottom_acts = act.layer_input + recompute + act.layer_work + act.shared_saved
        else:
            top_acts = stored - act.logits_saved - act.final_norm_input + act.layer_work
            bottom_acts = act.layer_saved + act.layer_work + act.shared_saved
        return (
            (held, stored + act.logits_forward_extra, 0),
            (held, stored - act.logits_saved + act.forward_work if ckpt else 0, 0),
            (held, stored + act.logits_backward_extra, 0),
            (max(held, self.g_top) + self.reduce_buffer, top_acts, 0),
            (max(held, self.g_bottom) + self.reduce_buffer, bottom_acts, 0),
            (gradients, act.layer_input, 0),  # the gradient flowing down the residual stream
            (gradients, 0, self.step_temp),
        )

    def peak(self, batch: int, seq_len: int, accumulation: int) -> int:
        """Total bytes at the step's peak for this batch shape (``estimate().total``)."""
        base = self.weights + self.optimizer + self.overhead
        return base + max([g + a + t for g, a, t in self._phases(batch, seq_len, accumulation)])

    def estimate(self, batch: int | None = None, seq_len: int | None = None, accumulation: int | None = None):
        """The estimate by component at the peak phase (the settings' own shape by default)."""
        s = self.settings
        shape = (
            s.micro_batch_size if batch is None else batch,
            s.max_seq_len if seq_len is None else seq_len,
            s.gradient_accumulation_steps if accumulation is None else accumulation,
        )
        detail = dict(zip(PHASES, self._phases(*shape), strict=True))
        base = self.weights + self.optimizer
        totals = {k: base + g + a + t for k, (g, a, t) in detail.items()}
        phases = {
            "forward": max(totals["forward_end"], totals["forward_layer"]),
            "backward": max(v for k, v in totals.items() if k.startswith("backward")),
            "optimizer_step": totals["optimizer_step"],
        }
        peak_key = max(totals, key=totals.get)
        g, a, t = detail[peak_key]
        return MemoryEstimate(
            weights=int(self.weights),
            gradients=int(g),
            optimizer=int(self.optimizer + t),
            activations=int(a),
            overhead=self.overhead,
            cpu_memory=int(self.cpu_memory),
            phases={k: int(v) for k, v in phases.items()},
            peak_phase=peak_key.split("_")[0] if peak_key != "optimizer_step" else peak_key,
        )


def usable_memory(device: Device) -> int:
    return int(device.gpu.memory * USABLE_FRACTION)
