"""Built-in model catalog: the config.json fields that decide parameter counts and memory.

Figures from each model's own config.json on the Hugging Face hub (docs/sources.md,
"Model configs"); tests check every count against transformers on the
meta device. Keys are hub ids; lookups are case-insensitive.
"""

from __future__ import annotations


def _shape(model_type, h, ffn, layers, heads, kv, vocab, tied, **extra):
    """The config.json fields that decide a decoder's tensor shapes, in the file's own names (the
    fields a model leaves out take transformers' defaults for its model_type)."""
    return {
        "model_type": model_type,
        "hidden_size": h,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        **extra,
    }


# hub id: _shape(model_type, hidden, ffn, layers, heads, kv heads, vocab, tied embeddings, ...)
MODEL_CONFIGS: dict[str, dict] = {
    "meta-llama/Llama-3.1-8B": _shape("llama", 4096, 14336, 32, 32, 8, 128256, False, head_dim=128),
    "meta-llama/Llama-3.1-70B": _shape("llama", 8192, 28672, 80, 64, 8, 128256, False, head_dim=128),
    "meta-llama/Llama-3.1-405B": _shape("llama", 16384, 53248, 126, 128, 8, 128256, False, head_dim=128),
    "meta-llama/Llama-3.2-1B": _shape("llama", 2048, 8192, 16, 32, 8, 128256, True, head_dim=64),
    "meta-llama/Llama-3.2-3B": _shape("llama", 3072, 8192, 28, 24, 8, 128256, True, head_dim=128),
    "meta-llama/Llama-2-7b-hf": _shape("llama", 4096, 11008, 32, 32, 32, 32000, False, head_dim=128),
    "meta-llama/Llama-2-13b-hf": _shape("llama", 5120, 13824, 40, 40, 40, 32000, False, head_dim=128),
    "meta-llama/Llama-2-70b-hf": _shape("llama", 8192, 28672, 80, 64, 8, 32000, False, head_dim=128),
    "mistralai/Mistral-7B-v0.3": _shape("mistral", 4096, 14336, 32, 32, 8, 32768, False, head_dim=128),
    "mistralai/Mixtral-8x7B-v0.1": _shape(
        "mixtral", 4096, 14336, 32, 32, 8, 32000, False, head_dim=128, num_local_experts=8, num_experts_per_tok=2
    ),
    "Qwen/Qwen2.5-0.5B": _shape("qwen2", 896, 4864, 24, 14, 2, 151936, True, head_dim=64),
    "Qwen/Qwen2.5-1.5B": _shape("qwen2", 1536, 8960, 28, 12, 2, 151936, True, head_dim=128),
    "Qwen/Qwen2.5-3B": _shape("qwen2", 2048, 11008, 36, 16, 2, 151936, True, head_dim=128),
    "Qwen/Qwen2.5-7B": _shape("qwen2", 3584, 18944, 28, 28, 4, 152064, False, head_dim=128),
    "Qwen/Qwen2.5-14B": _shape("qwen2", 5120, 13824, 48, 40, 8, 152064, False, head_dim=128),
    "Qwen/Qwen2.5-32B": _shape("qwen2", 5120, 27648, 64, 40, 8, 152064, False, head_dim=128),
    "Qwen/Qwen2.5-72B": _shape("qwen2", 8192, 29568, 80, 64, 8, 152064, False, head_dim=128),
    "google/gemma-2-2b": _shape("gemma2", 2304, 9216, 26, 8, 4, 256000, True, head_dim=256),
    "google/gemma-2-9b": _shape("gemma2", 3584, 14336, 42, 16, 8, 256000, True, head_dim=256),
    "google/gemma-2-27b": _shape("gemma2", 4608, 36864, 46, 32, 16, 256000, True, head_dim=128),
    "microsoft/Phi-3-mini-4k-instruct": _shape("phi3", 3072, 8192, 32, 32, 32, 32064, False, head_dim=96),
}


# Same weights shapes as the base model they were tuned from.
ALIASES: dict[str, str] = {
    "meta-llama/Meta-Llama-3-8B": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3-70B": "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.3-70B-Instruct": "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.2-1B-Instruct": "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B-Instruct": "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-2-7b-chat-hf": "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-13b-chat-hf": "meta-llama/Llama-2-13b-hf",
    "meta-llama/Llama-2-70b-chat-hf": "meta-llama/Llama-2-70b-hf",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistralai/Mistral-7B-v0.3",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mistralai/Mixtral-8x7B-v0.1",
    "Qwen/Qwen2.5-0.5B-Instruct": "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B",
    "Qwen/Qwen2.5-3B-Instruct": "Qwen/Qwen2.5-3B",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen/Qwen2.5-7B",
    "Qwen/Qwen2.5-14B-Instruct": "Qwen/Qwen2.5-14B",
    "Qwen/Qwen2.5-32B-Instruct": "Qwen/Qwen2.5-32B",
    "Qwen/Qwen2.5-72B-Instruct": "Qwen/Qwen2.5-72B",
    "google/gemma-2-2b-it": "google/gemma-2-2b",
    "google/gemma-2-9b-it": "google/gemma-2-9b",
    "google/gemma-2-27b-it": "google/gemma-2-27b",
}


def _hf(hub_id: str) -> str:
    return f"https://huggingface.co/{hub_id}/blob/main/config.json"


# ---- Current models, shipped as architecture cards (catalog/cards/*.json) ------------------
# The config.json fields below are copied from each model's published config.json (source in
# the "_source" key); scripts/make_catalog.py builds each on the meta device and writes its card.
# Fields left out take transformers' defaults for that model_type, as loading the file would
# for every field that decides a tensor shape.


def _qwen3(hub_id, h, ffn, layers, heads, kv, tied, ctx=40960):
    return {
        "_source": _hf(hub_id),
        "model_type": "qwen3",
        "hidden_size": h,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": tied,
        "max_position_embeddings": ctx,
    }


def _qwen3_moe(hub_id, h, ffn, moe_ffn, layers, heads, kv):
    return {
        "_source": _hf(hub_id),
        "model_type": "qwen3_moe",
        "hidden_size": h,
        "intermediate_size": ffn,
        "moe_intermediate_size": moe_ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 128,
        "vocab_size": 151936,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
    }


_SIGLIP_GEMMA3 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 896,
    "patch_size": 14,
    "vision_use_head": False,
}


def _gemma3(hub_id, h, ffn, layers, heads, kv, head_dim):
    return {
        "_source": _hf(hub_id),
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": h,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
            "vocab_size": 262208,
            "sliding_window": 1024,
            "max_position_embeddings": 131072,
        },
        "vision_config": dict(_SIGLIP_GEMMA3),
        "mm_tokens_per_image": 256,
    }


def _llama4(hub_id, experts, interleave):
    return {
        "_source": _hf(hub_id),
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            "hidden_size": 5120,
            "intermediate_size": 8192,
            "intermediate_size_mlp": 16384,
            "num_hidden_layers": 48,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 202048,
            "num_local_experts": experts,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": interleave,
            "max_position_embeddings": 10485760 if experts == 16 else 1048576,
        },
        "vision_config": {
            "model_type": "llama4_vision_model",
            "hidden_size": 1408,
            "intermediate_size": 5632,
            "num_hidden_layers": 34,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projector_input_dim": 4096,
            "projector_output_dim": 4096,
            "vision_output_dim": 4096,
            "pixel_shuffle_ratio": 0.5,
        },
    }


def _gpt_oss(hub_id, layers, experts):
    return {
        "_source": _hf(hub_id),
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_hidden_layers": layers,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 201088,
        "num_local_experts": experts,
        "num_experts_per_tok": 4,
        "sliding_window": 128,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
    }


def _dense(hub_id, model_type, h, ffn, layers, heads, kv, vocab, tied, ctx, **extra):
    return {
        "_source": _hf(hub_id),
        **_shape(model_type, h, ffn, layers, heads, kv, vocab, tied),
        "max_position_embeddings": ctx,
        **extra,
    }


CARD_MODELS: dict[str, dict] = {
    "Qwen/Qwen3-0.6B": _qwen3("Qwen/Qwen3-0.6B", 1024, 3072, 28, 16, 8, True),
    "Qwen/Qwen3-1.7B": _qwen3("Qwen/Qwen3-1.7B", 2048, 6144, 28, 16, 8, True),
    "Qwen/Qwen3-4B": _qwen3("Qwen/Qwen3-4B", 2560, 9728, 36, 32, 8, True),
    "Qwen/Qwen3-8B": _qwen3("Qwen/Qwen3-8B", 4096, 12288, 36, 32, 8, False),
    "Qwen/Qwen3-14B": _qwen3("Qwen/Qwen3-14B", 5120, 17408, 40, 40, 8, False),
    "Qwen/Qwen3-32B": _qwen3("Qwen/Qwen3-32B", 5120, 25600, 64, 64, 8, False),
    "Qwen/Qwen3-30B-A3B": _qwen3_moe("Qwen/Qwen3-30B-A3B", 2048, 6144, 768, 48, 32, 4),
    "Qwen/Qwen3-235B-A22B": _qwen3_moe("Qwen/Qwen3-235B-A22B", 4096, 12288, 1536, 94, 64, 4),
    "google/gemma-3-1b-pt": {
        "_source": _hf("google/gemma-3-1b-pt"),
        "model_type": "gemma3_text",
        "hidden_size": 1152,
        "intermediate_size": 6912,
        "num_hidden_layers": 26,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "vocab_size": 262144,
        "sliding_window": 512,
        "max_position_embeddings": 32768,
    },
    "google/gemma-3-4b-pt": _gemma3("google/gemma-3-4b-pt", 2560, 10240, 34, 8, 4, 256),
    "google/gemma-3-12b-pt": _gemma3("google/gemma-3-12b-pt", 3840, 15360, 48, 16, 8, 256),
    "google/gemma-3-27b-pt": _gemma3("google/gemma-3-27b-pt", 5376, 21504, 62, 32, 16, 128),
    "meta-llama/Llama-4-Scout-17B-16E": _llama4("meta-llama/Llama-4-Scout-17B-16E", 16, 1),
    "meta-llama/Llama-4-Maverick-17B-128E": _llama4("meta-llama/Llama-4-Maverick-17B-128E", 128, 2),
    "openai/gpt-oss-20b": _gpt_oss("openai/gpt-oss-20b", 24, 32),
    "openai/gpt-oss-120b": _gpt_oss("openai/gpt-oss-120b", 36, 128),
    "deepseek-ai/DeepSeek-V3": {
        "_source": _hf("deepseek-ai/DeepSeek-V3"),
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "n_group": 8,
        "topk_group": 4,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "vocab_size": 129280,
        "tie_word_embeddings": False,
        "max_position_embeddings": 163840,
    },
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _dense(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen2", 1536, 8960, 28, 12, 2, 151936, False, 131072
    ),
    "mistralai/Mistral-Nemo-Base-2407": _dense(
        "mistralai/Mistral-Nemo-Base-2407", "mistral", 5120, 14336, 40, 32, 8, 131072, False, 1024000, head_dim=128
    ),
    "mistralai/Mistral-Small-24B-Base-2501": _dense(
        "mistralai/Mistral-Small-24B-Base-2501", "mistral", 5120, 32768, 40, 32, 8, 131072, False, 32768, head_dim=128
    ),
    "mistralai/Mistral-Small-3.1-24B-Base-2503": {
        "_source": _hf("mistralai/Mistral-Small-3.1-24B-Base-2503"),
        "model_type": "mistral3",
        "text_config": {
            "model_type": "mistral",
            "hidden_size": 5120,
            "intermediate_size": 32768,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 131072,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "head_dim": 64,
            "image_size": 1540,
            "patch_size": 14,
        },
        "tie_word_embeddings": False,
        "spatial_merge_size": 2,
        "multimodal_projector_bias": False,
        "vision_feature_layer": -1,
    },
    "microsoft/phi-4": _dense("microsoft/phi-4", "phi3", 5120, 17920, 40, 40, 10, 100352, False, 16384),
    "microsoft/Phi-4-mini-instruct": _dense(
        "microsoft/Phi-4-mini-instruct", "phi3", 3072, 8192, 32, 24, 8, 200064, True, 131072, partial_rotary_factor=0.75
    ),
    "allenai/OLMo-2-0425-1B": _dense("allenai/OLMo-2-0425-1B", "olmo2", 2048, 8192, 16, 16, 16, 100352, False, 4096),
    "allenai/OLMo-2-1124-7B": _dense("allenai/OLMo-2-1124-7B", "olmo2", 4096, 11008, 32, 32, 32, 100352, False, 4096),
    "allenai/OLMo-2-1124-13B": _dense("allenai/OLMo-2-1124-13B", "olmo2", 5120, 13824, 40, 40, 40, 100352, False, 4096),
    "allenai/OLMo-2-0325-32B": _dense("allenai/OLMo-2-0325-32B", "olmo2", 5120, 27648, 64, 40, 8, 100352, False, 4096),
    "HuggingFaceTB/SmolLM3-3B-Base": _dense(
        "HuggingFaceTB/SmolLM3-3B-Base", "smollm3", 2048, 11008, 36, 16, 4, 128256, True, 65536
    ),
    "ibm-granite/granite-3.3-2b-base": _dense(
        "ibm-granite/granite-3.3-2b-base", "granite", 2048, 8192, 40, 32, 8, 49159, True, 131072
    ),
    "ibm-granite/granite-3.3-8b-base": _dense(
        "ibm-granite/granite-3.3-8b-base", "granite", 4096, 12800, 40, 32, 8, 49159, True, 131072
    ),
}

# Tuned checkpoints with the same tensors as the base architecture they were tuned from.
CARD_ALIASES: dict[str, str] = {
    "Qwen/Qwen3-0.6B-Base": "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B-Base": "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-4B-Base": "Qwen/Qwen3-4B",
    "Qwen/Qwen3-4B-Instruct-2507": "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B-Base": "Qwen/Qwen3-8B",
    "Qwen/Qwen3-14B-Base": "Qwen/Qwen3-14B",
    "Qwen/Qwen3-30B-A3B-Base": "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-235B-A22B-Instruct-2507": "Qwen/Qwen3-235B-A22B",
    "google/gemma-3-1b-it": "google/gemma-3-1b-pt",
    "google/gemma-3-4b-it": "google/gemma-3-4b-pt",
    "google/gemma-3-12b-it": "google/gemma-3-12b-pt",
    "google/gemma-3-27b-it": "google/gemma-3-27b-pt",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": "meta-llama/Llama-4-Scout-17B-16E",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct": "meta-llama/Llama-4-Maverick-17B-128E",
    "deepseek-ai/DeepSeek-V3-Base": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-V3-0324": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-ai/DeepSeek-V3",
    "mistralai/Mistral-Nemo-Instruct-2407": "mistralai/Mistral-Nemo-Base-2407",
    "mistralai/Mistral-Small-24B-Instruct-2501": "mistralai/Mistral-Small-24B-Base-2501",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": "mistralai/Mistral-Small-3.1-24B-Base-2503",
    "allenai/OLMo-2-1124-7B-Instruct": "allenai/OLMo-2-1124-7B",
    "allenai/OLMo-2-1124-13B-Instruct": "allenai/OLMo-2-1124-13B",
    "allenai/OLMo-2-0325-32B-Instruct": "allenai/OLMo-2-0325-32B",
    "HuggingFaceTB/SmolLM3-3B": "HuggingFaceTB/SmolLM3-3B-Base",
    "ibm-granite/granite-3.3-2b-instruct": "ibm-granite/granite-3.3-2b-base",
    "ibm-granite/granite-3.3-8b-instruct": "ibm-granite/granite-3.3-8b-base",
}

# R1 distills share their base model's tensors exactly (same config.json shapes): plan them
# as that base. DeepSeek-R1-Distill-Qwen-1.5B is a card of its own (untied head, unlike Qwen2.5-1.5B).
ALIASES.update(
    {
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": "meta-llama/Llama-3.1-8B",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": "meta-llama/Llama-3.1-70B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": "Qwen/Qwen2.5-7B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": "Qwen/Qwen2.5-14B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": "Qwen/Qwen2.5-32B",
    }
)
