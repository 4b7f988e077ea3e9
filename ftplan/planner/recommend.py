"""The recommendation: the lesson's decision rules with its numbers replaced by this case's.

Order of the rules (README, "How the planner decides"): the
objective proposes a method; what does not fit the hardware is out; more than three served
variants favour LoRA; the budget and deadline rule out what costs too much. Every reason
carries the number that decided it.
"""

from __future__ import annotations

from ftplan.planner.answers import Answers, Method
from ftplan.planner.units import gb as _gb
from ftplan.planner.units import gib as _gib

FULL_EXAMPLES_THRESHOLD = 10_000_000  # the lesson: >10M examples of one task -> full
NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def objective_choice(answers: Answers, examples: int) -> tuple[Method, str]:
    kind = answers.objective.kind
    if kind == "domain_knowledge":
        return "full", (
            "domain knowledge (continual pre-training) needs broad weight updates; LoRA's low-rank "
            "update limits how much new knowledge is absorbed"
        )
    if kind == "task_specific":
        if examples >= FULL_EXAMPLES_THRESHOLD:
            return (
                "full",
                f"{examples:,} examples of one narrow task (≥10M): full fine-tuning has the higher quality ceiling",
            )
        return (
            "lora",
            f"one narrow task with {examples:,} examples (<10M): LoRA matches full fine-tuning here at a fraction of the cost",
        )
    if kind == "new_vocabulary":
        n = answers.objective.new_tokens
        if n <= 1000:
            return "lora", (
                f"{n:,} new tokens: LoRA with only the new embedding rows trainable (peft trainable_token_indices) "
                "learns them without full fine-tuning"
            )
        return (
            "full",
            f"{n:,} new tokens: embeddings and output head must retrain broadly, which needs full fine-tuning",
        )
    return "lora", "instruction/chat tuning is a low-rank behavioural change: LoRA matches full fine-tuning quality"


def _usd(amount: float) -> str:
    """Dollars as the plan line writes them where it matters: cents below $100 ("$3.60 > budget
    $2.00", not "$4 > budget $2" beside a plan line of $3.60), whole dollars above."""
    return f"${amount:,.2f}" if amount < 100 else f"${amount:,.0f}"


def recommend(answers: Answers, methods: dict, examples: int, hardware_desc: str) -> tuple[Method, list[str]]:
    """Pick a method from the per-method plans (dicts with fits/time/cost/memory)."""
    reasons: list[str] = []
    choice, why = objective_choice(answers, examples)
    reasons.append(f"Objective: {why}.")
    order: list[Method] = {
        "full": ["full", "lora", "qlora"],
        "lora": ["lora", "qlora", "full"],
        "qlora": ["qlora", "lora", "full"],
    }[choice]

    fitting = [m for m in order if methods[m].fits]
    if choice not in fitting:
        need = methods[choice].hardware_needed
        if fitting:
            alt = fitting[0] if choice != "full" else next((m for m in ("lora", "qlora") if m in fitting), fitting[0])
            reasons.append(
                f"Hardware: {NAMES[choice]} needs {need or 'more memory than is available'}; you have {hardware_desc}. "
                f"{NAMES[alt]} fits ({_gib(methods[alt].memory.total)} per GPU)."
            )
            choice = alt
        else:
            cheapest = min(("qlora", "lora", "full"), key=lambda m: methods[m].memory.total)
            reasons.append(
                f"Hardware: nothing fits {hardware_desc}; {NAMES[cheapest]} needs the least "
                f"({_gib(methods[cheapest].memory.total)} per GPU) and fits on {methods[cheapest].hardware_needed or 'no catalog GPU setup'}."
            )
            choice = cheapest
    variants = answers.objective.variants
    if variants > 3:
        lora = methods["lora"] if methods["lora"].fits else methods["qlora"]
        full = methods["full"]
        reasons.append(
            f"Variants: {variants} × {_gb(full.cost.artifact_gb * 1e9)} merged models "
            f"({_gb(full.cost.serving_storage_gb * 1e9)}) and {full.cost.serving_gpus} serving GPU(s) vs one base + "
            f"{variants} × {lora.cost.artifact_gb * 1000:,.0f} MB adapters ({_gb(lora.cost.serving_storage_gb * 1e9)}), "
            "hot-swapped on one server."
        )
        if lora.fits and choice == "full":
            choice = lora.settings.method
    budget, deadline = answers.budget.usd, answers.budget.hours
    if budget or deadline:
        current = methods[choice]
        over_budget = budget is not None and current.cost.usd > budget
        over_time = deadline is not None and current.time.hours > deadline
        if over_budget or over_time:
            within = [
                m
                for m in ("lora", "qlora", "full")
                if methods[m].fits
                and (budget is None or methods[m].cost.usd <= budget)
                and (deadline is None or methods[m].time.hours <= deadline)
            ]
            what = (
                f"costs {_usd(current.cost.usd)} > budget {_usd(budget)}"
                if over_budget
                else f"takes {current.time.hours:,.1f} h > deadline {deadline:,.1f} h"
            )
            if within:
                alt = within[0]
                reasons.append(
                    f"Budget: one {NAMES[choice]} run {what}; {NAMES[alt]} costs "
                    f"{_usd(methods[alt].cost.usd)} in {methods[alt].time.hours:,.1f} h."
                )
                choice = alt
            else:
                reasons.append(
                    f"Budget: one {NAMES[choice]} run {what}, and no method fits within it; reduce epochs or data."
                )
        else:
            spare = methods[choice].cost.runs_within_budget
            if spare is not None:
                reasons.append(
                    f"Budget: one run costs ${current.cost.usd:,.2f}; the budget covers {spare} run(s) "
                    f"(a production model usually takes {current.cost.experiment_runs})."
                )
    chosen = methods[choice]
    reasons.append(
        f"Plan: {NAMES[choice]} takes {_gib(chosen.memory.total)} per GPU, {chosen.time.hours:,.1f} h and "
        f"${chosen.cost.usd:,.2f} per run."
    )
    if answers.training.method != "auto" and answers.training.method != choice:
        reasons.insert(
            0, f"You chose {NAMES[answers.training.method]}; ftplan would pick {NAMES[choice]} for the reasons below."
        )
        choice = answers.training.method
    return choice, reasons
