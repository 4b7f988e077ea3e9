"""The architecture card: what the planner knows about a model, read from the model's own code.

A card is plain data (JSON in, JSON out, no torch). ``ftplan.derive`` writes one by building the
model on the meta device and asking transformers and peft what they would do; the shipped
catalog is a folder of such cards. The planner only reads cards, so it stays pure and a
catalog plan never imports torch.

Tensors that repeat across decoder layers are stored once, with the layer indices they occur
in (``model.layers.{i}.mlp.down_proj.weight`` for layers 0–31), so a 94-layer MoE stays small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

CARD_FORMAT = 3
"""2: traced saved-activation figures (``layer_kinds``, ``saved_bytes_per_token``, ``saved_bytes_per_score``).
3: ``post_attention_saved_bytes_per_token``, the part of a layer's saved bytes kept after its attention block;
``forward_peak_bytes_per_token`` / ``_per_score``, the most a layer's forward holds at once.

Bump when the card's fields or their meaning change: cached cards of another format are rebuilt."""

KINDS = ("linear", "experts", "router", "embedding", "norm", "head", "vision", "other")
"""Module kinds. ``vision`` is every tensor outside the language model (vision tower and projector)."""


def _expand(ranges: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(i for start, stop in ranges for i in range(start, stop))


@dataclass(frozen=True)
class TensorGroup:
    """One parameter tensor, or the same tensor in each of several decoder layers."""

    name: str
    """Dotted parameter name; ``{i}`` stands for the layer index when ``layers`` is not empty."""
    shape: tuple[int, ...]
    kind: str
    layer_ranges: tuple[tuple[int, int], ...] = ()
    """Half-open index ranges of the layers holding this tensor; empty for a one-off tensor."""
    quantized: bool = False
    """bitsandbytes 4-bit stores it in 4 bits (transformers replaces its nn.Linear by Linear4bit)."""

    @cached_property
    def layers(self) -> tuple[int, ...]:
        return _expand(self.layer_ranges)

    @cached_property
    def count(self) -> int:
        return len(self.layers) if self.layer_ranges else 1

    @cached_property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @cached_property
    def total(self) -> int:
        return self.numel * self.count

    @cached_property
    def leaf(self) -> str:
        """The module path (name without its parameter) with ``{i}`` kept."""
        return self.name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class LoraUnit:
    """One thing peft puts a LoRA adapter on: an nn.Linear, or a parameter (fused experts, router)."""

    module: str
    """Module path as peft names it (``{i}`` for the layer index)."""
    parameter: str = ""
    """Set for parameter-targeted LoRA (peft's ParamWrapper on fused expert tensors)."""
    per_rank: int = 0
    """Trainable parameters per unit of rank (peft's counts are linear in r)."""
    layer_ranges: tuple[tuple[int, int], ...] = ()
    all_linear: bool = False
    """peft's ``"all-linear"`` adapts it."""
    d_in: int = 0
    d_out: int = 0

    @cached_property
    def count(self) -> int:
        return len(_expand(self.layer_ranges)) if self.layer_ranges else 1

    def module_names(self) -> list[str]:
        """Concrete module names, one per layer (what peft's name matching sees)."""
        if not self.layer_ranges:
            return [self.module]
        return [self.module.replace("{i}", str(i)) for i in _expand(self.layer_ranges)]


@dataclass(frozen=True)
class DecoderShape:
    """The config.json numbers that size a decoder, in one place for the card and the planner's
    accounting built from it (``ftplan.planner.arch.ModelArch``)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(frozen=True)
class ArchCard(DecoderShape):
    """Everything the planner needs about one model, derived from its code (see module docstring)."""

    model_class: str
    """The class the exported train.py loads (e.g. Qwen3MoeForCausalLM, Gemma3ForConditionalGeneration)."""
    auto_class: str
    """``AutoModelForCausalLM`` or ``AutoModelForImageTextToText``."""
    decoder_layer_classes: tuple[str, ...]
    """Decoder layer class names (FSDP's auto-wrap policy wraps these)."""
    context_length: int
    tied_embeddings: bool
    attention: tuple[str, ...]
    """Attention implementations the class accepts (``eager`` always; ``sdpa``, ``flash_attention_2``, ``flex_attention``)."""
    tensors: tuple[TensorGroup, ...]
    lora_units: tuple[LoraUnit, ...]
    experts: int = 0
    experts_per_token: int = 0
    shared_experts: int = 0
    moe_intermediate_size: int = 0
    peft_moe_aliases: dict = field(default_factory=dict)
    """peft's transformers-v4 names for fused MoE weights (``gate_proj`` → ``gate_up_proj``), where peft has them."""
    sliding_window: int = 0
    layer_kinds: tuple[str, ...] = ()
    """The kind of each decoder layer (layers of one kind run the same code: ``ftplan.derive.trace``)."""
    saved_bytes_per_token: dict = field(default_factory=dict)
    """kind -> ``mode/dtype/attention`` -> bytes one layer of that kind keeps for backward per token,
    traced from one training step of the model's code. mode: ``full`` (weights train) or ``frozen``
    (weights frozen, inputs require grad: LoRA's base model, adapters not included); dtype: ``bf16``
    or ``fp32``; attention: ``flash`` (what flash-attention / SDPA's fused kernels keep) or ``eager``.
    Empty when the model's forward could not be traced (the planner keeps its hand formulas)."""
    saved_bytes_per_score: dict = field(default_factory=dict)
    """Same keys: bytes per sequence per seq_len^2 (eager's attention probabilities, all heads)."""
    post_attention_saved_bytes_per_token: dict = field(default_factory=dict)
    """Same keys: the part of ``saved_bytes_per_token`` saved after the layer's attention block returned
    (post-attention norms, the MLP / MoE block, residual adds), all freed before the attention runs
    backward. Empty when the layer names its attention otherwise."""
    forward_peak_bytes_per_token: dict = field(default_factory=dict)
    """Same keys: the most bytes one layer's forward holds at once, saved tensors and temporaries (what a
    checkpointed layer's recompute holds on top of the stored inputs)."""
    forward_peak_bytes_per_score: dict = field(default_factory=dict)
    """Same keys: its part per sequence per seq_len^2 (eager's scores)."""
    versions: dict = field(default_factory=dict)
    """Library versions the card was derived with (transformers, peft, torch)."""
    source: str = ""
    format: int = CARD_FORMAT

    # ---- JSON -----------------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ArchCard:
        data = dict(data)
        data["tensors"] = tuple(
            TensorGroup(**{**t, "shape": tuple(t["shape"]), "layer_ranges": _ranges(t.get("layer_ranges", ()))})
            for t in data["tensors"]
        )
        data["lora_units"] = tuple(
            LoraUnit(**{**u, "layer_ranges": _ranges(u.get("layer_ranges", ()))}) for u in data["lora_units"]
        )
        data["decoder_layer_classes"] = tuple(data["decoder_layer_classes"])
        data["attention"] = tuple(data["attention"])
        data["layer_kinds"] = tuple(data.get("layer_kinds", ()))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ArchCard:
        return cls.from_dict(json.loads(text))

    # ---- counts ---------------------------------------------------------------------------
    @cached_property
    def params(self) -> int:
        """All parameters, as ``sum(p.numel() for p in model.parameters())`` counts them (tied once)."""
        return sum(t.total for t in self.tensors)

    @cached_property
    def quantizable_params(self) -> int:
        """Elements bitsandbytes 4-bit stores in 4 bits under the transformers the card was made with."""
        return sum(t.total for t in self.tensors if t.quantized)

    def params_of(self, *kinds: str) -> int:
        return sum(t.total for t in self.tensors if t.kind in kinds)

    @cached_property
    def language_params(self) -> int:
        """Parameters outside the vision tower and projector."""
        return self.params - self.params_of("vision")

    def layer_params(self, index: int) -> int:
        """Parameters of decoder layer ``index`` of the language model."""
        return sum(t.numel for t in self.tensors if t.kind != "vision" and t.layer_ranges and index in t.layers)

    @cached_property
    def layer_sizes(self) -> tuple[int, ...]:
        sizes = [0] * self.layers
        for t in self.tensors:
            if t.kind == "vision" or not t.layer_ranges:
                continue
            for i in t.layers:
                if i < self.layers:
                    sizes[i] += t.numel
        return tuple(sizes)

    @cached_property
    def expert_params(self) -> int:
        """Fused expert tensors over all layers (all resident; ``experts_per_token`` of them used per token)."""
        return self.params_of("experts")

    @cached_property
    def active_params(self) -> int:
        if not self.experts:
            return self.params
        inactive = self.expert_params * (self.experts - self.experts_per_token) // self.experts
        return self.params - inactive

    # ---- LoRA (peft's rules) ----------------------------------------------------------------
    def lora_selected(self, target_modules: str | Sequence[str]) -> list[LoraUnit]:
        """The units peft adapts for ``target_modules``.

        ``"all-linear"``: what peft itself chose on the meta model. A list: peft's rule — an
        entry matches a module whose name equals it or ends with ``"." + entry``; for MoE
        models peft knows, the transformers-v4 expert names map onto the fused parameters.
        """
        units = self.language_lora_units
        if isinstance(target_modules, str):
            return [u for u in units if u.all_linear] if target_modules == "all-linear" else []
        keys = list(target_modules)
        mapped = {self.peft_moe_aliases[k] for k in keys if k in self.peft_moe_aliases}
        chosen = []
        for unit in units:
            if unit.parameter:
                full = f"{unit.module}.{unit.parameter}"
                if any(full.endswith("." + t) for t in mapped):
                    chosen.append(unit)
                continue
            if any(_matches(name, k) for name in unit.module_names()[:1] for k in keys):
                chosen.append(unit)
        return chosen

    @cached_property
    def language_lora_units(self) -> tuple[LoraUnit, ...]:
        """The units of the language model: train.py keeps a vision model's tower and projector frozen
        (peft's ``exclude_modules``), so LoRA never adapts them, whatever the targets name."""
        vision = {t.name.rsplit(".", 1)[0] for t in self.tensors if t.kind == "vision"}
        return tuple(u for u in self.lora_units if u.module not in vision)

    def lora_params(self, r: int, target_modules: str | Sequence[str]) -> int:
        return r * sum(u.per_rank * u.count for u in self.lora_selected(target_modules))

    def expert_adapter_saved(self, target_modules: str | Sequence[str]) -> tuple[float, float]:
        """(elements per token, elements per layer) autograd keeps because peft adapts a parameter.

        peft's ``ParamWrapper`` (fused expert tensors, routers) adds the LoRA delta to the frozen tensor
        while the module runs, so the weight the matmul sees requires grad: the matmul keeps its input
        (``experts_per_token`` rows of the hidden state per token into gate_up, of the expert width into
        down; the router's whole hidden state), and keeps that W + dW copy for the input gradient, a tensor
        of the parameter's size in every layer (LoRA on 16-bit or fp32 weights; QLoRA's fp32 experts with bf16
        adapters keep no such copy). Averaged over the decoder layers; elements, in the parameter's dtype
        (measured on real CPU steps: tests/planner/test_arch_accuracy.py)."""
        shapes = {t.name: t.shape for t in self.tensors}
        per_token = per_layer = 0.0
        for unit in self.lora_selected(target_modules):
            shape = shapes.get(f"{unit.module}.{unit.parameter}") if unit.parameter else None
            if not shape:
                continue
            share = unit.count / max(self.layers, 1)
            per_layer += share * math.prod(shape)
            if len(shape) < 3:  # a router: one row per token
                per_token += share * self.hidden_size
                continue
            width = self.hidden_size
            if "down" in unit.parameter or unit.parameter == "w2":  # its input is the expert width
                width = next((d for d in shape[1:] if d != self.hidden_size), self.hidden_size)
            per_token += share * self.experts_per_token * width
        return per_token, per_layer

    def unmatched_targets(self, target_modules: str | Sequence[str]) -> list[str]:
        """Entries of a target list that name no module peft could adapt here."""
        if isinstance(target_modules, str):
            return []
        names = [n for u in self.language_lora_units for n in u.module_names()[:1]]
        return [k for k in target_modules if k not in self.peft_moe_aliases and not any(_matches(n, k) for n in names)]

    # ---- traced activations ---------------------------------------------------------------
    def traced(self, figure: str, mode: str, dtype: str, attention: str) -> tuple[float, float] | None:
        """(bytes per token, per sequence per seq_len^2) of one traced ``figure`` of a decoder layer,
        averaged over the layers; None when a layer kind lacks it (see ``traced_figure``)."""
        return traced_figure(self.activation_trace(), self.layers, figure, mode, dtype, attention)

    def traced_saved(self, mode: str, dtype: str, attention: str) -> tuple[float, float] | None:
        """What one decoder layer saves for backward (``traced("saved_bytes", ...)``); the planner
        multiplies it by the layer count."""
        return self.traced("saved_bytes", mode, dtype, attention)

    def sdpa_mask_saved(self, dtype_bytes: int) -> tuple[float, float]:
        """(bytes per token, bytes per sequence per seq_len^2) SDPA adds in sliding-window layers, averaged over
        the layers. There transformers hands SDPA a materialised mask, so it repeats k and v to every head
        instead of using SDPA's GQA (``use_gqa_in_sdpa`` wants no mask), and SDPA converts the boolean mask
        to the activation dtype and keeps that copy for backward in every such layer (the traced ``flash``
        figure has neither: flash-attention takes the window without a mask). Measured on real CPU steps
        of tiny Gemma-3 configs (tests/planner/test_arch_accuracy.py)."""
        sliding = sum(1 for kind in self.layer_kinds if kind.startswith("sliding_attention"))
        if not sliding or not self.sliding_window:
            return 0.0, 0.0
        share = sliding / self.layers
        repeated = 2 * (self.heads - self.kv_heads) * self.head_dim * dtype_bytes
        return share * repeated, share * dtype_bytes

    def activation_trace(self) -> dict:
        """The traced figures alone (what ``catalog/traces.json`` ships for the hand-written catalog)."""
        return {
            "layer_kinds": list(self.layer_kinds),
            "saved_bytes_per_token": self.saved_bytes_per_token,
            "saved_bytes_per_score": self.saved_bytes_per_score,
            "post_attention_saved_bytes_per_token": self.post_attention_saved_bytes_per_token,
            "forward_peak_bytes_per_token": self.forward_peak_bytes_per_token,
            "forward_peak_bytes_per_score": self.forward_peak_bytes_per_score,
        }

    @cached_property
    def vision(self) -> bool:
        return any(t.kind == "vision" for t in self.tensors)


TRACED_FIGURES = ("saved_bytes", "forward_peak_bytes", "post_attention_saved_bytes")
"""The card's traced figures, each a ``<figure>_per_token`` table and (but the last) a ``<figure>_per_score`` one."""


def traced_figure(
    trace: dict | None, layers: int, figure: str, mode: str, dtype: str, attention: str
) -> tuple[float, float] | None:
    """Mean traced (bytes per token, bytes per sequence per seq_len^2) of one of ``TRACED_FIGURES`` over the
    decoder layers, from a trace dict (``layer_kinds`` and the figures' tables, as in a card); None when
    absent. A figure without a per-score table has 0 there."""
    key = f"{mode}/{dtype}/{attention}"
    per_token = _layer_mean(trace, f"{figure}_per_token", layers, key)
    if per_token is None:
        return None
    return per_token, _layer_mean(trace, f"{figure}_per_score", layers, key, missing=0.0) or 0.0


def _layer_mean(trace: dict | None, table: str, layers: int, key: str, missing: float | None = None) -> float | None:
    """The mean over the decoder layers of one traced figure; a kind without it counts ``missing``
    (None: the figure is absent)."""
    kinds = (trace or {}).get("layer_kinds") or ()
    if not kinds or len(kinds) != layers:
        return None
    total = 0.0
    for kind in set(kinds):
        value = (trace.get(table) or {}).get(kind, {}).get(key, missing)
        if value is None:
            return None
        total += kinds.count(kind) * value
    return total / layers


def _matches(name: str, key: str) -> bool:
    return name == key or name.endswith("." + key)


def _ranges(value) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, b in value)


def compress_layers(indices: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """[0, 1, 2, 5, 6] -> ((0, 3), (5, 7))."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return tuple((a, b) for a, b in out)
