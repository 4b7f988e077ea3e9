"""The exported project's configuration files, built from one method's plan. Pure: text in, text out.

Each builder takes the plan (and the method) and returns a file's text or a dict; nothing here
imports torch, transformers or DeepSpeed, so rendering a project for the TUI preview is instant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import tomli_w
import yaml

from ftplan.planner import MethodPlan, Plan
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import eval_fraction
from ftplan.project import MASTER_PORT, METRICS_FILE, OUTPUT_DIR

DEFAULT_SEED = 42


@dataclass(frozen=True)
class Target:
    """What the files are written for: one method of one plan."""

    plan: Plan
    method: str
    out_dir: Path | None = None

    @property
    def mp(self) -> MethodPlan:
        return self.plan.methods[self.method]

    @property
    def s(self) -> Settings:
        return self.mp.settings

    @property
    def cpu(self) -> bool:
        return self.plan.hardware.gpu == "cpu"

    @property
    def world_size(self) -> int:
        return self.plan.hardware.world_size

    @property
    def uses_deepspeed(self) -> bool:
        return self.s.uses_deepspeed

    @property
    def uses_fsdp(self) -> bool:
        return self.s.uses_fsdp


# ---------------------------------------------------------------------------- paths


def portable_path(value: str, out_dir: Path | None) -> str:
    """A local file or folder as the project should name it. An absolute path (or ``~/...``) stays
    absolute, as the user wrote it, so a copied project still finds it; a relative one (relative to
    where ftplan ran) is re-expressed relative to the project folder, so it stays relative; hub ids
    stay as they are."""
    if not value:
        return value
    p = Path(value).expanduser()
    if not p.exists():
        return value
    if p.is_absolute():
        return str(p)
    p = p.resolve()
    if out_dir is None:
        return str(p)
    return os.path.relpath(p, Path(out_dir).expanduser().resolve())


# ---------------------------------------------------------------------------- train_config.toml


def _toml_value(value) -> str:
    """One value as TOML writes it (tomli-w's own formatting; the key is ours, with its comment)."""
    if isinstance(value, tuple):
        value = list(value)
    return tomli_w.dumps({"v": value}).partition(" = ")[2].rstrip("\n")


def _section(name: str, comment: str, rows: list[tuple[str, object, str]]) -> list[str]:
    lines = [f"# {comment}", f"[{name}]"]
    width = max(len(f"{k} = {_toml_value(v)}") for k, v, _ in rows)
    for key, value, note in rows:
        line = f"{key} = {_toml_value(value)}"
        lines.append(f"{line:<{width}}  # {note}" if note else line)
    return lines + [""]


def schedule(t: Target) -> dict:
    """Checkpoint, evaluation and logging cadence from the planned number of optimizer steps."""
    steps = max(1, t.mp.time.steps)
    save_steps = max(1, min(500, math.ceil(steps / 10)))
    examples = max(1, int(t.plan.data.get("examples") or 1))
    return {
        "steps": steps,
        "save_steps": save_steps,
        "logging_steps": max(1, min(10, steps // 100)),
        "eval_fraction": eval_fraction(examples),  # the planner's steps count the rest
        "keep_best": max(0, t.mp.cost.checkpoints_kept - 1),
        "keep_last": 1,
        "lora_spectrum_steps": save_steps if t.s.is_peft else 0,
    }


def resolved_train_on(t: Target) -> str:
    """data.train_on as the run uses it: the user's choice, else all tokens for text data and
    domain knowledge, the answers for instruction data (train.py trains text on all tokens anyway)."""
    data = t.plan.answers["data"]
    if data.get("train_on"):
        return data["train_on"]
    if data.get("format") == "text" or t.plan.answers["objective"]["kind"] == "domain_knowledge":
        return "all"
    return "answers"


def model_auto_class(name: str) -> str:
    """The Auto class train.py loads: image-text-to-text for a vision model (its card says so)."""
    from ftplan.planner.models import ModelNotFound, resolve_model

    try:
        card = resolve_model(name).card
    except ModelNotFound:
        return "AutoModelForCausalLM"
    return card.auto_class if card is not None else "AutoModelForCausalLM"


def router_aux_loss_rows(name: str) -> list[tuple]:
    """[training] router_aux_loss_coef for a MoE model whose config.json sets it (the weight of the
    load-balancing loss TRL's SFTTrainer adds); none for a dense model or a config without it
    (train.py then uses the model config's own, and says which)."""
    from ftplan.planner.models import ModelNotFound, resolve_model

    try:
        resolved = resolve_model(name)
    except ModelNotFound:
        return []
    coef = resolved.config.get("router_aux_loss_coef")
    if not resolved.arch.experts or not isinstance(coef, int | float):
        return []
    return [("router_aux_loss_coef", float(coef), "MoE load-balancing loss weight (config.json's); 0 = off")]


def train_config_toml(t: Target) -> str:
    s, plan, mp = t.s, t.plan, t.mp
    a = plan.answers
    sch = schedule(t)
    seconds_per_token = 1 / mp.time.tokens_per_second if mp.time.tokens_per_second else 0.0
    head = [
        "# train_config.toml: every hyperparameter train.py uses. Written by ftplan",
        f"# {plan.ftplan_version} for the {t.method} plan of {plan.model.name}; edit freely (a re-export keeps",
        "# your edits unless you pass --force). Relative paths are relative to this file's folder.",
        "",
    ]
    body = []
    body += _section(
        "model",
        "The base model.",
        [
            ("name_or_path", portable_path(plan.model.name, t.out_dir), "hub id or local folder"),
            ("trust_remote_code", bool(a["model"]["trust_remote_code"]), "run the model repo's own code"),
            ("attention", s.attention, "sdpa | flash_attention_2 | eager"),
            ("auto_class", model_auto_class(plan.model.name), "AutoModelForCausalLM | AutoModelForImageTextToText"),
            ("new_tokens", s.new_tokens, "tokens added to the vocabulary as <extra_0>, <extra_1>, ..."),
        ],
    )
    body += _section("method", "What trains.", [("kind", t.method, "full | lora | qlora")])
    targets = s.lora_target_modules if isinstance(s.lora_target_modules, str) else list(s.lora_target_modules)
    body += _section(
        "lora",
        "Adapters (used by lora and qlora; ignored by full).",
        [
            ("r", s.lora_r, "rank of each adapter"),
            ("alpha", s.lora_alpha, "the update is scaled by alpha / r"),
            ("dropout", s.lora_dropout, "dropout on the adapter input"),
            ("target_modules", targets, '"all-linear" or module names such as ["q_proj", "v_proj"]'),
            (
                "train_new_token_rows",
                s.train_new_token_rows,
                "new tokens: train only their embedding rows (else the whole embedding matrices)",
            ),
        ],
    )
    body += _section(
        "data",
        "The training data.",
        [
            ("path", portable_path(a["data"]["path"], t.out_dir), ".jsonl/.json/.parquet/.csv file or hub dataset id"),
            ("format", a["data"]["format"], "auto | messages | alpaca | text"),
            ("max_seq_len", s.max_seq_len, "longer examples are truncated"),
            ("packing", s.packing, "pack several examples into each sequence"),
            ("train_on", resolved_train_on(t), "answers (assistant turns / outputs / completions) | all (every token)"),
            ("eval_fraction", sch["eval_fraction"], "share of the data held out for evaluation (0 = none)"),
            ("general_path", "", "general text to mix in against forgetting (file or hub id)"),
            ("general_ratio", s.general_data_ratio, "share of the training mix taken from general_path"),
        ],
    )
    body += _section(
        "training",
        "The optimisation (names follow transformers TrainingArguments).",
        [
            ("precision", s.precision, "bf16 (pure bf16) | bf16-mixed | fp16-mixed | fp32"),
            ("optimizer", s.optimizer, "TrainingArguments optim name"),
            ("micro_batch_size", s.micro_batch_size, "sequences per device per forward pass"),
            ("gradient_accumulation_steps", s.gradient_accumulation_steps, "micro-batches per optimizer step"),
            ("gradient_checkpointing", s.gradient_checkpointing, "recompute activations in the backward pass"),
            ("epochs", s.epochs, "passes over the data"),
            ("learning_rate", s.learning_rate, "peak learning rate"),
            ("lr_scheduler", s.lr_scheduler, "TrainingArguments lr_scheduler_type"),
            ("warmup_ratio", s.warmup_ratio, "share of the steps spent warming up"),
            ("weight_decay", s.weight_decay, "AdamW weight decay"),
            ("max_grad_norm", s.max_grad_norm, "gradient clipping"),
            ("seed", DEFAULT_SEED, "data order and initialisation"),
            ("loss", s.loss, "chunked (TRL's fused LM head, no full logits) | full_logits (the model's own loss)"),
            (
                "compile",
                s.compile,
                "torch.compile the model (TrainingArguments torch_compile); the first steps compile",
            ),
            (
                "compile_backend",
                "inductor",
                "torch.compile backend when compile is on (aot_eager: no generated kernels)",
            ),
            ("deepspeed", "ds_config.json" if t.uses_deepspeed else "", 'DeepSpeed config file, "" for none'),
            ("sharding", s.sharding, "deepspeed (ds_config.json) | fsdp2 (the [fsdp] section) at zero_stage > 0"),
            ("zero_stage", s.zero_stage, "for reference: the stage ds_config.json sets"),
            ("offload", s.offload, "for reference: the offload ds_config.json sets"),
            ("use_cpu", t.cpu, "train on CPU processes (gloo backend), no GPU"),
            *router_aux_loss_rows(plan.model.name),
        ],
    )
    if t.uses_fsdp:
        body += _section("fsdp", "PyTorch FSDP2 (transformers' fsdp_config; accelerate_config.yaml says the same).",
                         fsdp_config_rows(t))  # fmt: skip
    body += _section(
        "checkpoints",
        "Saving: the best keep_best by eval loss plus the last keep_last are kept, others deleted.",
        [
            ("output_dir", OUTPUT_DIR, "checkpoints, the final model or adapter, metrics"),
            ("save_steps", sch["save_steps"], "save (and evaluate) every N optimizer steps"),
            ("keep_best", sch["keep_best"], "checkpoints kept for the lowest eval loss"),
            ("keep_last", sch["keep_last"], "most recent checkpoints kept (for --resume)"),
        ],
    )
    body += _section(
        "logging",
        "Progress.",
        [
            ("logging_steps", sch["logging_steps"], "log every N optimizer steps"),
            ("metrics_file", METRICS_FILE, "JSON lines, in output_dir unless absolute"),
            ("report_to", "tensorboard", "none | tensorboard | wandb (reads WANDB_* from the environment)"),
            ("lora_spectrum_steps", sch["lora_spectrum_steps"], "log adapters' effective rank every N steps (0 = off)"),
        ],
    )
    m = mp.memory
    body += _section(
        "plan",
        "What ftplan predicted (read by `ftplan probe`; train.py ignores it). Bytes per device.",
        [
            ("device", plan.hardware.gpu, '"cpu" or the GPU the plan is for'),
            ("world_size", t.world_size, "processes in the run"),
            ("weights", m.weights, ""),
            ("gradients", m.gradients, ""),
            ("optimizer", m.optimizer, ""),
            ("activations", m.activations, ""),
            ("overhead", m.overhead, "CUDA context and workspaces, outside the allocator"),
            ("total", m.total, ""),
            ("tokens_per_second", float(mp.time.tokens_per_second), "whole run"),
            ("seconds_per_token", seconds_per_token, ""),
            ("steps", sch["steps"], "optimizer steps for the whole run"),
            ("hours", float(mp.time.hours), "wall clock"),
            ("usd", float(mp.cost.usd), "one run"),
        ],
    )
    return "\n".join(head + body).rstrip() + "\n"


# ---------------------------------------------------------------------------- DeepSpeed


def ds_config(t: Target) -> dict | None:
    """The DeepSpeed config of a ZeRO plan (None without ZeRO). Keys the Trainer syncs are "auto"."""
    s = t.s
    if not t.uses_deepspeed:
        return None
    zero: dict = {"stage": s.zero_stage}
    if s.offload in ("optimizer", "optimizer+params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not t.cpu}
    if s.offload == "optimizer+params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": not t.cpu}
    zero.update(overlap_comm=not t.cpu, contiguous_gradients=True, reduce_bucket_size="auto")
    if s.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,
        )
    # Precision, batch sizes, accumulation and clipping are "auto": the Trainer fills them in from
    # train_config.toml, so editing training.precision there is enough. Under DeepSpeed's bf16 the
    # weights and gradients are 16-bit with fp32 master weights and Adam moments (2 + 2 + 12 bytes
    # per parameter, the ZeRO paper's split): what the planner counts for bf16 and bf16-mixed.
    config: dict = {
        "bf16": {"enabled": "auto"},
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 100,
        "wall_clock_breakdown": False,
    }
    # No "scheduler": the Trainer builds the one train_config.toml names (training.lr_scheduler).
    # The optimizer is train_config's too: without offload the Trainer builds training.optimizer
    # and hands it to DeepSpeed. With the optimizer offloaded, an fp32 AdamW runs as DeepSpeed's
    # CPUAdam (the same update, DeepSpeed's host kernel; the step time the plan counts), its
    # hyperparameters "auto" (the Trainer fills in learning_rate, betas, eps, weight_decay); any
    # other optimizer runs as torch's on the host, which DeepSpeed allows only when told so.
    if s.offload != "none":
        if s.optimizer in DS_CPU_ADAM_OPTIMIZERS:
            config["optimizer"] = {
                "type": "AdamW",
                "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
            }
        else:
            config["zero_force_ds_cpu_optimizer"] = False
    return config


# training.optimizer values DeepSpeed's CPUAdam runs under optimizer offload (fp32 AdamW states).
DS_CPU_ADAM_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")


# ---------------------------------------------------------------------------- bitsandbytes


def bnb_config(t: Target) -> dict | None:
    """QLoRA's quantization: NF4 with double quantization, 16-bit compute (fp32 on the CPU)."""
    if t.method != "qlora":
        return None
    compute = "float32" if t.cpu else ("float16" if t.s.precision == "fp16-mixed" else "bfloat16")
    config = {
        "load_in_4bit": True,
        "load_in_8bit": False,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": compute,
        "llm_int8_skip_modules": None,
    }
    if t.s.zero_stage == 3 or t.uses_fsdp:
        config["bnb_4bit_quant_storage"] = "bfloat16"  # ZeRO-3 and FSDP2 shard only floating-point storage
    return config


# ---------------------------------------------------------------------------- accelerate


def accelerate_config_yaml(t: Target) -> str:
    """For `accelerate launch --config_file accelerate_config.yaml train.py` (launch.sh uses torchrun)."""
    s = t.s
    if t.uses_deepspeed:
        distributed = "DEEPSPEED"
    elif t.uses_fsdp:
        distributed = "FSDP"
    elif t.world_size > 1:
        distributed = "MULTI_CPU" if t.cpu else "MULTI_GPU"
    else:
        distributed = "NO"
    mixed = {"bf16-mixed": "bf16", "bf16": "bf16" if t.uses_deepspeed else "no", "fp16-mixed": "fp16"}.get(
        s.precision, "no"
    )
    rows = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": distributed,
        "downcast_bf16": "no",
        "machine_rank": 0,
        "main_training_function": "main",
        # With DeepSpeed the precision lives in ds_config.json (accelerate refuses it in both places).
        "mixed_precision": None if t.uses_deepspeed else mixed,
        "num_machines": t.plan.hardware.nodes,
        "num_processes": t.world_size,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": t.cpu,
    }
    if t.plan.hardware.nodes > 1:
        rows["main_process_ip"] = "127.0.0.1"
        rows["main_process_port"] = MASTER_PORT
    if not t.cpu and distributed != "NO":
        rows["gpu_ids"] = "all"
    config: dict = {k: v for k, v in rows.items() if v is not None}
    if t.uses_deepspeed:
        config["deepspeed_config"] = {"deepspeed_config_file": "ds_config.json", "zero3_init_flag": s.zero_stage == 3}
        if t.plan.hardware.nodes > 1:
            config["deepspeed_config"]["deepspeed_multinode_launcher"] = "standard"
    if t.uses_fsdp:
        config["fsdp_config"] = fsdp_accelerate_config(t)
    head = (
        "# accelerate launch --config_file accelerate_config.yaml train.py\n"
        "# Multi-node: set machine_rank and main_process_ip (the first node's address) on each node.\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------------- FSDP2


def decoder_layer_class(model_type: str) -> str:
    """The transformers class of one decoder layer (FSDP2's wrap unit), from the config's model_type:
    llama -> LlamaDecoderLayer, qwen3_moe -> Qwen3MoeDecoderLayer. train.py checks it against the
    model's own ``_no_split_modules`` and falls back to those when they differ."""
    return "".join(part[:1].upper() + part[1:] for part in model_type.split("_")) + "DecoderLayer"


def fsdp_config_rows(t: Target) -> list[tuple[str, object, str]]:
    """The [fsdp] section: transformers' ``fsdp_config`` keys, which accelerate's FSDP plugin receives."""
    s = t.s
    return [
        ("version", 2, "FSDP2 (torch.distributed.fsdp.fully_shard)"),
        ("reshard_after_forward", s.zero_stage == 3, "true = zero_stage 3 (full shard); false = 2 (keep gathered)"),
        ("transformer_layer_cls_to_wrap", [decoder_layer_class(t.plan.model.model_type)], "one FSDP unit per layer"),
        ("cpu_ram_efficient_loading", True, "rank 0 reads the checkpoint, the others start empty"),
        ("cpu_offload", s.offload != "none", "CPUOffloadPolicy: parameters, gradients and optimizer on the host"),
        ("state_dict_type", "FULL_STATE_DICT", "save_model writes one model transformers loads"),
        ("sync_each_batch", True, "reduce-scatter every micro-batch: accumulation holds sharded gradients"),
    ]


def fsdp_accelerate_config(t: Target) -> dict:
    """accelerate's own FSDP keys (accelerate/commands/config/cluster.py) for the same run."""
    rows = dict((key, value) for key, value, _ in fsdp_config_rows(t))
    keys = {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": ",".join(rows["transformer_layer_cls_to_wrap"]),
        "fsdp_reshard_after_forward": rows["reshard_after_forward"],
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": rows["cpu_offload"],
        "fsdp_state_dict_type": rows["state_dict_type"],
        "fsdp_activation_checkpointing": False,  # train.py checkpoints through the Trainer's flag
    }
    return keys
