"""Build a model on the meta device and read its card: tensors, peft's LoRA targets, bnb's 4-bit set.

Nothing here re-derives shapes by hand: parameter shapes come from ``named_parameters()``,
LoRA targets from running ``peft.get_peft_model`` on the meta model, the 4-bit set from the
rules transformers' bitsandbytes quantizer applies (``type(module) is nn.Linear`` and not in
``get_modules_to_not_convert``), attention kernels from the class's ``_supports_*`` flags, the
bytes each decoder layer saves for backward from one traced training step (``ftplan.derive.trace``).
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict

from ftplan.derive.trace import trace_card_activations
from ftplan.planner.card import ArchCard, LoraUnit, TensorGroup, compress_layers

_LAYER = re.compile(r"\.(layers|h|blocks)\.(\d+)\.")
LORA_PROBE_RANK = 2


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}


def hf_config_from_dict(config: dict, trust_remote_code: bool = False):
    """A transformers config object from a config.json dictionary."""
    from transformers import AutoConfig

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    for key in ("architectures", "auto_map", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(key, None)
    return AutoConfig.for_model(model_type, **cfg)


def choose_auto_class(hf_config) -> str:
    """Causal LM for text configs; image-text-to-text for a config that carries a vision tower."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    model_type = hf_config.model_type
    has_vision = getattr(hf_config, "vision_config", None) is not None
    if has_vision and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "AutoModelForImageTextToText"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "AutoModelForCausalLM"
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "AutoModelForImageTextToText"
    return "AutoModelForCausalLM"


def meta_model(hf_config, auto_class: str, trust_remote_code: bool = False):
    import torch
    import transformers

    auto = getattr(transformers, auto_class)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auto.from_config(hf_config, trust_remote_code=trust_remote_code)


def _group_key(name: str) -> tuple[str, int | None]:
    found = _LAYER.search(name)
    if not found:
        return name, None
    start, end = found.span()
    return name[:start] + f".{found.group(1)}.{{i}}." + name[end:], int(found.group(2))


def _text_prefix(model) -> str:
    """Dotted name of the language model's decoder stack (``model`` or ``model.language_model``)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for name, module in model.named_modules():
        if module is decoder:
            return name
    return "model"


def _kind(name: str, module, param, text_prefix: str, out_emb, in_emb) -> str:
    import torch

    if out_emb is not None and module is out_emb:
        return "head"
    if in_emb is not None and module is in_emb:
        return "embedding"
    if not (name == text_prefix or name.startswith(text_prefix + ".")):
        return "vision"
    if param.dim() == 3:
        return "experts"
    cls = type(module).__name__
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if "norm" in cls.lower() or "norm" in name.rsplit(".", 1)[-1].lower():
        return "norm"
    if (
        "router" in cls.lower()
        or "gate" == name.rsplit(".", 1)[-1]
        and param.dim() == 2
        and not isinstance(module, torch.nn.Linear)
    ):
        return "router"
    if isinstance(module, torch.nn.Linear):
        return "linear"
    return "other"


def _quantized_linears(model) -> set[str]:
    """Module names transformers' bnb 4-bit quantizer replaces by Linear4bit (its own rules)."""
    import torch
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    return {
        name
        for name, module in model.named_modules()
        if (type(module) is torch.nn.Linear or isinstance(module, Conv1D)) and should_convert_module(name, skip)
    }


def _tensors(model) -> tuple[TensorGroup, ...]:
    text_prefix = _text_prefix(model)
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    quantized = _quantized_linears(model)
    owners = dict(model.named_modules())
    groups: dict[tuple, list[int]] = defaultdict(list)
    order: list[tuple] = []
    for name, param in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        module = owners[module_name]
        kind = _kind(module_name, module, param, text_prefix, out_emb, in_emb)
        is_q = module_name in quantized and name.endswith(".weight")
        key_name, layer = _group_key(name)
        key = (key_name, tuple(param.shape), kind, is_q)
        if key not in groups:
            order.append(key)
        groups[key].append(layer if layer is not None else -1)
    out = []
    for key in order:
        name, shape, kind, is_q = key
        layers = groups[key]
        ranges = compress_layers(layers) if layers[0] >= 0 else ()
        out.append(TensorGroup(name=name, shape=shape, kind=kind, layer_ranges=ranges, quantized=is_q))
    return tuple(out)


def _lora_units(model, hf_config) -> tuple[tuple[LoraUnit, ...], dict]:
    """Run peft's all-linear on the meta model; add the list-only candidates (lm_head, embeddings)."""
    import peft
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    r = LORA_PROBE_RANK
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))
    groups: dict[tuple, list[int]] = defaultdict(list)
    order: list[tuple] = []
    seen_modules = set()
    for name, module in wrapped.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        clean = name.removeprefix("base_model.model.").replace(".base_layer", "")
        count = sum(p.numel() for k in ("lora_A", "lora_B") for p in getattr(module, k).parameters())
        count += sum(p.numel() for k in ("lora_embedding_A", "lora_embedding_B") for p in getattr(module, k).values())
        parameter = getattr(module, "parameter_name", "") or ""
        base = module.get_base_layer()
        d_in = getattr(base, "in_features", 0) or 0
        d_out = getattr(base, "out_features", 0) or 0
        key_name, layer = _group_key(clean + ".")
        key = (key_name.rstrip("."), parameter, count // r, d_in, d_out)
        if key not in groups:
            order.append(key)
        groups[key].append(layer if layer is not None else -1)
        seen_modules.add(clean)
    units = []
    for key in order:
        module, parameter, per_rank, d_in, d_out = key
        layers = groups[key]
        ranges = compress_layers(layers) if layers[0] >= 0 else ()
        units.append(LoraUnit(module, parameter, per_rank, ranges, True, d_in, d_out))
    wrapped.unload()  # restores the plain modules
    units.extend(_list_only_units(model, seen_modules))
    return tuple(units), _peft_moe_aliases(hf_config)


def _list_only_units(model, seen: set[str]) -> list[LoraUnit]:
    """nn.Linear / nn.Embedding modules a target list may name though all-linear skips them (lm_head, embed_tokens)."""
    import torch

    extra = []
    for name, module in model.named_modules():
        if name in seen:
            continue
        if type(module) is torch.nn.Linear:
            per_rank = module.in_features + module.out_features
            extra.append(LoraUnit(name, "", per_rank, (), False, module.in_features, module.out_features))
        elif type(module) is torch.nn.Embedding:
            per_rank = module.num_embeddings + module.embedding_dim
            extra.append(LoraUnit(name, "", per_rank, (), False, module.num_embeddings, module.embedding_dim))
    grouped: dict[tuple, list[int]] = defaultdict(list)
    for u in extra:
        key_name, layer = _group_key(u.module + ".")
        grouped[(key_name.rstrip("."), u.per_rank, u.d_in, u.d_out)].append(-1 if layer is None else layer)
    return [
        LoraUnit(n, "", pr, compress_layers(ls) if ls[0] >= 0 else (), False, di, do)
        for (n, pr, di, do), ls in grouped.items()
    ]


def _peft_moe_aliases(hf_config) -> dict:
    try:
        from peft.utils import transformers_weight_conversion as conv
    except ImportError:
        return {}
    base = getattr(conv, "_MODEL_TO_CONVERSION_PATTERN", {}).get(hf_config.model_type)
    mapping = getattr(conv, "_MOE_TARGET_MODULE_MAPPING", {}).get(base) if base else None
    return dict(mapping or {})


def _attention(model_cls) -> tuple[str, ...]:
    found = ["eager"]
    if getattr(model_cls, "_supports_sdpa", False):
        found.append("sdpa")
    if getattr(model_cls, "_supports_flash_attn", False):
        found += ["flash_attention_2", "flash_attention_3"]
    if getattr(model_cls, "_supports_flex_attn", False):
        found.append("flex_attention")
    return tuple(found)


def _text_config(hf_config):
    getter = getattr(hf_config, "get_text_config", None)
    return getter() if getter else hf_config


def _first(cfg, *keys, default=0):
    for key in keys:
        value = getattr(cfg, key, None)
        if value is not None:
            return value
    return default


def derive_card(config: dict, trust_remote_code: bool = False, source: str = "") -> ArchCard:
    """The card of the model a config.json describes, read from the meta-device model."""
    hf_config = hf_config_from_dict(config, trust_remote_code)
    auto_class = choose_auto_class(hf_config)
    model = meta_model(hf_config, auto_class, trust_remote_code)
    text = _text_config(hf_config)
    tensors = _tensors(model)
    lora_units, aliases = _lora_units(model, hf_config)
    heads = int(_first(text, "num_attention_heads", "n_head"))
    hidden = int(_first(text, "hidden_size", "n_embd"))
    head_dim = int(_first(text, "head_dim", default=0) or hidden // max(heads, 1))
    decoder = model.get_decoder()
    layer_list = getattr(decoder, "layers", None) or getattr(decoder, "h", None) or []
    layer_classes = tuple(sorted({type(layer).__name__ for layer in layer_list}))
    experts = max((t.shape[0] for t in tensors if t.kind == "experts"), default=0)
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight
    attention = _attention(type(model))
    traced = trace_card_activations(model, attention)
    return ArchCard(
        model_type=hf_config.model_type,
        model_class=type(model).__name__,
        auto_class=auto_class,
        decoder_layer_classes=layer_classes,
        hidden_size=hidden,
        intermediate_size=int(_first(text, "intermediate_size", "n_inner", default=0) or 4 * hidden),
        layers=int(_first(text, "num_hidden_layers", "n_layer")),
        heads=heads,
        kv_heads=int(_first(text, "num_key_value_heads", default=0) or heads),
        head_dim=head_dim,
        vocab_size=int(_first(text, "vocab_size")),
        context_length=int(_first(text, "max_position_embeddings", "n_positions", default=0)),
        tied_embeddings=bool(tied),
        attention=attention,
        tensors=tensors,
        lora_units=lora_units,
        experts=int(experts),
        experts_per_token=int(_first(text, "num_experts_per_tok", "experts_per_token", default=0)) if experts else 0,
        shared_experts=int(_first(text, "n_shared_experts", "num_shared_experts", default=0) or 0),
        moe_intermediate_size=int(_first(text, "moe_intermediate_size", "expert_intermediate_size", default=0) or 0),
        peft_moe_aliases=aliases,
        sliding_window=int(_first(text, "sliding_window", default=0) or 0),
        layer_kinds=tuple(traced.get("layer_kinds", ())),
        saved_bytes_per_token=traced.get("saved_bytes_per_token", {}),
        saved_bytes_per_score=traced.get("saved_bytes_per_score", {}),
        post_attention_saved_bytes_per_token=traced.get("post_attention_saved_bytes_per_token", {}),
        forward_peak_bytes_per_token=traced.get("forward_peak_bytes_per_token", {}),
        forward_peak_bytes_per_score=traced.get("forward_peak_bytes_per_score", {}),
        versions=_versions(),
        source=source,
    )
