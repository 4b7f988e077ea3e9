"""Activations per GPU: what a micro-batch keeps for backward and works on, logits and loss included.

What each decoder layer saves for backward is traced from the model's own code
(``ftplan.derive.trace``: one meta-device training step per layer kind, stored in the card or, for
the hand-written catalog, ``catalog/traces.json``; ``traced_layer_saved``). Without a trace (a
plain llama / mistral / qwen2 config.json) the Korthikanti et al. 2022 (arXiv 2205.05198) structure,
tensor by tensor for Llama-style blocks, which equals the trace there (RMSNorm fp32 upcasts,
SDPA's q/k/v/out/logsumexp, SwiGLU's gate/up/silu, peft's fp32 adapter inputs), each count checked
with ``MemTracker`` on real CPU steps of tiny configs (``ftplan.probe.calibration.GRID``;
``benchmarks/estimator_accuracy.py`` prints it). Logits: b*s*V elements; HF's loss upcasts them to
fp32: 4 B/logit kept for backward and 12 B/logit at the start of backward (torchtune's ~8.3
B/element is the forward side); TRL's fused LM head keeps none.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplan.planner.arch import ModelArch
from ftplan.planner.model_states import FP32, adapter_bytes
from ftplan.planner.settings import Settings

# ---- activations -----------------------------------------------------------------------
#
# What a Llama-style decoder layer keeps for backward, tensor by tensor. Every term below was
# read off the modules (transformers 5 LlamaDecoderLayer, peft LoRA Linear, torch autograd's
# saved tensors) and checked with MemTracker on CPU steps of tiny Llama configs: the per-layer
# bytes per token solve exactly to these counts for four shapes that vary h, q, k and f
# independently (full fp32: 24h+8q+8k+16f, full bf16: 16h+4q+4k+8f, LoRA fp32: 16h+8q+8k+16f,
# LoRA bf16: 28h+8q+4k+10f, + 4 B logsumexp per head + 8 B rsqrt; benchmarks/estimator_accuracy.py
# reruns the comparison). h = hidden, q = heads*head_dim, k = kv_heads*head_dim, f = ffn.

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
    """What the final norm keeps (its fp32 input copy; training its weight, also the normalised input and the
    output lm_head keeps), freed before the layers' backward starts."""
    logits_saved: int
    logits_forward_extra: int
    """Logits in the model dtype and their fp32 copy, alive at the end of forward only."""
    logits_backward_extra: int
    checkpointing: bool
    layers: int
    layer_forward_peak: int = 0
    """The most one layer's forward holds at once (traced: saved tensors and temporaries); 0 when not traced."""
    recompute_forward: int = 0
    """A checkpointed layer's recompute at its fullest: ``layer_forward_peak`` plus the gradient arriving
    from the layer above; 0 when not traced or not checkpointed."""

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
    mlp += e * arch.expert_adapter_saved(s.lora_target_modules)[0]  # adapted experts / router keep inputs
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
    _, dtype, attention = _trace_key(s)
    found = _traced(arch, s, "saved_bytes")
    if found is None:
        return None
    per_token, per_score = found
    if s.attention == "sdpa" and arch.card is not None:  # sliding-window layers: SDPA gets a mask
        mask_token, mask_score = arch.card.sdpa_mask_saved(FP32 if dtype == "fp32" else 2)
        return per_token + mask_token, mask_score
    return per_token, (per_score if attention == "eager" else 0.0)


def _trace_key(s: Settings) -> tuple[str, str, str]:
    """(mode, dtype, attention) of the traced figure these settings use."""
    mode = "full" if s.method == "full" else "frozen"
    dtype = "fp32" if act_bytes(s) == FP32 else "bf16"
    return mode, dtype, "eager" if s.attention == "eager" else "flash"


def _traced(arch: ModelArch, s: Settings, figure: str) -> tuple[float, float] | None:
    """One of the card's traced per-layer figures for these settings (base model only: no adapters),
    memoised per architecture; None when the model was not traced."""
    mode, dtype, attention = _trace_key(s)
    key = ("traced", figure, mode, dtype, attention)
    if key not in arch.memo:
        arch.memo[key] = arch.traced(figure, mode, dtype, attention)
    return arch.memo[key]


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
        self.forward_peak: tuple[float, float] | None = None
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
            peak = _traced(arch, s, "forward_peak_bytes")  # the most a layer's forward holds at once
            if peak is not None:  # the adapters' saved inputs come on top
                self.forward_peak = (peak[0] + sum(adapters), peak[1])
            after_attention = _traced(arch, s, "post_attention_saved_bytes")
            if after_attention is not None:  # freed before the attention's backward, traced with its layer
                self.mlp_saved = after_attention[0] + adapters[1]
            else:  # the formula's MLP share of it
                self.mlp_saved = mlp * saved / max(attn + mlp, 1.0)
            self.layer_saved = saved
            self.score_saved = traced[1]
        self.mlp_work = (LAYER_BACKWARD_WORK * f + h) * e
        # per layer, not per token: the W + dW copy of each expert tensor / router peft adapts (ParamWrapper).
        # Not under QLoRA (fp32 experts, bf16 adapters): measured without it (ArchCase qwen3_moe, mixtral).
        self.layer_constant = e * arch.expert_adapter_saved(s.lora_target_modules)[1] if s.method == "lora" else 0.0
        # Measured: with fp32 activations, or a recomputed (checkpointed) dense layer of full training,
        # the peak comes after down_proj's backward has freed its saved input; with 16-bit activations
        # it comes before (MemTracker, every case of calibration.GRID and ArchCase; MoE experts differ).
        self.mlp_freed = down_in if e == FP32 or (self.checkpointing and full and not arch.experts) else 0
        # A recomputed (checkpointed) LoRA layer can peak in its recompute, before any gradient exists
        # (MemTracker, ArchCase's LoRA + checkpointing rows): peft adds lora_B's output to the base output in
        # the adapter dtype, so the widest adapted linear's base output, lora_B output and scaled sum exist
        # together, while the down_proj adapter's input is not made yet.
        widest = max((lin.d_out for lin in arch.lora_targets(s.lora_target_modules)), default=0) if s.is_peft else 0
        self.recompute_work = ((e + 2 * adapter_bytes(s)) * widest - down_in) if self.checkpointing else 0.0
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

    @property
    def quadratic(self) -> bool:
        """Memory grows with seq_len^2 per sequence (eager's scores, SDPA's masks), not with tokens alone."""
        return self.eager or self.score_saved > 0

    def at(self, b: int, seq: int) -> Activations:
        """The activations of a micro-batch of ``b`` sequences of ``seq`` tokens."""
        e, h = self.e, self.h
        tokens = b * seq
        layer_saved = self.layer_saved * tokens + self.layer_constant
        mlp_work = self.mlp_work * tokens
        if self.mlp_freed:
            mlp_work -= self.mlp_freed * tokens
        attn_work = self.attn_work * tokens
        forward_work = mlp_work
        layer_saved += b * seq * seq * self.score_saved  # eager's probabilities, SDPA's sliding-window masks
        if self.eager:
            scores = b * self.heads * seq * seq
            attn_work += scores * (e + FP32)  # softmax backward: the probabilities' gradient + fp32 input grad
            forward_work = max(forward_work, scores * (3 * e + FP32))  # q@k^T, scaled, masked, fp32 softmax
        mlp_work += self.dequantized
        # The layer's backward peaks either in the MLP (everything saved + MLP gradients) or in the
        # attention (the MLP half already freed + attention gradients / eager's s*s gradients).
        work = max(mlp_work, attn_work - self.mlp_saved * tokens, self.recompute_work * tokens)
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
        layer_forward_peak = recompute_forward = 0
        if self.forward_peak is not None:
            per_token, per_score = self.forward_peak
            layer_forward_peak = int(per_token * tokens + b * seq * seq * per_score)
            if self.checkpointing:  # the recomputed forward + the gradient from the layer above
                recompute_forward = layer_forward_peak + int(e * h * tokens)
        return Activations(
            layer_forward_peak=layer_forward_peak,
            recompute_forward=recompute_forward,
            layer_saved=int(layer_saved),
            layer_input=int(e * h * tokens),
            layer_work=int(work),
            forward_work=int(forward_work),
            head_saved=int(head),
            shared_saved=int(shared),
            final_norm_input=int(self.final_norm * tokens),
            logits_saved=int(logits_saved),
            logits_forward_extra=int(logits_forward_extra),
            logits_backward_extra=int(logits_backward_extra),
            checkpointing=self.checkpointing,
            layers=self.layers,
        )
