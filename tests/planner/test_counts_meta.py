"""Exact counts: the pure-Python accounting equals transformers + peft on the meta device."""

import sys
from pathlib import Path

import pytest

from ftplan.planner.arch import arch_from_config
from ftplan.planner.catalog.models import MODEL_CONFIGS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
sys.path.insert(0, str(Path(__file__).parent))
from card_support import language_only  # noqa: E402


def _meta_model(config: dict):
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **cfg)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_total_parameters_equal_transformers(name):
    config = MODEL_CONFIGS[name]
    model = _meta_model(config)
    assert arch_from_config(config).params == sum(p.numel() for p in model.parameters())


# (model, target modules, rank): GQA, fused Phi-3 projections, Qwen2 biases, Gemma-2 head_dim.
LORA_CASES = [
    ("meta-llama/Llama-3.1-8B", "all-linear", 16),
    ("meta-llama/Llama-3.1-8B", ["q_proj", "v_proj"], 8),
    ("meta-llama/Llama-2-7b-hf", ["q_proj", "k_proj", "v_proj", "o_proj"], 64),
    ("Qwen/Qwen2.5-7B", "all-linear", 32),
    ("google/gemma-2-9b", "all-linear", 16),
    ("microsoft/Phi-3-mini-4k-instruct", "all-linear", 16),
    ("microsoft/Phi-3-mini-4k-instruct", ["qkv_proj"], 8),
    ("mistralai/Mixtral-8x7B-v0.1", "all-linear", 8),
    ("meta-llama/Llama-3.2-1B", ["gate_proj", "up_proj", "down_proj"], 4),
]


@pytest.mark.parametrize("name,targets,r", LORA_CASES, ids=lambda v: str(v))
def test_lora_trainable_parameters_equal_peft(name, targets, r):
    config = MODEL_CONFIGS[name]
    model = _meta_model(config)
    lora = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(model, lora)
    assert arch_from_config(config).lora_params(r, targets) == _trainable(peft_model)


def test_llama3_8b_lora_r16_matches_the_published_peft_figure():
    # docs/sources.md (peft's own count): PEFT prints trainable params: 41,943,040 || all params: 8,072,204,288
    arch = arch_from_config(MODEL_CONFIGS["meta-llama/Llama-3.1-8B"])
    assert arch.lora_params(16, "all-linear") == 41_943_040
    assert arch.params + arch.lora_params(16, "all-linear") == 8_072_204_288


def test_quantizable_parameters_are_the_decoder_linear_weights():
    config = MODEL_CONFIGS["Qwen/Qwen2.5-0.5B"]
    model = _meta_model(config)
    linear = sum(
        m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"
    )
    assert arch_from_config(config).quantizable_params == linear


def test_largest_layer_is_the_biggest_module():
    config = MODEL_CONFIGS["meta-llama/Llama-3.1-8B"]
    model = _meta_model(config)
    biggest = max(
        [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]
        + [model.model.embed_tokens.weight.numel()]
    )
    assert arch_from_config(config).largest_layer_params == biggest


# ---- shipped architecture cards (catalog/cards) ---------------------------------------------
from ftplan.planner.catalog.models import ALIASES, CARD_ALIASES, CARD_MODELS  # noqa: E402
from ftplan.planner.models import resolve_model, shipped_card  # noqa: E402


def _published(hub_id: str) -> dict:
    return {k: v for k, v in CARD_MODELS[hub_id].items() if not k.startswith("_")}


def _meta_from_published(hub_id: str):
    cfg = _published(hub_id)
    hf_config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    vision = getattr(hf_config, "vision_config", None) is not None
    auto = transformers.AutoModelForImageTextToText if vision else transformers.AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(hf_config)


def _heavy(hub_id: str) -> bool:
    return shipped_card(hub_id).params > 20e9


CARD_CASES = [pytest.param(h, marks=pytest.mark.slow) if _heavy(h) else h for h in sorted(CARD_MODELS)]


@pytest.mark.parametrize("hub_id", CARD_CASES)
def test_shipped_card_counts_equal_the_meta_device(hub_id):
    """Parameters and peft's all-linear LoRA count (r = 16) of each shipped card, from scratch."""
    model = _meta_from_published(hub_id)
    card = shipped_card(hub_id)
    assert card.params == sum(p.numel() for p in model.parameters())
    config = peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", **language_only(model))
    with torch.device("meta"):
        wrapped = peft.get_peft_model(model, config)
    assert card.lora_params(16, "all-linear") == _trainable(wrapped)


def test_catalog_spans_forty_models_and_twelve_architectures():
    types = {c["model_type"] for c in MODEL_CONFIGS.values()} | {c["model_type"] for c in CARD_MODELS.values()}
    assert len(MODEL_CONFIGS) + len(CARD_MODELS) >= 40
    assert len(types) >= 12


@pytest.mark.parametrize(
    "tuned,base",
    [
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B"),
        ("google/gemma-3-27b-it", "google/gemma-3-27b-pt"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "meta-llama/Llama-3.1-8B"),
    ],
)
def test_instruct_ids_resolve_to_their_base_architecture(tuned, base):
    assert resolve_model(tuned).arch.params == resolve_model(base).arch.params
    assert tuned in CARD_ALIASES or tuned in ALIASES


@pytest.mark.slow
def test_shipped_cards_are_what_the_installed_libraries_derive():
    """scripts/make_catalog.py --check: a library upgrade that changes a card fails here."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "make_catalog.py"
    spec = importlib.util.spec_from_file_location("make_catalog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    small = [h for h in sorted(CARD_MODELS) if not _heavy(h)]
    assert module.main(["--check", *small]) == 0


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_hand_coded_attention_kernels_are_the_class_flags(name):
    from ftplan.derive.meta import _attention

    config = dict(MODEL_CONFIGS[name])
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    model_cls = transformers.AutoModelForCausalLM._model_mapping[type(hf_config)]
    assert arch_from_config(MODEL_CONFIGS[name]).attention_kernels == _attention(model_cls)
