"""Rich tables for a plan: what `ftplan --answers FILE` prints and the TUI reuses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ftplan.planner import METHODS
from ftplan.planner.units import gib  # the shells' one formatter, re-exported

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan

NAMES = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "overhead", "total")
# The settings every table shows, in this order (LoRA's own follow for LoRA and QLoRA).
SETTING_KEYS = (
    "precision",
    "optimizer",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "zero_stage",
    "offload",
    "attention",
    "learning_rate",
    "epochs",
)


def count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:,.1f} M"
    return f"{n:,}"


def model_table(plan: Plan) -> Table:
    m, hw = plan.model, plan.hardware
    t = Table(title="Model and hardware", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{m.name} ({m.model_type}, from {m.source})")
    t.add_row("parameters", f"{m.params:,}")
    t.add_row(
        "shape",
        f"{m.layers} layers, h={m.hidden_size}, ffn={m.intermediate_size}, heads={m.heads}/{m.kv_heads} kv, vocab={m.vocab_size:,}",
    )
    where = "the CPU" if hw.gpu == "cpu" else f"{hw.world_size}× {hw.gpu} ({gib(hw.gpu_memory)} each)"
    t.add_row(
        "hardware", where + (f", {hw.nodes} nodes" if hw.nodes > 1 else "") + (" [detected]" if hw.detected else "")
    )
    t.add_row("data", f"{plan.data['examples']:,} examples × {plan.data['avg_tokens']:,} tokens")
    return t


def memory_table(plan: Plan) -> Table:
    per = "host memory" if plan.hardware.gpu == "cpu" else "per GPU"
    t = Table(title=f"Memory {per} at the step's peak", title_justify="left")
    t.add_column("component")
    for m in METHODS:
        t.add_column(NAMES[m] + (" ★" if m == plan.recommendation.method else ""), justify="right")
    t.add_row("trainable params", *[count(plan.methods[m].trainable_params) for m in METHODS])
    for comp in COMPONENTS:
        cells = []
        for m in METHODS:
            mp = plan.methods[m]
            value = getattr(mp.memory, comp)
            style = "bold " + ("green" if mp.fits else "red") if comp == "total" else ""
            cells.append(Text(gib(value), style=style))
        t.add_row(comp, *cells)
    t.add_row("fits", *[Text("yes", "green") if plan.methods[m].fits else Text("no", "bold red") for m in METHODS])
    t.add_row("host RAM (offload)", *[gib(plan.methods[m].cpu_memory) for m in METHODS])
    if plan.hardware.gpu != "cpu":
        t.add_row("longest seq (b=1)¹", *[f"{plan.methods[m].max_seq_len_that_fits:,}" for m in METHODS])
        t.add_row("needs", *[plan.methods[m].hardware_needed or "—" for m in METHODS])
    return t


FRUGAL_NOTE = (
    "¹ at micro-batch 1, each method at its own most memory-frugal settings (gradient checkpointing, and "
    "ZeRO-3 / CPU offload where the method can use them): it compares the methods, not their planned settings."
)


def memory_section(plan: Plan) -> Group:
    """The memory table and, on a GPU, the note that says what its "longest seq" row compares."""
    if plan.hardware.gpu == "cpu":
        return Group(memory_table(plan))
    return Group(memory_table(plan), Text(FRUGAL_NOTE, style="dim"))


def settings_table(plan: Plan) -> Table:
    t = Table(title="Settings each method assumed (* = chosen by ftplan)", title_justify="left")
    t.add_column("setting")
    for m in METHODS:
        t.add_column(NAMES[m])
    keys = [*SETTING_KEYS, "lora_r", "lora_alpha", "lora_target_modules"]
    for key in keys:
        row = []
        for m in METHODS:
            s = plan.methods[m].settings
            if key.startswith("lora_") and m == "full":
                row.append("—")
                continue
            value = getattr(s, key)
            text = (
                ", ".join(value)
                if isinstance(value, list)
                else f"{value:g}"
                if isinstance(value, float)
                else str(value)
            )
            row.append(text + ("*" if key in s.chosen_by_planner else ""))
        t.add_row(key, *row)
    return t


def _methods_table(plan: Plan, title: str, rows, of=lambda mp: mp) -> Table:
    """A table with one column per method: ``rows`` are (label, formatter of ``of(method plan)``)."""
    t = Table(title=title, title_justify="left")
    t.add_column("")
    for m in METHODS:
        t.add_column(NAMES[m], justify="right")
    for label, fn in rows:
        t.add_row(label, *[fn(of(plan.methods[m])) for m in METHODS])
    return t


def cost_table(plan: Plan) -> Table:
    rows = [
        ("tokens", lambda mp: f"{mp.time.tokens:,.0f}"),
        ("training FLOPs", lambda mp: f"{mp.time.flops:.2e}"),
        ("tokens/s (all GPUs)", lambda mp: f"{mp.time.tokens_per_second:,.0f}"),
        ("wall-clock", lambda mp: f"{mp.time.hours:,.1f} h"),
        ("GPU-hours", lambda mp: f"{mp.time.gpu_hours:,.1f}"),
        ("cost of one run", lambda mp: f"${mp.cost.usd:,.2f}"),
    ]
    return _methods_table(plan, "Time and cost of one run", rows)


def hidden_cost_table(plan: Plan) -> Table:
    rows = [
        ("checkpoint size (resumable)", lambda c: f"{c.checkpoint_gb:,.1f} GB"),
        ("checkpoint storage / month", lambda c: f"${c.checkpoint_storage_usd_month:,.2f} ({c.checkpoints_kept} kept)"),
        ("deployable artifact", lambda c: f"{c.artifact_gb:,.2f} GB"),
        ("serving variants: storage", lambda c: f"{c.serving_variants} → {c.serving_storage_gb:,.1f} GB"),
        ("serving variants: GPUs / month", lambda c: f"{c.serving_gpus} → ${c.serving_usd_month:,.0f}"),
        ("experiments", lambda c: f"{c.experiment_runs} runs → ${c.experiments_usd:,.0f}"),
        ("runs within budget", lambda c: "—" if c.runs_within_budget is None else f"{c.runs_within_budget:,}"),
    ]
    return _methods_table(plan, "Hidden costs", rows, of=lambda mp: mp.cost)


def recommendation_panel(plan: Plan) -> Panel:
    rec = plan.recommendation
    body = Text()
    for reason in rec.reasons:
        body.append("• " + reason + "\n")
    warnings = plan.methods[rec.method].warnings
    for w in warnings:
        body.append("! " + w + "\n", style="yellow")
    for note in plan.notes:
        body.append("· " + note + "\n", style="dim")
    return Panel(body, title=f"Recommendation: {NAMES[rec.method]}", title_align="left", border_style="green")


def plan_renderable(plan: Plan) -> Group:
    return Group(
        model_table(plan),
        memory_section(plan),
        settings_table(plan),
        cost_table(plan),
        hidden_cost_table(plan),
        recommendation_panel(plan),
    )
