"""Exact parameter accounting from a model's config.json, in pure Python.

Why not instantiate the model? Importing torch and transformers costs seconds; the shapes
below are all the planner needs, and tests check them against transformers + peft on the
``meta`` device for every catalog model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ftplan.planner.card import DecoderShape, traced_figure

FORMULA_MODEL_TYPES = ("llama", "mistral", "qwen2")
"""Model types whose saved activations activations.py's formula gets right (to the byte against the traced
figure: tests/planner/test_traced_vs_formula.py); a plain config.json of another hand-coded type
(qwen3, gemma2, phi3, mixtral: q/k norms, four norms, fused projections, routers) takes the traced
figure of its derived card, and keeps the formula only where torch is not installed."""

if TYPE_CHECKING:
    from ftplan.planner.card import ArchCard

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3")


ALL_ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
HAND_CODED_ATTENTION = {"gemma2": ("eager", "flash_attention_2", "flash_attention_3", "flex_attention")}
"""transformers 5: Gemma2ForCausalLM._supports_sdpa is False (softcapping); the six other
hand-coded types accept every kernel. tests/planner/test_counts_meta.py reads the flags."""


class UnsupportedArchitecture(ValueError):
    """The config's model_type has no accounting rules here."""


@dataclass(frozen=True)
class Linear:
    """One nn.Linear of a decoder layer, named by its path inside the layer."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False

    @cached_property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class ModelArch(DecoderShape):
    """The shapes of a decoder-only transformer, enough to count and size everything."""

    tied_embeddings: bool
    layer_linears: tuple[Linear, ...]
    layer_other_params: int
    """Per-layer parameters outside nn.Linear modules: norms, MoE routers and expert tensors."""
    final_norm_params: int
    experts: int = 0
    experts_per_token: int = 0
    expert_params_per_layer: int = 0
    """Fused expert tensors (transformers 5 stores MoE experts as 3-D parameters, not Linears)."""
    card: ArchCard | None = field(default=None, compare=False, repr=False)
    """The architecture card this accounting was built from; when set, its exact counts win
    (heterogeneous layers, vision towers, MLA, shared experts)."""
    activation_trace: dict | None = field(default=None, compare=False, repr=False)
    """Traced saved-activation figures for a model without a card (the hand-written catalog's
    ``catalog/traces.json``, derived from the model's code like a card's); see ``traced_saved``."""

    # ---- counts -------------------------------------------------------------------------
    @cached_property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @cached_property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def linear_params_per_layer(self) -> int:
        return sum(lin.params for lin in self.layer_linears)

    @cached_property
    def layer_params(self) -> int:
        return self.linear_params_per_layer + self.layer_other_params

    @cached_property
    def params(self) -> int:
        """All parameters, as ``sum(p.numel() for p in model.parameters())`` counts them."""
        if self.card is not None:
            return self.card.params
        return self.embedding_params + self.lm_head_params + self.layers * self.layer_params + self.final_norm_params

    @cached_property
    def trained_params(self) -> int:
        """What full fine-tuning trains: every parameter but a vision model's tower and projector,
        which train.py freezes (the language model trains on text)."""
        if self.card is not None:
            return self.card.language_params
        return self.params

    @cached_property
    def quantizable_params(self) -> int:
        """Weights that bitsandbytes stores in 4 bits: every decoder nn.Linear weight.

        Biases, norms, embeddings and lm_head stay in 16 bits; so do MoE expert tensors,
        which are not nn.Linear modules in transformers 5.
        """
        if self.card is not None:
            return self.card.quantizable_params
        return self.layers * sum(lin.d_in * lin.d_out for lin in self.layer_linears)

    @cached_property
    def largest_matrix(self) -> int:
        """Elements of the biggest weight matrix in a decoder layer (one expert's, for MoE)."""
        return max((lin.d_in * lin.d_out for lin in self.layer_linears), default=0)

    @cached_property
    def largest_layer_params(self) -> int:
        """The biggest single module's parameters, which ZeRO-3 gathers whole."""
        candidates = [self.embedding_params, self.layer_params]
        if self.card is not None:
            candidates += list(self.card.layer_sizes)
        return max(candidates)

    @cached_property
    def active_params(self) -> int:
        """Parameters used per token (MoE activates ``experts_per_token`` of ``experts``)."""
        if self.card is not None:
            return self.card.active_params
        if not self.experts:
            return self.params
        inactive = self.expert_params_per_layer * (self.experts - self.experts_per_token)
        return self.params - self.layers * inactive // self.experts

    @cached_property
    def attention_kernels(self) -> tuple[str, ...]:
        """Attention implementations the model class accepts (transformers' ``_supports_*`` flags)."""
        if self.card is not None:
            return self.card.attention
        return HAND_CODED_ATTENTION.get(self.model_type, ALL_ATTENTION)

    # ---- LoRA ---------------------------------------------------------------------------
    def lora_targets(self, target_modules: str | Sequence[str]) -> list[Linear]:
        """The decoder Linears PEFT would adapt, with PEFT's name-matching rules.

        ``"all-linear"`` means every nn.Linear except the output layer; a list entry matches
        a module whose dotted name equals it or ends with ``"." + entry``.
        """
        if self.card is not None:
            chosen = {u.module.split("{i}.", 1)[-1] for u in self.card.lora_selected(target_modules)}
            return [lin for lin in self.layer_linears if lin.name in chosen]
        if target_modules == "all-linear":
            return list(self.layer_linears)
        keys = list(target_modules)
        return [
            lin
            for lin in self.layer_linears
            if any(lin.name == k or lin.name.endswith("." + k) or _short(lin.name) == k for k in keys)
        ]

    def unmatched_targets(self, target_modules: str | Sequence[str]) -> list[str]:
        """Entries of a target list that name no module of this model."""
        if self.card is not None:
            return self.card.unmatched_targets(target_modules)
        if target_modules == "all-linear":
            return []
        known = {lin.name for lin in self.layer_linears} | {_short(lin.name) for lin in self.layer_linears}
        known |= {"lm_head", "embed_tokens"}
        if self.experts:
            known |= {"gate", "experts", "mlp.gate", "mlp.experts", "w1", "w2", "w3"}
        return [k for k in target_modules if k not in known and not any(n.endswith("." + k) for n in known)]

    def lora_adapts_expert_tensors(self, target_modules: str | Sequence[str]) -> bool:
        """Whether peft adapts fused 3-D expert tensors for these targets (its ``ParamWrapper``, which
        refuses ``lora_dropout != 0``): the card's units with a parameter, else the rule of
        ``_moe_lora_per_layer``."""
        if self.card is not None:
            return any(u.parameter for u in self.card.lora_selected(target_modules))
        if not self.experts:
            return False
        keys = {"all-linear"} if target_modules == "all-linear" else set(target_modules)
        return bool(keys & {"all-linear", "experts", "mlp.experts", "w1", "w2", "w3"})

    def _moe_lora_per_layer(self, r: int, target_modules: str | Sequence[str]) -> int:
        """LoRA on a transformers-5 MoE block, as peft 0.21 applies it with "all-linear".

        The router (h -> experts) takes a plain LoRA; the fused expert tensors take
        parameter-targeted LoRA with rank r per expert (2 r for the fused gate_up tensor):
        A is (rank * experts, d_in), B is (d_out, rank * experts). Checked on the meta device.
        """
        if not self.experts:
            return 0
        keys = {"all-linear"} if target_modules == "all-linear" else set(target_modules)
        h, f, e = self.hidden_size, self.intermediate_size, self.experts
        total = 0
        if keys & {"all-linear", "gate", "mlp.gate"}:
            total += r * (h + e)
        whole = bool(keys & {"all-linear", "experts", "mlp.experts"})
        if whole or {"w1", "w3"} <= keys:  # peft maps Mixtral's v4 names onto the fused tensors
            total += 2 * r * e * (h + 2 * f)
        if whole or "w2" in keys:
            total += r * e * (f + h)
        return total

    def expert_adapter_saved(self, target_modules: str | Sequence[str]) -> tuple[float, float]:
        """(elements per token, per layer) kept because peft adapts routers / fused experts as parameters
        (``ArchCard.expert_adapter_saved``; for the hand-coded Mixtral, the same rule on its shapes)."""
        if self.card is not None:
            return self.card.expert_adapter_saved(target_modules)
        if not self.experts:
            return 0.0, 0.0
        keys = {"all-linear"} if target_modules == "all-linear" else set(target_modules)
        h, f, e, k = self.hidden_size, self.intermediate_size, self.experts, self.experts_per_token
        whole = bool(keys & {"all-linear", "experts", "mlp.experts"})
        per_token = per_layer = 0.0
        if keys & {"all-linear", "gate", "mlp.gate"}:
            per_token, per_layer = h, e * h
        if whole or {"w1", "w3"} <= keys:
            per_token, per_layer = per_token + k * h, per_layer + e * 2 * f * h
        if whole or "w2" in keys:
            per_token, per_layer = per_token + k * f, per_layer + e * f * h
        return per_token, per_layer

    def lora_params(self, r: int, target_modules: str | Sequence[str]) -> int:
        """Trainable LoRA parameters: sum of r * (d_in + d_out) over adapted matrices."""
        key = ("lora", r, target_modules if isinstance(target_modules, str) else tuple(target_modules))
        if key not in self.memo:
            self.memo[key] = self._lora_params_uncached(r, target_modules)
        return self.memo[key]

    def traced(self, figure: str, mode: str, dtype: str, attention: str) -> tuple[float, float] | None:
        """A traced per-layer figure (``card.traced_figure``: the card's, or ``activation_trace``); None when not traced."""
        if self.card is not None:
            return self.card.traced(figure, mode, dtype, attention)
        return traced_figure(self.activation_trace, self.layers, figure, mode, dtype, attention)

    @cached_property
    def memo(self) -> dict:
        """Per-architecture memo of derived figures (the settings search repeats them)."""
        return {}

    def _lora_params_uncached(self, r: int, target_modules: str | Sequence[str]) -> int:
        if self.card is not None:
            return self.card.lora_params(r, target_modules)
        per_layer = sum(r * (lin.d_in + lin.d_out) for lin in self.lora_targets(target_modules))
        per_layer += self._moe_lora_per_layer(r, target_modules)
        total = self.layers * per_layer
        if target_modules != "all-linear":
            if "lm_head" in target_modules:
                total += r * (self.hidden_size + self.vocab_size)
            if "embed_tokens" in target_modules:
                total += r * (self.vocab_size + self.hidden_size)
        return total


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _get(config: dict, key: str, default=None):
    value = config.get(key, default)
    if value is None:
        raise UnsupportedArchitecture(f"config.json has no {key!r}")
    return value


def arch_from_config(config: dict) -> ModelArch:
    """Build the accounting for a Hugging Face config.json dictionary."""
    model_type = config.get("model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    h = int(_get(config, "hidden_size"))
    ffn = int(_get(config, "intermediate_size"))
    layers = int(_get(config, "num_hidden_layers"))
    heads = int(_get(config, "num_attention_heads"))
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    vocab = int(_get(config, "vocab_size"))
    tied = bool(config.get("tie_word_embeddings", model_type in ("gemma2",)))
    q, k = heads * head_dim, kv * head_dim
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))

    if model_type == "phi3":
        attn = (Linear("self_attn.qkv_proj", h, q + 2 * k), Linear("self_attn.o_proj", q, h))
    else:
        attn = (
            Linear("self_attn.q_proj", h, q, qkv_bias),
            Linear("self_attn.k_proj", h, k, qkv_bias),
            Linear("self_attn.v_proj", h, k, qkv_bias),
            Linear("self_attn.o_proj", q, h, bool(config.get("attention_bias", False))),
        )
    experts = experts_per_token = expert_params = 0
    norms = 4 if model_type == "gemma2" else 2
    other = norms * h
    if model_type == "qwen3":
        other += 2 * head_dim  # q_norm and k_norm act on each head
    if model_type == "mixtral":
        experts = int(_get(config, "num_local_experts"))
        experts_per_token = int(_get(config, "num_experts_per_tok"))
        expert_params = experts * 3 * h * ffn
        other += experts * h + expert_params  # router weight + fused gate_up/down tensors
        mlp: tuple[Linear, ...] = ()
    elif model_type == "phi3":
        mlp = (Linear("mlp.gate_up_proj", h, 2 * ffn), Linear("mlp.down_proj", ffn, h))
    else:
        mlp = (
            Linear("mlp.gate_proj", h, ffn, mlp_bias),
            Linear("mlp.up_proj", h, ffn, mlp_bias),
            Linear("mlp.down_proj", ffn, h, mlp_bias),
        )
    return ModelArch(
        model_type=model_type,
        hidden_size=h,
        intermediate_size=ffn,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        tied_embeddings=tied,
        layer_linears=attn + mlp,
        layer_other_params=other,
        final_norm_params=h,
        experts=experts,
        experts_per_token=experts_per_token,
        expert_params_per_layer=expert_params,
    )


def arch_from_card(card: ArchCard) -> ModelArch:
    """The planner's accounting for a card: exact counts from the card, shapes of a typical layer.

    The per-layer fields (``layer_linears``, ``layer_other_params``, expert sizes) describe
    the last decoder layer (the MoE kind where dense and MoE layers mix); the memory and
    time models read those, while every total comes from the card's tensor list.
    """
    last = card.layers - 1
    layer_tensors = [t for t in card.tensors if t.kind != "vision" and t.layer_ranges and last in t.layers]
    prefix = _layer_prefix(layer_tensors)
    biases = {t.leaf for t in layer_tensors if t.name.endswith(".bias")}
    linears = tuple(
        Linear(t.leaf.removeprefix(prefix), t.shape[1], t.shape[0], t.leaf in biases)
        for t in layer_tensors
        if t.kind == "linear" and t.name.endswith(".weight") and len(t.shape) == 2
    )
    linear_params = sum(lin.params for lin in linears)
    layer_total = sum(t.numel for t in layer_tensors)
    experts = sum(t.numel for t in layer_tensors if t.kind == "experts")
    head = next((t for t in card.tensors if t.kind == "head"), None)
    return ModelArch(
        model_type=card.model_type,
        hidden_size=card.hidden_size,
        intermediate_size=card.moe_intermediate_size
        if card.experts and card.moe_intermediate_size
        else card.intermediate_size,
        layers=card.layers,
        heads=card.heads,
        kv_heads=card.kv_heads,
        head_dim=card.head_dim,
        vocab_size=card.vocab_size,
        tied_embeddings=card.tied_embeddings or head is None,
        layer_linears=linears,
        layer_other_params=layer_total - linear_params,
        final_norm_params=card.hidden_size,
        experts=card.experts,
        experts_per_token=card.experts_per_token,
        expert_params_per_layer=experts,
        card=card,
    )


def _layer_prefix(tensors) -> str:
    for t in tensors:
        if "{i}." in t.name:
            return t.name.split("{i}.", 1)[0] + "{i}."
    return ""
