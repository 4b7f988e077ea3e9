"""Render the training project of one method of a plan: file name -> text. Pure (no writes)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from ftplan.export.configs import (
    Target,
    accelerate_config_yaml,
    bnb_config,
    ds_config,
    resolved_train_on,
    schedule,
    train_config_toml,
)
from ftplan.planner import Plan
from ftplan.planner.activations import TRL_MODELED
from ftplan.planner.units import size as _gib
from ftplan.project import (
    MASTER_PORT,
    METRICS_FILE,
    PLAN_FILE,
    TRAIN_CONFIG,
    TRAIN_SCRIPT,
    project_info,
    run_environment,
    shell_exports,
)

METHOD_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base, LoRA adapters)"}


class ExportError(Exception):
    """Bad output folder, unknown method, or files edited since the last export (exit code 2)."""


def template(name: str) -> str:
    return resources.files("ftplan.export").joinpath("templates", name).read_text(encoding="utf-8")


def fill(text: str, values: dict[str, object]) -> str:
    """Replace {{name}} placeholders; an unknown name is a bug, so it raises."""

    def one(match: re.Match) -> str:
        return str(values[match.group(1)])

    return re.sub(r"\{\{(\w+)\}\}", one, text)


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h"


def launch_sh(t: Target) -> str:
    hw = t.plan.hardware
    who = "the CPU" if t.cpu else hw.gpu
    desc = f"{t.world_size} process{'es' if t.world_size > 1 else ''} on {who}"
    if hw.nodes > 1:
        desc += f" ({hw.nodes} nodes x {hw.gpus_per_node})"
    if t.uses_deepspeed:
        desc += f", DeepSpeed ZeRO-{t.s.zero_stage}" + (f" with {t.s.offload} offload" if t.s.offload != "none" else "")
    if t.uses_fsdp:
        desc += f", FSDP2 zero_stage {t.s.zero_stage}" + (" with CPU offload" if t.s.offload != "none" else "")
    if t.cpu:
        env = "\n".join(
            [
                "# A CPU plan: no GPU even if one is present; gloo collectives; the cores shared between processes.",
                *shell_exports(run_environment(on_cpu=True)),
                "threads=$(( $(nproc) / NPROC_PER_NODE )); if (( threads < 1 )); then threads=1; fi",
                'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}"',
                "",
            ]
        )
    else:
        env = "\n".join(shell_exports(run_environment(on_cpu=False))) + "\n"
    return fill(
        template("launch.sh"),
        {
            "description": desc,
            "gpus_per_node": hw.gpus_per_node,
            "nodes": hw.nodes,
            "master_port": MASTER_PORT,
            "uses_deepspeed": int(t.uses_deepspeed or t.uses_fsdp),  # both need torchrun's environment
            "environment": env,
        },
    )


def requirements_txt(t: Target) -> str:
    lines = [
        "# The training stack train.py was written for (install torch first for a specific CUDA build).",
        "torch>=2.4",
        "transformers>=5.0",
        f"trl{TRL_MODELED}  # the SFTTrainer loss the plan's memory models (fused LM head since 1.15)",
        "peft>=0.17",
        "accelerate>=1.0",
        "datasets>=3.0",
        "safetensors",
        "tensorboard",
        'tomli>=2.0; python_version < "3.11"',
    ]
    if t.uses_deepspeed:
        lines.append("deepspeed>=0.17")
    if t.method == "qlora" or "8bit" in t.s.optimizer:
        lines.append("bitsandbytes>=0.46")
    if t.s.attention == "flash_attention_2":
        lines.append('flash-attn>=2.6  # needs a CUDA toolchain; or set model.attention = "sdpa"')
    return "\n".join(lines) + "\n"


BEST_CHECKPOINT_NOTE = (
    "With an eval split (`data.eval_fraction` > 0) the result is the checkpoint with the lowest eval loss, "
    "not the last step: the Trainer loads it at the end (`load_best_model_at_end`), `output/result.json` "
    "names it, and that is what `output/` holds{merge}."
)


def what_trains(t: Target) -> str:
    """The README's word on which tokens carry the loss (data.train_on)."""
    if resolved_train_on(t) == "answers":
        return (
            'The loss covers the answers only (`data.train_on = "answers"`): the assistant turns of '
            "`messages` chats, the `output` of alpaca rows and the `completion` of prompt/completion rows, "
            "found by rendering each chat with the model's chat template. System and user turns are context, "
            'their labels are -100. Text data always trains on every token. Set `train_on = "all"` in '
            "train_config.toml's `[data]` to train on every token of the chats too."
        )
    return (
        'The loss covers every token (`data.train_on = "all"`), prompts included. For instruction data, '
        '`train_on = "answers"` in train_config.toml\'s `[data]` trains on the assistant turns / outputs / '
        "completions only."
    )


def packing_note(t: Target) -> str:
    """How packing stays correct for the attention kernel."""
    if not t.s.packing:
        return (
            "Packing is off (`data.packing = false`): each example is its own sequence, padded to the batch's longest."
        )
    return (
        "Packing (`data.packing = true`) is TRL's padding-free best-fit packing (`bfd`): examples are "
        "packed into sequences of up to `max_seq_len` tokens without padding and each keeps its own "
        "`position_ids`, which restart at 0. FlashAttention-2 uses the sequence boundaries directly; SDPA "
        "and eager get a block-diagonal mask that transformers derives from the restarting `position_ids`. "
        "That derivation only happens without a KV cache, so training runs with `use_cache=False` "
        "(train.py's SFTConfig): with a cache, packed examples would attend to each other."
    )


def readme_md(t: Target) -> str:
    plan, mp, s = t.plan, t.mp, t.s
    hw = plan.hardware
    sch = schedule(t)
    hardware = "the CPU" if t.cpu else f"{t.world_size}× {hw.gpu}" + (f" ({hw.nodes} nodes)" if hw.nodes > 1 else "")
    optional = ""
    if t.uses_deepspeed:
        cpu_adam = (
            "; the offloaded optimizer runs as DeepSpeed's CPUAdam, AdamW with train_config's learning rate, "
            'weight decay and schedule (another `training.optimizer` needs its `"optimizer"` block removed)'
            if "optimizer" in (ds_config(t) or {})
            else ""
        )
        optional += (f"| `ds_config.json` | DeepSpeed ZeRO-{s.zero_stage} (offload: {s.offload}); "
                     f"Trainer-synced keys are `auto`{cpu_adam} |\n")  # fmt: skip
    if t.uses_fsdp:
        optional += (f"| `[fsdp]` in `train_config.toml` | PyTorch FSDP2, zero_stage {s.zero_stage} (offload: {s.offload}); "
                     "`accelerate_config.yaml` holds the same for `accelerate launch` |\n")  # fmt: skip
    if t.method == "qlora":
        optional += "| `bnb_config.json` | the 4-bit NF4 quantization (`BitsAndBytesConfig.from_dict`) |\n"
    if t.method == "full":
        result = (
            "`output/` holds the fine-tuned model (safetensors"
            + (", gathered from the ZeRO-3 shards" if s.zero_stage == 3 else "")
            + ') and the tokenizer: load it with `AutoModelForCausalLM.from_pretrained("output")`.'
        )
        merge_row = ""
    else:
        result = (
            "`output/` holds the adapter only (a few MB) and the tokenizer. Serve it on the base model with "
            "peft, or merge it into a standalone model:\n\n```bash\npython merge_adapter.py  "
            "# writes output-merged/ (model + tokenizer)\n```"
        )
        merge_row = "| `merge_adapter.py` | merge the adapter into the base model (`merge_and_unload`) |\n"
    result += "\n\n" + BEST_CHECKPOINT_NOTE.format(merge=" and what `merge_adapter.py` merges" if s.is_peft else "")
    multinode = ""
    if hw.nodes > 1:
        multinode = (
            f"\nOn each of the {hw.nodes} nodes (or `srun --nodes {hw.nodes} --ntasks-per-node 1 bash launch.sh` under Slurm):\n\n"
            f"```bash\nNNODES={hw.nodes} NODE_RANK=<0..{hw.nodes - 1}> MASTER_ADDR=<first node> MASTER_PORT={MASTER_PORT} bash launch.sh\n```\n"
        )
    cost = f", about **${mp.cost.usd:,.2f}** at ${hw.usd_per_gpu_hour:g}/GPU-hour" if not t.cpu else ""
    warnings = "".join(f"- Warning: {w}\n" for w in mp.warnings)
    settings = (
        f"{s.precision}, {s.optimizer}, micro-batch {s.micro_batch_size} × {s.gradient_accumulation_steps} accumulation"
        f" × {t.world_size} process{'es' if t.world_size > 1 else ''}, sequence {s.max_seq_len}, LR {s.learning_rate:g}"
        + (", activation checkpointing" if s.gradient_checkpointing else "")
        + (f", ZeRO-{s.zero_stage}" if s.zero_stage else "")
        + (f", LoRA r={s.lora_r} alpha={s.lora_alpha:g}" if s.is_peft else "")
    )
    gated = "meta-llama" in plan.model.name.lower() or "gemma" in plan.model.name.lower()
    m = mp.memory
    return fill(
        template("README.md"),
        {
            "title": f"{METHOD_NAMES[t.method].split(' (')[0][:1].upper()}{METHOD_NAMES[t.method].split(' (')[0][1:]}"
            f" of {Path(plan.model.name).name}",
            "model": plan.model.name,
            "method_name": METHOD_NAMES[t.method],
            "hardware": hardware,
            "version": plan.ftplan_version,
            "peft_note": "" if t.method == "full" else ", peft" + (", bitsandbytes" if t.method == "qlora" else ""),
            "optional_files": optional,
            "merge_row": merge_row,
            "token_line": "export HF_TOKEN=hf_...                  # gated models and datasets only\n" if gated else "",
            "launch_note": "torchrun / multi-node as planned" if t.world_size > 1 else "one process",
            "multinode": multinode,
            "metrics_file": METRICS_FILE,
            "report_to": "TensorBoard (`tensorboard --logdir output/runs`)",
            "save_steps": sch["save_steps"],
            "keep_best": sch["keep_best"],
            "keep_last": sch["keep_last"],
            "result": result,
            "what_trains": what_trains(t),
            "packing_note": packing_note(t),
            "device_word": "process (host memory)" if t.cpu else "GPU",
            "m_weights": _gib(m.weights),
            "m_gradients": _gib(m.gradients),
            "m_optimizer": _gib(m.optimizer),
            "m_activations": _gib(m.activations),
            "m_overhead": _gib(m.overhead),
            "m_total": _gib(m.total),
            "cpu_memory": _gib(mp.cpu_memory),
            "trainable": _count(mp.trainable_params),
            "params": _count(plan.model.params),
            "tokens": _count(mp.time.tokens),
            "steps": f"{mp.time.steps:,}",
            "hours": _hours(mp.time.hours),
            "tokens_per_second": _count(mp.time.tokens_per_second),
            "cost_line": cost,
            "settings_line": settings,
            "warnings": warnings,
        },
    )


def pick_method(plan: Plan, method: str | None) -> str:
    method = method or plan.recommendation.method
    if method not in plan.methods:
        raise ExportError(f"unknown method {method!r}: expected one of {', '.join(plan.methods)}")
    return method


def render_project(
    plan: Plan, answers_text: str, method: str | None = None, out_dir: Path | None = None
) -> dict[str, str]:
    """Every file of the exported project as text, in a stable order.

    `method` defaults to the plan's recommendation. `out_dir`, when given, makes local paths
    (model folder, data file) relative to it so that the project can be committed and moved.
    """
    t = Target(plan, pick_method(plan, method), Path(out_dir) if out_dir is not None else None)
    files = {
        TRAIN_SCRIPT: template("train.py"),
        TRAIN_CONFIG: train_config_toml(t),
    }
    ds = ds_config(t)
    if ds is not None:
        files["ds_config.json"] = json.dumps(ds, indent=2) + "\n"
    bnb = bnb_config(t)
    if bnb is not None:
        files["bnb_config.json"] = json.dumps(bnb, indent=2) + "\n"
    files["accelerate_config.yaml"] = accelerate_config_yaml(t)
    files["launch.sh"] = launch_sh(t)
    if t.s.is_peft:
        files["merge_adapter.py"] = template("merge_adapter.py")
    files["requirements.txt"] = requirements_txt(t)
    files["README.md"] = readme_md(t)
    files["answers.toml"] = answers_text
    files[PLAN_FILE] = plan.to_json() + "\n"
    if plan.hardware.nodes > 1:
        files["slurm.sbatch"] = slurm_sbatch(plan, files, t.out_dir)
    return files


def slurm_sbatch(plan: Plan, files: dict[str, str], out_dir: Path | None) -> str:
    """slurm.sbatch for a multi-node plan, from the project the files make (read as ``ftplan
    launch`` reads a project, so `sbatch slurm.sbatch` and `ftplan launch` agree on the command)."""
    import tomllib

    from ftplan.export.slurm import render_sbatch

    return render_sbatch(
        project_info(out_dir or Path("."), plan, tomllib.loads(files[TRAIN_CONFIG]), check_files=False)
    )
