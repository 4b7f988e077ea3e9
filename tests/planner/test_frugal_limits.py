"""Issue 14: "longest sequence that fits" compares methods, each at its most frugal settings.

It used to be asked of each method's planned settings: full (planned with checkpointing)
28,160 against LoRA (planned without) 5,888 on one A100, which reads as "full fits longer
sequences" when the difference was a setting.
"""

from ftplan.planner import make_plan, parse_answers
from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.choose import fitting_limits
from ftplan.planner.device import Device
from ftplan.planner.models import resolve_model

BASE = {"model": {"name": "meta-llama/Llama-3.1-8B"}, "hardware": {"gpu": "A100-80GB"}, "data": {"examples": 50000}}


def plan_with(training: dict):
    return make_plan(parse_answers({**BASE, "training": training}))


def test_the_figure_does_not_depend_on_the_planned_checkpointing():
    auto, forced = plan_with({}), plan_with({"gradient_checkpointing": True})
    for method in ("lora", "qlora"):
        assert not auto.methods[method].settings.gradient_checkpointing  # the fast plan, as before
        # equal but for the plan's accumulation (a larger micro-batch means fewer steps to keep
        # gradients alive through): one 256-token step at most
        assert abs(auto.methods[method].max_seq_len_that_fits - forced.methods[method].max_seq_len_that_fits) <= 256


def test_the_figure_is_the_frugal_one_not_the_planned_one():
    plan = plan_with({})
    arch, device = resolve_model(BASE["model"]["name"]).arch, Device(GPUS["A100-80GB"], 1, 1)
    for method, mp in plan.methods.items():
        planned, _ = fitting_limits(arch, mp.settings, device)
        assert mp.max_seq_len_that_fits >= planned, method
    lora = plan.methods["lora"]
    assert lora.max_seq_len_that_fits > 2 * fitting_limits(arch, lora.settings, device)[0]


def test_a_setting_the_user_fixed_is_kept():
    free, fixed = plan_with({}), plan_with({"gradient_checkpointing": False})
    assert fixed.methods["lora"].max_seq_len_that_fits < free.methods["lora"].max_seq_len_that_fits
