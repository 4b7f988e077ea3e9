"""Cards derived from the model's own code equal the meta-device truth, for 30 architectures.

Each tiny config.json is written to a local folder and planned through ``resolve_model`` as a
user's folder would be (the hand-written accounting for its seven types, a derived card for
the rest); the truth is transformers + peft on the meta device (tests/planner/card_support.py).
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import card_support  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("peft")

ALL_TYPES = sorted([*card_support.TEXT_TYPES, *card_support.VISION_CONFIGS])


@pytest.fixture(autouse=True)
def _card_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTPLAN_CACHE_DIR", str(tmp_path / "cache"))


def _resolve(folder, **kw):
    from ftplan.planner.models import resolve_model

    return resolve_model(str(folder), **kw)


def test_thirty_architectures_are_covered():
    assert len(ALL_TYPES) >= 30


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_local_config_counts_equal_meta_device(model_type, tmp_path):
    folder = card_support.write_folder(tmp_path, model_type)
    arch = _resolve(folder).arch
    params, lora = card_support.meta_truth(folder, "all-linear", r=8)
    assert arch.params == params
    assert arch.lora_params(8, "all-linear") == lora


TARGET_LISTS = [
    ("qwen3_moe", ["q_proj", "v_proj"]),
    ("qwen3_moe", ["gate_proj", "up_proj", "down_proj"]),
    ("qwen3_moe", ["gate", "o_proj"]),
    ("qwen3_moe", ["q_proj", "lm_head"]),
    ("mixtral", ["w1", "w3", "w2", "gate"]),
    ("gemma3", ["q_proj", "v_proj"]),  # not the vision tower's q_proj / v_proj: train.py excludes the tower
    ("gpt_oss", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("deepseek_v3", ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"]),
    ("llama4", ["gate_proj", "up_proj", "down_proj"]),
    ("olmo2", ["embed_tokens", "q_proj"]),
]


@pytest.mark.parametrize("model_type,targets", TARGET_LISTS, ids=lambda v: str(v))
def test_target_lists_adapt_what_peft_adapts(model_type, targets, tmp_path):
    folder = card_support.write_folder(tmp_path, model_type)
    arch = _resolve(folder).arch
    _, lora = card_support.meta_truth(folder, targets, r=4)
    assert arch.lora_params(4, targets) == lora
    assert arch.unmatched_targets(targets) == []


def test_a_vision_model_keeps_its_vision_tower_and_loads_through_image_text_to_text(tmp_path):
    folder = card_support.write_folder(tmp_path, "mistral3")
    resolved = _resolve(folder)
    card = resolved.card
    assert card.auto_class == "AutoModelForImageTextToText"
    assert card.model_class == "Mistral3ForConditionalGeneration"
    assert card.params_of("vision") > 0
    assert card.language_params < card.params


def test_gemma2_class_rejects_sdpa_and_the_card_says_so(tmp_path):
    from ftplan.derive.meta import derive_card

    card = derive_card(card_support.tiny_config("gemma2"))
    assert "sdpa" not in card.attention and "eager" in card.attention
    assert "sdpa" in derive_card(card_support.tiny_config("qwen3")).attention


def test_decoder_layer_class_and_moe_figures(tmp_path):
    from ftplan.derive.meta import derive_card

    card = derive_card(card_support.tiny_config("qwen3_moe"))
    assert card.decoder_layer_classes == ("Qwen3MoeDecoderLayer",)
    assert (card.experts, card.experts_per_token, card.moe_intermediate_size) == (4, 2, 32)
    deepseek = derive_card(card_support.tiny_config("deepseek_v3"))
    assert deepseek.shared_experts == 1
    # first_k_dense_replace = 1: layer 0 is dense, layer 1 holds the experts
    assert deepseek.layer_sizes[1] > deepseek.layer_sizes[0]


def test_fused_expert_tensors_stay_16_bit_under_bitsandbytes_4bit(tmp_path):
    """Load a real tiny Qwen3-MoE with BitsAndBytesConfig on the CPU: the card's 4-bit set is
    exactly the weights transformers turned into Params4bit (the 3-D expert tensors stay bf16)."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    import transformers

    from ftplan.derive.meta import derive_card

    config = card_support.tiny_config("qwen3_moe")
    cfg = transformers.AutoConfig.for_model(
        **{"model_type": config["model_type"]}, **{k: v for k, v in config.items() if k != "model_type"}
    )
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(tmp_path / "m")
    quant = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", quantization_config=quant, dtype=torch.bfloat16, device_map="cpu"
    )
    four_bit = sum(m.in_features * m.out_features for m in loaded.modules() if isinstance(m, bnb.nn.Linear4bit))
    experts_dtypes = {p.dtype for n, p in loaded.named_parameters() if "experts" in n}
    card = derive_card(config)
    assert card.quantizable_params == four_bit
    assert experts_dtypes == {torch.bfloat16}
    assert card.params_of("experts") > 0 and not any(t.quantized for t in card.tensors if t.kind == "experts")
    # What TRL / the exported train.py run next: every 16-bit parameter left becomes fp32, the experts
    # included, which is what the planner charges (4 bytes each for what is not 4-bit).
    from peft import prepare_model_for_kbit_training

    prepared = prepare_model_for_kbit_training(loaded, use_gradient_checkpointing=False)
    assert {p.dtype for n, p in prepared.named_parameters() if "experts" in n} == {torch.float32}
    kept = sum(p.numel() * p.element_size() for p in prepared.parameters() if type(p).__name__ != "Params4bit")
    assert kept == (card.params - card.quantizable_params) * 4


def test_moe_qlora_warns_with_the_models_own_unquantized_expert_bytes():
    from ftplan.planner import make_plan, parse_answers

    plan = make_plan(parse_answers({"model": {"name": "Qwen/Qwen3-30B-A3B"}, "hardware": {"gpu": "H100-SXM"}}))
    qlora, lora = plan.methods["qlora"], plan.methods["lora"]
    warning = next(w for w in qlora.warnings if "expert parameters" in w)
    experts = 48 * (128 * 1536 * 2048 + 128 * 2048 * 768)  # the published config: 48 layers, 128 experts
    assert f"{experts:,} expert parameters" in warning and "transformers 5." in warning
    assert f"{experts * 4 / 2**30:,.1f} GiB" in warning and "needs more memory than LoRA" in warning
    assert "attention only" not in warning  # peft's all-linear adapts the fused experts of this class
    assert qlora.memory.weights > lora.memory.weights


def test_second_plan_of_a_config_reads_the_cached_card(tmp_path):
    import time

    folder = card_support.write_folder(tmp_path, "olmo2")
    first = _resolve(folder)
    from ftplan.derive.cache import cache_dir

    assert len(list(cache_dir().glob("*.json"))) == 1
    start = time.perf_counter()
    from ftplan.derive.cache import card_for_config

    again = card_for_config(json.loads((folder / "config.json").read_text()), False, "local folder")
    assert time.perf_counter() - start < 0.5
    assert again == first.card


@pytest.mark.parametrize(
    "model_type,targets",
    [
        ("qwen3_moe", "all-linear"),
        ("qwen3_moe", ["q_proj", "v_proj"]),
        ("mixtral", "all-linear"),
        ("qwen3", "all-linear"),
    ],
    ids=str,
)
def test_lora_dropout_rule_is_peft_s_own(model_type, targets, tmp_path):
    """peft's LoRA on fused expert tensors (lora.ParamWrapper) refuses lora_dropout != 0: the planner
    knows when the targets reach them (plans dropout 0 there, exit 2 for a dropout the user set)."""
    import peft
    import torch
    import transformers

    from ftplan.context import build_context
    from ftplan.planner import AnswersError, make_plan, read_answers_text

    folder = card_support.write_folder(tmp_path, model_type)
    arch = _resolve(folder).arch
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))
    try:
        with torch.device("meta"):
            peft.get_peft_model(model, peft.LoraConfig(r=2, lora_dropout=0.05, target_modules=targets))
        refused = False
    except ValueError as exc:
        refused = "lora_dropout" in str(exc)
    assert arch.lora_adapts_expert_tensors(targets) == refused
    training = f'lora_target_modules = {json.dumps(targets)}\nmethod = "lora"\n'
    text = f'[model]\nname = "{folder}"\n\n[training]\n{training}'
    answers = read_answers_text(text)  # the plan leaves dropout to the planner: 0 where peft needs it
    plan = make_plan(answers, build_context(answers, detect=False))
    assert (plan.methods["lora"].settings.lora_dropout == 0.0) == refused
    if refused:
        with pytest.raises(AnswersError) as info:
            read_answers_text(text + "lora_dropout = 0.05\n")
        assert [p.field for p in info.value.problems] == ["training.lora_dropout"]
