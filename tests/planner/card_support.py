"""Tiny config.json files of many architectures, and the meta-device truth to hold cards to.

The truth is computed here independently of ftplan.derive: transformers builds the model from
the folder's config.json (the Auto class the model type is registered under), peft wraps it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BASE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=256,
)
MOE = dict(num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)

DEEPSEEK_MLA = {
    **MOE,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_group": 1,
    "topk_group": 1,
}
"""DeepSeek-V2 and V3 share one layer design (multi-head latent attention, shared and routed experts);
one tiny config serves both model types."""

# model_type -> overrides of BASE (text models: AutoModelForCausalLM)
TEXT_TYPES: dict[str, dict] = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16},
    "gemma3_text": {"head_dim": 16, "sliding_window": 32},
    "phi3": {"pad_token_id": 0},
    "phi": {},
    "olmo": {},
    "olmo2": {},
    "smollm3": {"pad_token_id": 0},
    "granite": {},
    "cohere": {},
    "starcoder2": {},
    "stablelm": {},
    "falcon": {"num_kv_heads": 2, "new_decoder_architecture": True},
    "gpt_neox": {},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256},
    "mixtral": MOE,
    "qwen2_moe": {**MOE, "shared_expert_intermediate_size": 64},
    "qwen3_moe": {**MOE, "head_dim": 16},
    "olmoe": MOE,
    "granitemoe": MOE,
    "gpt_oss": {**MOE, "head_dim": 16, "sliding_window": 32},
    "deepseek_v2": DEEPSEEK_MLA,
    "deepseek_v3": DEEPSEEK_MLA,
}

_TEXT = {k: BASE[k] for k in BASE}
VISION_CONFIGS: dict[str, dict] = {
    "gemma3": {
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", **_TEXT, "head_dim": 16, "sliding_window": 32},
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        "mm_tokens_per_image": 4,
    },
    "mistral3": {
        "model_type": "mistral3",
        "text_config": {"model_type": "mistral", **_TEXT, "head_dim": 16, "tie_word_embeddings": False},
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": 56,
            "patch_size": 14,
        },
        "tie_word_embeddings": False,
        "spatial_merge_size": 2,
    },
    "llama4": {
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            **_TEXT,
            "head_dim": 16,
            "intermediate_size_mlp": 96,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
        },
        "vision_config": {
            "model_type": "llama4_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "projector_input_dim": 64,
            "projector_output_dim": 64,
            "vision_output_dim": 64,
            "pixel_shuffle_ratio": 0.5,
        },
    },
}


def tiny_config(model_type: str) -> dict:
    """A complete config.json dictionary (transformers' own serialisation) of a tiny model."""
    import transformers

    if model_type in VISION_CONFIGS:
        cfg = dict(VISION_CONFIGS[model_type])
        mt = cfg.pop("model_type")
        return transformers.AutoConfig.for_model(mt, **cfg).to_dict()
    overrides = {**BASE, **TEXT_TYPES[model_type]}
    return transformers.AutoConfig.for_model(model_type, **overrides).to_dict()


def write_folder(root: Path, model_type: str) -> Path:
    folder = root / model_type
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(tiny_config(model_type)), encoding="utf-8")
    return folder


def meta_truth(folder: Path, targets, r: int = 8) -> tuple[int, int]:
    """(parameters, LoRA trainable parameters) of the model in ``folder``, from transformers + peft."""
    import peft
    import torch
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(folder)
    vision = getattr(hf_config, "vision_config", None) is not None
    auto = transformers.AutoModelForImageTextToText if vision else transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(hf_config)
    params = sum(p.numel() for p in model.parameters())
    config = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, **language_only(model))
    with torch.device("meta"):
        wrapped = peft.get_peft_model(model, config)
    return params, sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


VISION_PARTS = r".*\b(vision_tower|vision_model|multi_modal_projector)\b.*"
"""The vision towers and projectors of the vision classes tested here, by their attribute names."""


def language_only(model) -> dict:
    """LoraConfig arguments that keep adapters off a vision model's tower and projector, as the exported
    train.py does (there from the model's decoder; here from the names, independently)."""
    vision = any(re.fullmatch(VISION_PARTS, name) for name, _ in model.named_modules())
    return {"exclude_modules": VISION_PARTS} if vision else {}
