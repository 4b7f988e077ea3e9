"""The lesson's decision rules, with the deciding number in each reason (issue 3)."""

import re

import pytest

from ftplan.planner import make_plan, read_answers_text


def plan_for(**sections):
    text = ""
    for section, values in sections.items():
        text += f"[{section}]\n"
        for key, value in values.items():
            text += f"{key} = {value!r}\n".replace("'", '"').replace("True", "true").replace("False", "false")
    return make_plan(read_answers_text(text))


def reasons(plan) -> str:
    return "\n".join(plan.recommendation.reasons)


def plan_8b_on_h100_node(**sections):
    """Llama-3.1-8B on one node of 8 H100s, where every method fits and the lesson's rules decide."""
    return plan_for(
        model={"name": "meta-llama/Llama-3.1-8B"}, hardware={"gpu": "H100-SXM", "gpus_per_node": 8}, **sections
    )


DOMAIN_KNOWLEDGE = {"objective": {"kind": "domain_knowledge"}, "data": {"examples": 1_000_000, "avg_tokens": 1000}}
"""A billion tokens of domain knowledge: full fine-tuning's case, unless a limit rules it out."""


def test_lesson_worked_example_13b_two_a100_five_variants_is_lora():
    # seed: recommend_fine_tuning_method(13, 2 GPUs, 200K examples, "instruction", 5 variants, $1000)
    plan = plan_for(
        model={"name": "meta-llama/Llama-2-13b-hf"},
        hardware={"gpu": "A100-80GB", "gpus_per_node": 2},
        data={"examples": 200_000, "avg_tokens": 400},
        objective={"kind": "instruction", "variants": 5},
        budget={"usd": 1000},
    )
    assert plan.recommendation.method == "lora"
    text = reasons(plan)
    assert "5 × 26.0 GB merged models" in text  # 13.0B params x 2 bytes
    assert re.search(r"5 × \d+ MB adapters", text)


def test_domain_knowledge_recommends_full_when_it_fits():
    plan = plan_8b_on_h100_node(**DOMAIN_KNOWLEDGE)
    assert plan.methods["full"].fits
    assert plan.recommendation.method == "full"
    assert "domain knowledge" in reasons(plan)


def test_hardware_override_names_the_gpus_full_needs():
    plan = plan_for(
        model={"name": "meta-llama/Llama-3.1-70B"},
        hardware={"gpu": "A100-80GB"},
        objective={"kind": "domain_knowledge"},
    )
    assert not plan.methods["full"].fits
    assert plan.recommendation.method == "qlora"
    text = reasons(plan)
    assert re.search(r"full fine-tuning needs \d+× A100-80GB", text)
    assert "you have 1× A100-80GB" in text


def test_qlora_when_only_qlora_fits_a_70b_on_one_a100():
    plan = plan_for(model={"name": "meta-llama/Llama-3.1-70B"}, hardware={"gpu": "A100-80GB"})
    assert [m for m, mp in plan.methods.items() if mp.fits] == ["qlora"]
    assert plan.recommendation.method == "qlora"


def test_nothing_fits_says_the_smallest_hardware_that_would():
    plan = plan_for(model={"name": "meta-llama/Llama-3.1-405B"}, hardware={"gpu": "RTX-4090"})
    assert not any(mp.fits for mp in plan.methods.values())
    assert "nothing fits 1× RTX-4090" in reasons(plan)
    assert re.search(r"fits on \d+× H200", reasons(plan))


def test_many_variants_turn_full_into_lora():
    plan = plan_8b_on_h100_node(objective={"kind": "domain_knowledge", "variants": 10})
    assert plan.recommendation.method == "lora"
    assert "10 × 16.1 GB merged models" in reasons(plan)


@pytest.mark.parametrize(
    "budget,full_figure,reason",
    [
        ({"usd": 120}, lambda full: full.cost.usd, r"\$\d[\d,]* > budget \$120"),
        ({"hours": 3.5}, lambda full: full.time.hours, r"> deadline 3\.5 h"),
    ],
    ids=["budget", "deadline"],
)
def test_a_limit_full_exceeds_overrides_it(budget, full_figure, reason):
    plan = plan_8b_on_h100_node(**DOMAIN_KNOWLEDGE, budget=budget)
    (limit,) = budget.values()
    assert full_figure(plan.methods["full"]) > limit
    assert plan.recommendation.method in ("lora", "qlora")
    assert re.search(reason, reasons(plan))


def test_narrow_task_with_ten_million_examples_goes_full():
    plan = plan_for(
        model={"name": "Qwen/Qwen2.5-0.5B"},
        hardware={"gpu": "H100-SXM", "gpus_per_node": 8},
        objective={"kind": "task_specific"},
        data={"examples": 12_000_000, "avg_tokens": 200},
    )
    assert plan.recommendation.method == "full"
    assert "12,000,000 examples" in reasons(plan)


@pytest.mark.parametrize("tokens,method", [(200, "lora"), (20_000, "full")])
def test_new_vocabulary(tokens, method):
    plan = plan_8b_on_h100_node(objective={"kind": "new_vocabulary", "new_tokens": tokens})
    assert plan.recommendation.method == method
    assert f"{tokens:,} new tokens" in reasons(plan)
    lora = plan.methods["lora"]
    assert lora.settings.train_new_token_rows
    # only the new rows of embed_tokens and lm_head train, on top of the adapters
    assert lora.trainable_params == 41_943_040 + 2 * tokens * 4096


def test_user_method_is_respected_and_the_disagreement_explained():
    plan = plan_for(
        model={"name": "meta-llama/Llama-3.1-8B"}, hardware={"gpu": "H100-SXM"}, training={"method": "qlora"}
    )
    assert plan.recommendation.method == "qlora"
    assert plan.recommendation.reasons[0].startswith("You chose QLoRA; ftplan would pick LoRA")


def test_user_overrides_are_kept_and_warned_about():
    plan = plan_for(
        model={"name": "meta-llama/Llama-3.1-8B"},
        hardware={"gpu": "A100-80GB"},
        training={"lora_r": 16, "lora_alpha": 8, "micro_batch_size": 64},
    )
    lora = plan.methods["lora"]
    assert lora.settings.micro_batch_size == 64 and lora.settings.lora_alpha == 8
    assert "micro_batch_size" not in lora.settings.chosen_by_planner
    assert not lora.fits
    assert any("lora_alpha 8 < lora_r 16" in w for w in lora.warnings)
    assert any(w.startswith("does not fit") for w in lora.warnings)


def test_lesson_defaults():
    plan = plan_for(model={"name": "meta-llama/Llama-3.1-8B"}, hardware={"gpu": "A100-80GB"}, data={"examples": 50_000})
    full, lora = plan.methods["full"].settings, plan.methods["lora"].settings
    assert 1e-5 <= full.learning_rate <= 5e-5
    assert 1e-4 <= lora.learning_rate <= 3e-4
    assert lora.lora_alpha == 2 * lora.lora_r == 32
    assert lora.lora_target_modules == "all-linear"
    assert lora.warmup_ratio == 0.03 and lora.lr_scheduler == "cosine"
    assert (
        plan_for(model={"name": "meta-llama/Llama-3.1-8B"}, data={"examples": 2_000}).methods["lora"].settings.lora_r
        == 8
    )


def test_pre_ampere_gpus_get_fp16_mixed():
    plan = plan_for(model={"name": "Qwen/Qwen2.5-1.5B"}, hardware={"gpu": "V100-32GB"})
    assert all(mp.settings.precision == "fp16-mixed" for mp in plan.methods.values())


def test_qlora_with_zero3_warns_about_quant_storage():
    plan = plan_for(
        model={"name": "meta-llama/Llama-3.1-70B"},
        hardware={"gpu": "A100-40GB", "gpus_per_node": 4},
        training={"zero_stage": 3},
    )
    assert any("bnb_4bit_quant_storage" in w for w in plan.methods["qlora"].warnings)
