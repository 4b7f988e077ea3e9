"""Fine-tune a causal language model: full fine-tuning, LoRA or QLoRA, as ftplan planned it.

One readable recipe, configured entirely by ``train_config.toml`` (every key is commented there).
Change hyperparameters in the config; change the recipe here. The stages, in order:

    load_config -> build_tokenizer -> build_model -> build_datasets -> build_trainer -> train

Run it with ``bash launch.sh`` (one process, torchrun or multi-node), or directly:

    python train.py [--config train_config.toml] [--max-steps N] [--resume]

Importing this file does no work: ``ftplan probe`` imports the stages and runs a few steps.
Stack: transformers + TRL ``SFTTrainer``, peft for LoRA/QLoRA, bitsandbytes for 4-bit weights,
DeepSpeed ZeRO when ``training.deepspeed`` names a config. The Hugging Face token, when a gated
model or dataset needs one, comes from the ``HF_TOKEN`` environment variable only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch
import transformers
from datasets import concatenate_datasets, load_dataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoTokenizer,
    BitsAndBytesConfig,
    TrainerCallback,
    set_seed,
)
from trl import SFTConfig, SFTTrainer

# Used when the tokenizer has no chat template of its own (base models).
SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
DATA_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}

# Keeps the DeepSpeed config object alive between build_model and build_trainer: with ZeRO-3,
# from_pretrained partitions the weights while loading only while such an object exists.
_DEEPSPEED_KEEPALIVE: list = []
SMOKE_DIR = "smoke"  # a --smoke run's checkpoints and result, inside output_dir
DEFAULT_SMOKE_STEPS = 5


# ---------------------------------------------------------------------------- config


def load_config(path: str | os.PathLike = "train_config.toml") -> dict:
    """Read train_config.toml; relative paths in it are relative to the file's folder."""
    path = Path(path)
    with path.open("rb") as fh:
        cfg = tomllib.load(fh)
    cfg["config_dir"] = str(path.resolve().parent)
    return cfg


def resolve(cfg: dict, value: str) -> str:
    """A path from the config made absolute when it names a file next to the config; else unchanged
    (a hub id, or an absolute path)."""
    if not value or os.path.isabs(value):
        return value
    candidate = Path(cfg["config_dir"]) / value
    return str(candidate) if candidate.exists() else value


def on_cpu(cfg: dict) -> bool:
    return bool(cfg["training"].get("use_cpu", False))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def setup_distributed(cfg: dict) -> None:
    """Before anything DeepSpeed: a single process without a launcher gets the rendezvous a launcher
    would set; CPU plans run DeepSpeed on its CPU accelerator with gloo collectives (the Trainer's
    CPU setup would not start DeepSpeed's own)."""
    if not cfg["training"].get("deepspeed"):
        return
    if "RANK" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        defaults = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
    if on_cpu(cfg):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        if not deepspeed.comm.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo")


def deepspeed_config(cfg: dict) -> dict | None:
    name = cfg["training"].get("deepspeed", "")
    if not name:
        return None
    with open(resolve(cfg, name), encoding="utf-8") as fh:
        return json.load(fh)


DS_CPU_ADAM_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")


def check_ds_optimizer(cfg: dict) -> None:
    """ds_config.json names an optimizer (AdamW as DeepSpeed's CPUAdam, under optimizer offload):
    the Trainer then runs it, not training.optimizer; refuse an edit that would go unheeded."""
    ds = deepspeed_config(cfg)
    optimizer = cfg["training"]["optimizer"]
    if ds and "optimizer" in ds and optimizer not in DS_CPU_ADAM_OPTIMIZERS:
        raise SystemExit(
            f"training.optimizer = {optimizer!r}, but {cfg['training']['deepspeed']} runs its own "
            f"{ds['optimizer'].get('type')} (DeepSpeed's CPUAdam under optimizer offload): set training.optimizer "
            f'to one of {", ".join(DS_CPU_ADAM_OPTIMIZERS)}, or remove the "optimizer" block and set '
            '"zero_force_ds_cpu_optimizer": false there to run torch\'s on the host (slower than planned)'
        )


# ---------------------------------------------------------------------------- tokenizer


def new_token_names(cfg: dict) -> list[str]:
    return [f"<extra_{i}>" for i in range(int(cfg["model"].get("new_tokens", 0)))]


def build_tokenizer(cfg: dict):
    """The base model's tokenizer, with a pad token, a chat template and the new tokens added."""
    m = cfg["model"]
    tokenizer = AutoTokenizer.from_pretrained(
        resolve(cfg, m["name_or_path"]), trust_remote_code=m["trust_remote_code"], token=hf_token()
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
    names = new_token_names(cfg)
    if names:
        added = tokenizer.add_tokens(names)
        print(f"[train] added {added} new tokens ({names[0]} .. {names[-1]})")
    return tokenizer


# ---------------------------------------------------------------------------- model


def load_dtype(cfg: dict) -> torch.dtype:
    """bf16 = weights in bf16 (pure bf16 training); the *-mixed precisions keep fp32 weights and
    compute in 16 bits under autocast; fp32 is fp32 throughout."""
    return torch.bfloat16 if cfg["training"]["precision"] == "bf16" else torch.float32


def build_model(cfg: dict, tokenizer):
    """Load the base model for the method; for LoRA/QLoRA return it wrapped with the adapters."""
    kind = cfg["method"]["kind"]
    m, t = cfg["model"], cfg["training"]
    kwargs = dict(
        dtype=load_dtype(cfg),
        attn_implementation=m["attention"],
        trust_remote_code=m["trust_remote_code"],
        token=hf_token(),
    )
    if kind == "qlora":
        with open(resolve(cfg, "bnb_config.json"), encoding="utf-8") as fh:
            bnb = BitsAndBytesConfig.from_dict(json.load(fh))
        kwargs["quantization_config"] = bnb
        kwargs["dtype"] = bnb.bnb_4bit_compute_dtype
        if not on_cpu(cfg) and deepspeed_config(cfg) is None and not uses_fsdp(cfg):
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    ds = deepspeed_config(cfg)
    if ds and ds.get("zero_optimization", {}).get("stage") == 3:
        # Creating the training arguments first makes from_pretrained load straight into shards
        # (and, for QLoRA, lets the 4-bit weights stored as bfloat16 be sharded).
        _DEEPSPEED_KEEPALIVE.append(training_arguments(cfg, has_eval=False))
    # A vision model loads whole (AutoModelForImageTextToText) and trains its language model on the text:
    # the vision tower and projector stay frozen (no adapters on them, no gradients in full training).
    auto = getattr(transformers, m.get("auto_class", "AutoModelForCausalLM"))
    model = auto.from_pretrained(resolve(cfg, m["name_or_path"]), **kwargs)
    freeze(model, vision_modules(cfg, model))

    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if t["gradient_checkpointing"]:
        model.config.use_cache = False

    if kind == "full":
        return model
    if kind == "qlora" and uses_fsdp(cfg):
        # FSDP2 shards one floating dtype (the bf16 quant storage): no fp32 upcasts (peft's FSDP QLoRA recipe).
        if t["gradient_checkpointing"]:
            model.enable_input_require_grads()
    elif kind == "qlora":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=t["gradient_checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif t["gradient_checkpointing"]:
        model.enable_input_require_grads()
    if kind == "qlora":
        quantized = sum(type(module).__name__ == "Linear4bit" for module in model.modules())
        print(f"[train] {quantized} linear layers in 4-bit {kwargs['quantization_config'].bnb_4bit_quant_type}")
    model = get_peft_model(model, lora_config(cfg, model, tokenizer))
    head = model.get_output_embeddings()
    if type(head).__name__ == "TrainableTokensWrapper" and "bias" not in dir(head):
        # TRL computes the loss from lm_head.weight and lm_head.bias directly (a fused LM head); peft's
        # trainable-token wrapper provides the merged weight but no bias attribute.
        head.register_parameter("bias", None)
    model.print_trainable_parameters()
    return model


def vision_modules(cfg: dict, model) -> list[str]:
    """The modules of a vision model outside its language model (vision tower, projector): the
    biggest subtrees holding neither the decoder (``get_decoder()``) nor the embeddings or the head.
    None for a causal LM."""
    if cfg["model"].get("auto_class") != "AutoModelForImageTextToText":
        return []
    keep = [model.get_decoder(), model.get_input_embeddings(), model.get_output_embeddings()]
    keep_ids = {id(m) for m in keep if m is not None}
    found = []

    def walk(prefix: str, module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if id(child) in keep_ids:
                continue
            if any(id(m) in keep_ids for m in child.modules()):
                walk(full, child)
            elif any(True for _ in child.parameters()):
                found.append(full)

    walk("", model)
    return found


def freeze(model, names: list[str]) -> None:
    """Freeze these modules and say so: what trains is the language model."""
    if not names:
        return
    sizes = []
    for name in names:
        params = list(model.get_submodule(name).parameters())
        for p in params:
            p.requires_grad_(False)
        sizes.append(f"{name} ({sum(full_numel(p) for p in params):,} parameters)")
    if is_main_process():
        print(f"[train] vision model: the language model trains on text; frozen: {', '.join(sizes)}")


def full_numel(p) -> int:
    """A parameter's size before sharding: DeepSpeed ZeRO-3 leaves an empty placeholder on each rank
    and keeps the size in ds_numel."""
    return getattr(p, "ds_numel", None) or p.numel()


def module_name(model, module) -> str:
    return next(name for name, mod in model.named_modules() if mod is module).rsplit(".", 1)[-1]


def lora_config(cfg: dict, model, tokenizer) -> LoraConfig:
    """The adapters: rank, alpha, dropout, targets; new tokens train their own rows, or the whole
    embedding matrices when lora.train_new_token_rows is false."""
    lora = cfg["lora"]
    extra: dict = {}
    names = new_token_names(cfg)
    if names:
        ids = tokenizer.convert_tokens_to_ids(names)
        embed = module_name(model, model.get_input_embeddings())
        head = model.get_output_embeddings()
        if lora["train_new_token_rows"]:
            extra["trainable_token_indices"] = {embed: ids}
            if head is not None and not model.config.get_text_config().tie_word_embeddings:
                extra["trainable_token_indices"][module_name(model, head)] = ids
        else:
            extra["modules_to_save"] = [embed] + ([module_name(model, head)] if head is not None else [])
    frozen = vision_modules(cfg, model)
    if frozen:  # no adapters on the vision tower or the projector, whatever the targets name
        extra["exclude_modules"] = "^(" + "|".join(re.escape(name) for name in frozen) + r")(\..*)?$"
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )


# ---------------------------------------------------------------------------- data


def load_any(cfg: dict, path_or_id: str):
    """A local .jsonl/.json/.parquet/.csv file, or a dataset id on the Hugging Face hub."""
    local = resolve(cfg, path_or_id)
    suffix = Path(local).suffix.lower()
    if os.path.isfile(local):
        if suffix not in DATA_BUILDERS:
            raise ValueError(f"{local}: expected one of {', '.join(DATA_BUILDERS)}")
        return load_dataset(DATA_BUILDERS[suffix], data_files=local, split="train")
    return load_dataset(path_or_id, split="train", token=hf_token())


def detect_format(columns: list[str]) -> str:
    cols = set(columns)
    if "messages" in cols or "conversations" in cols:
        return "messages"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "text" in cols:
        return "text"
    raise ValueError(
        f"cannot tell the data format from the columns {sorted(cols)}: expected messages, "
        "instruction/output (alpaca), prompt/completion or text; set data.format"
    )


def as_messages(example: dict, fmt: str) -> list[dict]:
    if fmt == "messages":
        turns = example.get("messages") or example.get("conversations")
        return [
            {
                "role": ROLES.get(t.get("role", t.get("from")), t.get("role", t.get("from"))),
                "content": t.get("content", t.get("value")),
            }
            for t in turns
        ]
    if fmt == "alpaca":
        prompt = example["instruction"] + (f"\n\n{example['input']}" if example.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": example["output"]}]
    return [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["completion"]}]


INSTRUCTION_FORMATS = ("messages", "alpaca", "prompt_completion")


def resolve_format(dataset, fmt: str) -> str:
    return detect_format(dataset.column_names) if fmt == "auto" else fmt


def resolve_train_on(cfg: dict, fmt: str) -> str:
    """data.train_on: "answers" (the loss on assistant turns / outputs / completions only) or "all"
    tokens. Unset, instruction data trains on its answers and plain text on everything."""
    value = cfg["data"].get("train_on") or ("answers" if fmt in INSTRUCTION_FORMATS else "all")
    if value not in ("answers", "all"):
        raise SystemExit(f'data.train_on = "{value}" in train_config.toml: expected "answers" or "all"')
    if value == "answers" and fmt not in INSTRUCTION_FORMATS:
        print('[train] data.train_on = "answers" but text data has no answers: training on all tokens')
        return "all"
    return value


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def answer_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]] | None:
    """Character spans of each assistant turn in `text` (the whole chat rendered), found by rendering
    the chat up to the turn's generation prompt and up to the turn's end: the turn is what lies
    between. None when the template does not render earlier turns unchanged (the spans would lie)."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = render_chat(tokenizer, messages[: i + 1])
        if not (text.startswith(through) and through.startswith(before)):
            return None
        spans.append((len(before), len(through)))
    return spans


def tokenize_chat(tokenizer, messages: list[dict], train_on: str) -> dict:
    """input_ids of the chat through the model's chat template, and assistant_masks: 1 on the tokens
    that train. TRL's SFTTrainer turns assistant_masks into labels (-100 elsewhere), truncates and
    packs. (TRL's own assistant_only_loss needs {% generation %} markers in the template, which few
    shipped templates have; rendering prefixes works with any template that keeps earlier turns.)"""
    text = render_chat(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=train_on == "answers")
    ids = enc["input_ids"]
    if train_on == "all":
        return {"input_ids": ids, "assistant_masks": [1] * len(ids)}
    spans = answer_spans(tokenizer, messages, text)
    if spans is None:  # fall back to the last answer: the rendered chat always ends with it
        before = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
        spans = [(len(before), len(text))] if text.startswith(before) else [(0, len(text))]
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return {"input_ids": ids, "assistant_masks": mask}


def tokenize_text(tokenizer, text: str) -> dict:
    """Plain text trains on every token, ending with EOS (as TRL does for text)."""
    ids = tokenizer(text)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return {"input_ids": ids, "assistant_masks": [1] * len(ids)}


def tokenize_rows(cfg: dict, dataset, fmt: str, tokenizer):
    """Every format becomes input_ids + assistant_masks (1 = the token trains, see data.train_on):
    chats through the tokenizer's chat template, text as it is."""
    fmt = resolve_format(dataset, fmt)
    train_on = resolve_train_on(cfg, fmt)

    def one(example):
        if fmt == "text":
            return tokenize_text(tokenizer, example["text"])
        return tokenize_chat(tokenizer, as_messages(example, fmt), train_on)

    tokenized = dataset.map(one, remove_columns=dataset.column_names)
    if is_main_process():
        trained = sum(sum(m) for m in tokenized["assistant_masks"])
        total = sum(len(ids) for ids in tokenized["input_ids"])
        what = "the answers" if train_on == "answers" else "all tokens"
        print(f"[train] {fmt} data trains on {what}: {trained:,} of {total:,} tokens")
    return tokenized


def build_datasets(cfg: dict, tokenizer):
    """(train, eval): the data tokenized with its loss mask, an eval split of data.eval_fraction, general text mixed in
    at data.general_ratio when data.general_path is set. eval is None without an eval split."""
    d, seed = cfg["data"], cfg["training"]["seed"]
    if not d["path"]:
        raise SystemExit("data.path is empty in train_config.toml: set a .jsonl/.json/.parquet/.csv file or hub id")
    data = tokenize_rows(cfg, load_any(cfg, d["path"]), d["format"], tokenizer)
    train, evaluation = data, None
    n_eval = math.ceil(len(data) * d["eval_fraction"]) if d["eval_fraction"] > 0 else 0
    if n_eval and len(data) > n_eval:
        split = data.train_test_split(test_size=n_eval, seed=seed)
        train, evaluation = split["train"], split["test"]
    ratio = d.get("general_ratio", 0.0)
    if ratio > 0 and d.get("general_path"):
        general = tokenize_rows({"data": {"train_on": "all"}}, load_any(cfg, d["general_path"]), "auto", tokenizer)
        wanted = min(len(general), round(len(train) * ratio / (1 - ratio)))
        general = general.shuffle(seed=seed).select(range(wanted))
        train = concatenate_datasets([train, general]).shuffle(seed=seed)
        print(f"[train] mixed {wanted} general examples into {len(train) - wanted} task examples")
    elif ratio > 0:
        print(f"[train] data.general_ratio = {ratio} but data.general_path is empty: no general data mixed")
    return train, evaluation


# ---------------------------------------------------------------------------- trainer


def training_arguments(cfg: dict, max_steps: int | None = None, has_eval: bool = True) -> SFTConfig:
    t, c, log, d = cfg["training"], cfg["checkpoints"], cfg["logging"], cfg["data"]
    setup_distributed(cfg)
    precision = t["precision"]
    deepspeed = resolve(cfg, t["deepspeed"]) if t.get("deepspeed") else None
    check_ds_optimizer(cfg)
    short = max_steps is not None
    return SFTConfig(
        output_dir=resolve_output(cfg),
        per_device_train_batch_size=t["micro_batch_size"],
        per_device_eval_batch_size=t["micro_batch_size"],
        gradient_accumulation_steps=t["gradient_accumulation_steps"],
        num_train_epochs=t["epochs"],
        max_steps=max_steps if short else -1,
        learning_rate=t["learning_rate"],
        lr_scheduler_type=t["lr_scheduler"],
        warmup_steps=t["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        weight_decay=t["weight_decay"],
        max_grad_norm=t["max_grad_norm"],
        optim=t["optimizer"],
        # Pure bf16 loads bf16 weights and needs no autocast; DeepSpeed wants its bf16 flag to match.
        bf16=precision == "bf16-mixed" or (precision == "bf16" and deepspeed is not None),
        fp16=precision == "fp16-mixed",
        gradient_checkpointing=t["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        seed=t["seed"],
        deepspeed=deepspeed,
        use_cpu=on_cpu(cfg),
        ddp_backend="gloo" if on_cpu(cfg) and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        max_length=d["max_seq_len"],
        packing=d["packing"],
        # Padding-free packing: each document keeps its own position_ids (restarting at 0).
        # FlashAttention-2 reads the boundaries from them; for SDPA and eager, transformers builds a
        # block-diagonal mask from them, but only when the forward pass has no KV cache: use_cache
        # stays off in training (tests/export/test_recipe_data.py checks doc B packed == doc B alone).
        packing_strategy="bfd",
        use_cache=False,
        dataset_text_field="text",
        save_strategy="steps",
        save_steps=c["save_steps"],
        save_total_limit=None,  # KeepBestAndLast does the pruning
        eval_strategy="steps" if has_eval else "no",
        eval_steps=c["save_steps"],
        **best_checkpoint_arguments(has_eval),
        logging_steps=1 if short else log["logging_steps"],
        logging_first_step=True,
        report_to=log["report_to"],
        include_num_input_tokens_seen="non_padding",
        # MoE: the load-balancing loss weight; absent = the model config's own (0 turns it off)
        router_aux_loss_coef=t.get("router_aux_loss_coef"),
        disable_tqdm=not sys.stderr.isatty(),
        **fsdp_arguments(cfg),
        **compile_arguments(t),
    )


def compile_arguments(t: dict) -> dict:
    """training.compile: the Trainer wraps the model in torch.compile (backend training.compile_backend).
    Off: nothing passed, so the Trainer's own defaults stand."""
    if not t.get("compile", False):
        return {}
    return {"torch_compile": True, "torch_compile_backend": t.get("compile_backend") or "inductor"}


def best_checkpoint_arguments(has_eval: bool) -> dict:
    """With an eval split the result is the checkpoint with the lowest eval loss: the Trainer loads
    it at the end, so save_model (and merge_adapter.py after it) takes the best, not the last."""
    if not has_eval:
        return {}
    return dict(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)


def configured_output(cfg: dict) -> str:
    """checkpoints.output_dir as an absolute path."""
    out = cfg["checkpoints"]["output_dir"]
    return out if os.path.isabs(out) else str(Path(cfg["config_dir"]) / out)


def resolve_output(cfg: dict) -> str:
    """Where this run writes checkpoints and its result: output_dir, or output_dir/smoke for a
    --smoke run (so a later --resume of the real run never continues a smoke schedule)."""
    out = configured_output(cfg)
    return str(Path(out) / SMOKE_DIR) if cfg.get("smoke") else out


def build_trainer(cfg: dict, model, tokenizer, train, evaluation, max_steps: int | None = None) -> SFTTrainer:
    check_wrap_class(cfg, model)
    args = training_arguments(cfg, max_steps, has_eval=evaluation is not None)
    callbacks = [MetricsFile(metrics_path(cfg)), KeepBestAndLast(cfg["checkpoints"])]
    if uses_fsdp(cfg):
        callbacks.append(FsdpReport())
    every = cfg["logging"].get("lora_spectrum_steps", 0)
    # (not under FSDP2: reading a sharded adapter on rank 0 alone would start a collective the other ranks never join)
    if cfg["method"]["kind"] != "full" and every and not uses_fsdp(cfg):
        callbacks.append(LoraSpectrum(every, metrics_path(cfg)))
    trainer = trainer_class(cfg)(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    enable_fsdp_on_cpu(cfg, trainer)
    report_router_aux_loss(trainer)
    return trainer


def report_router_aux_loss(trainer) -> None:
    """A MoE model (its config has output_router_logits): SFTTrainer asks for the router logits and adds
    router_aux_loss_coef x the load-balancing loss to the loss (logged as aux_loss), or not when it is 0."""
    text_config = trainer.model.config.get_text_config()
    if not hasattr(text_config, "output_router_logits") or not is_main_process():
        return
    coef = getattr(trainer, "router_aux_loss_coef", 0.0)
    if getattr(trainer, "aux_loss_enabled", False):
        print(f"[train] MoE: the loss includes {coef:g} x the router load-balancing loss (logged as aux_loss)")
    else:
        print("[train] MoE: router load-balancing loss off (router_aux_loss_coef = 0)")


# ---------------------------------------------------------------------------- FSDP2


def uses_fsdp(cfg: dict) -> bool:
    """training.sharding = "fsdp2" at a zero_stage above 0 (0 is plain DDP)."""
    t = cfg["training"]
    return t.get("sharding", "deepspeed") == "fsdp2" and int(t.get("zero_stage", 0)) > 0


def fsdp_arguments(cfg: dict) -> dict:
    """The Trainer's FSDP2 arguments from the [fsdp] section ({} without FSDP2). accelerate wraps one
    unit per decoder layer, shards every parameter in the dtype it was loaded in, and saves a full
    state dict that from_pretrained loads."""
    if not uses_fsdp(cfg):
        return {}
    f = dict(cfg.get("fsdp", {}))
    sync_each_batch = bool(f.pop("sync_each_batch", True))
    return {
        "fsdp": True,
        "fsdp_config": f,
        # Each micro-batch's gradients are reduce-scattered at once, so accumulation keeps sharded
        # gradients (the plan's memory) instead of FSDP2's unsharded ones.
        "accelerator_config": {"gradient_accumulation_kwargs": {"sync_each_batch": sync_each_batch}},
    }


def check_wrap_class(cfg: dict, model) -> None:
    """[fsdp] transformer_layer_cls_to_wrap must name the model's decoder layer; else use the model's own."""
    if not uses_fsdp(cfg):
        return
    names = {type(m).__name__ for m in model.modules()}
    wanted = cfg["fsdp"].get("transformer_layer_cls_to_wrap", [])
    if not set(wanted) <= names:
        own = [n for n in getattr(model, "_no_split_modules", None) or [] if n in names]
        print(f"[train] fsdp.transformer_layer_cls_to_wrap {wanted} not in the model; wrapping {own}")
        cfg["fsdp"]["transformer_layer_cls_to_wrap"] = own


def enable_fsdp_on_cpu(cfg: dict, trainer) -> None:
    """CPU runs (CI, smoke tests): accelerate enables FSDP only on GPU-like process groups, so on
    CPU processes with gloo the trainer's accelerator is switched to FSDP here, before train()
    prepares the model; fully_shard itself runs on the CPU. GPU runs never take this path.

    The switch is written where accelerate itself writes it on a GPU: in PartialState's shared
    state as well. Every later AcceleratorState() copies PartialState's distributed_type over its
    own, so switching only the accelerator's state was undone during train(): at the end rank 0
    loaded the best checkpoint as FSDP2 does (a broadcast from rank 0) while rank 1 took the
    non-FSDP2 path and skipped it, and the run hung."""
    if not (uses_fsdp(cfg) and on_cpu(cfg) and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is None:
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    trainer.accelerator.get_state_dict = full_state_dict_on_cpu


def full_state_dict_on_cpu(model, unwrap: bool = True) -> dict:
    """The gathered model on rank 0 as plain tensors (accelerate's FSDP2 path asks for a CPU offload
    copy, which on CPU tensors returns storages safetensors cannot read)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in state.items()} if is_main_process() else {}


class FsdpReport(TrainerCallback):
    """Says on rank 0, when training starts, that FSDP2 holds the model: units, and this rank's share."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not state.is_world_process_zero:
            return
        from torch.distributed.fsdp import FSDPModule

        units = sum(isinstance(m, FSDPModule) for m in model.modules())
        local = sum(getattr(p, "_local_tensor", p).numel() for p in model.parameters())
        full = sum(p.numel() for p in model.parameters())
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
        print(f"[train] FSDP2: {units} units; this rank holds {local:,} of {full:,} parameters ({', '.join(dtypes)})")


# ---------------------------------------------------------------------------- loss


def trainer_class(cfg: dict) -> type:
    """training.loss = "chunked": TRL's SFTTrainer as it is (its fused, tiled LM head never builds the
    batch x seq x vocab logits); "full_logits": the model's own cross-entropy on full fp32 logits."""
    return ModelLossSFTTrainer if cfg["training"].get("loss", "chunked") == "full_logits" else SFTTrainer


class ModelLossSFTTrainer(SFTTrainer):
    """SFTTrainer with the loss the model computes itself from its logits (as the HF Trainer,
    axolotl or LLaMA-Factory without a fused loss run it): more memory, the plan counts it.
    SFTTrainer's entropy and token-accuracy metrics come from the fused head and are not logged."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from transformers import Trainer

        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


# ---------------------------------------------------------------------------- callbacks


def metrics_path(cfg: dict) -> Path:
    path = Path(cfg["logging"]["metrics_file"])
    return path if path.is_absolute() else Path(configured_output(cfg)) / path


def peak_memory_bytes() -> int:
    """The step's peak: CUDA's allocator peak on a GPU, the process's peak RSS on the CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def append_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


class MetricsFile(TrainerCallback):
    """One JSON line per logging step (and per evaluation) in the metrics file, on the main process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.start = time.time()
        self.last_time, self.last_tokens = self.start, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_tokens = time.time(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        if "loss" in logs:
            tokens = state.num_input_tokens_seen
            rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_tokens = now, tokens
            append_json(
                self.path,
                {
                    "step": state.global_step,
                    "loss": logs["loss"],
                    "lr": logs.get("learning_rate"),
                    "tokens_per_second": rate,
                    "peak_memory_bytes": peak_memory_bytes(),
                    "epoch": state.epoch,
                    "max_steps": state.max_steps,
                    "time": now - self.start,
                    **({"aux_loss": logs["aux_loss"]} if "aux_loss" in logs else {}),
                },
            )
        elif "eval_loss" in logs:
            append_json(
                self.path,
                {"event": "eval", "step": state.global_step, "eval_loss": logs["eval_loss"], "time": now - self.start},
            )

    def end(self, status: str, **extra) -> None:
        if is_main_process():
            append_json(self.path, {"event": "end", "status": status, "time": time.time() - self.start, **extra})


class KeepBestAndLast(TrainerCallback):
    """After each save, delete every checkpoint that is neither among the best `keep_best` by eval
    loss nor among the last `keep_last` complete ones (the newest complete one is always kept, for
    --resume). An incomplete checkpoint (left by a run killed while saving) counts as none of the
    last: it is never what a resume takes, so it must not push a complete one out."""

    def __init__(self, checkpoints: dict):
        self.keep_best = int(checkpoints.get("keep_best", 1))
        self.keep_last = max(1, int(checkpoints.get("keep_last", 1)))

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        found = {}
        for path in Path(args.output_dir).glob("checkpoint-*"):
            step = path.name.rpartition("-")[2]
            if path.is_dir() and step.isdigit():
                found[int(step)] = path
        # The one just saved is kept as it is (other ranks may still be finishing their files).
        complete = [step for step in sorted(found) if step == state.global_step or checkpoint_complete(found[step])]
        keep = set(complete[-self.keep_last :]) | {step for step in found if step not in complete}
        losses = {e["step"]: e["eval_loss"] for e in state.log_history if "eval_loss" in e}
        ranked = sorted((losses[step], step) for step in complete if step in losses)
        # The best one is kept whatever keep_best says: the Trainer loads it at the end (the result).
        keep_best = max(self.keep_best, 1 if args.load_best_model_at_end else 0)
        keep |= {step for _, step in ranked[:keep_best]}
        for step, path in sorted(found.items()):
            if step not in keep:
                shutil.rmtree(path, ignore_errors=True)
                print(f"[train] removed {path.name} (not among the best {keep_best} or last {self.keep_last})")


def lora_singular_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Singular values of the update B @ A without forming it: with B = Qb Rb and A^T = Qa Ra,
    B A = Qb (Rb Ra^T) Qa^T, so they are those of the small r x r matrix Rb Ra^T."""
    _, rb = torch.linalg.qr(b.detach().float().cpu())
    _, ra = torch.linalg.qr(a.detach().float().cpu().T)
    return torch.linalg.svdvals(rb @ ra.T)


def effective_rank(s: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy and Vetterli, 2007); 0 for a zero update."""
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


class LoraSpectrum(TrainerCallback):
    """Every `every` steps, each adapter's singular values and effective rank: an adapter whose
    effective rank stays far below lora.r could use a smaller rank."""

    def __init__(self, every: int, path: Path):
        self.every, self.path = int(every), Path(path)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every or not state.is_world_process_zero:
            return
        modules = {}
        for name, module in model.named_modules():
            a, b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
            if a is None or "default" not in a:
                continue
            wa, wb = a["default"].weight, b["default"].weight
            if wa.dim() != 2 or wb.dim() != 2 or not wa.numel() or not wb.numel():
                continue  # either one sharded by ZeRO-3: an empty placeholder on this rank
            s = lora_singular_values(wa, wb) * module.scaling["default"]
            top = [round(x, 6) for x in s[:4].tolist()]
            modules[name] = {"effective_rank": round(effective_rank(s), 3), "top": top}
        if not modules:
            return
        ranks = [m["effective_rank"] for m in modules.values()]
        print(
            f"[train] step {state.global_step}: LoRA effective rank mean {sum(ranks) / len(ranks):.2f}, "
            f"min {min(ranks):.2f}, max {max(ranks):.2f} over {len(ranks)} adapters"
        )
        append_json(self.path, {"event": "lora_spectrum", "step": state.global_step, "modules": modules})


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune as train_config.toml says.")
    p.add_argument("--config", default=str(Path(__file__).resolve().parent / "train_config.toml"))
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"a smoke test: {DEFAULT_SMOKE_STEPS} steps (or --max-steps) from scratch, in output_dir/{SMOKE_DIR}",
    )
    return p.parse_args(argv)


def safetensors_complete(path: Path) -> bool:
    """A .safetensors file whose header parses and whose data is all there (8-byte header length,
    JSON header, then every tensor's bytes up to the largest end offset)."""
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return False
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return path.stat().st_size >= 8 + n + end


def checkpoint_complete(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: it writes trainer_state.json last, so that must
    parse and name this step; no file may be empty and every safetensors file must be whole."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if str(state.get("global_step")) != path.name.rpartition("-")[2]:
        return False
    for file in path.rglob("*"):
        if not file.is_file():
            continue
        if file.stat().st_size == 0 or (file.suffix == ".safetensors" and not safetensors_complete(file)):
            return False
    return True


def latest_checkpoint(cfg: dict) -> str | None:
    """The newest complete checkpoint-N in output_dir; incomplete ones (a run killed while saving)
    are skipped, with a word."""
    out = Path(resolve_output(cfg))
    found = sorted(
        (int(p.name.rpartition("-")[2]), p)
        for p in (out.glob("checkpoint-*") if out.is_dir() else [])
        if p.is_dir() and p.name.rpartition("-")[2].isdigit()
    )
    for _, path in reversed(found):
        if checkpoint_complete(path):
            return str(path)
        if is_main_process():
            print(f"[train] skipping {path.name}: incomplete (interrupted while saving?)")
    return None


class Interrupted(KeyboardInterrupt):
    """SIGTERM (a scheduler, torchrun stopping the workers) as an interruption, like Ctrl-C."""


def raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def prepare_smoke_output(cfg: dict) -> None:
    """A smoke run starts from nothing each time: its folder is emptied first (main process)."""
    smoke = Path(resolve_output(cfg))
    if is_main_process() and smoke.is_dir():
        shutil.rmtree(smoke)


def result_record(trainer) -> dict:
    """What output_dir holds at the end: the best checkpoint by eval loss when there was an eval
    split (the Trainer loaded it), else the last step."""
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best:
        return {"result": "best", "checkpoint": Path(best).name, "eval_loss": trainer.state.best_metric}
    return {"result": "last", "checkpoint": f"checkpoint-{trainer.state.global_step}", "eval_loss": None}


def save_result(cfg: dict, trainer, tokenizer) -> dict:
    out = resolve_output(cfg)
    trainer.save_model(out)  # adapter only for LoRA/QLoRA; 16-bit weights gathered under ZeRO-3
    record = result_record(trainer)
    if is_main_process():
        tokenizer.save_pretrained(out)
        Path(out, "result.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if record["result"] == "best":
            print(
                f"[train] saved to {out}: the best checkpoint by eval loss, {record['checkpoint']} "
                f"(eval loss {record['eval_loss']:.4f}), not necessarily the last step"
            )
        else:
            print(f"[train] saved to {out}: the last step ({record['checkpoint']}; no eval split)")
    return record


def report_compile(cfg: dict) -> None:
    """With training.compile, how many graphs torch.compile built: more than one per model call means
    graph breaks (each runs eager between them) or recompiles for new shapes."""
    t = cfg["training"]
    if not t.get("compile", False) or not is_main_process():
        return
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    print(f"[train] torch.compile ({t.get('compile_backend') or 'inductor'}): {graphs} graphs compiled")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    cfg["smoke"] = args.smoke
    max_steps = args.max_steps if args.max_steps is not None or not args.smoke else DEFAULT_SMOKE_STEPS
    signal.signal(signal.SIGTERM, raise_interrupted)
    setup_distributed(cfg)
    set_seed(cfg["training"]["seed"])
    metrics = MetricsFile(metrics_path(cfg))
    trainer = None
    try:
        if args.smoke:
            prepare_smoke_output(cfg)
        tokenizer = build_tokenizer(cfg)
        model = build_model(cfg, tokenizer)
        train, evaluation = build_datasets(cfg, tokenizer)
        trainer = build_trainer(cfg, model, tokenizer, train, evaluation, max_steps=max_steps)
        checkpoint = latest_checkpoint(cfg) if args.resume and not args.smoke else None
        if args.resume and is_main_process():
            print(f"[train] resuming from {checkpoint}" if checkpoint else "[train] no checkpoint; starting fresh")
        trainer.train(resume_from_checkpoint=checkpoint)
        report_compile(cfg)
        record = save_result(cfg, trainer, tokenizer)
    except KeyboardInterrupt as exc:
        step = trainer.state.global_step if trainer is not None else 0
        metrics.end("interrupted", step=step, signal="SIGTERM" if isinstance(exc, Interrupted) else "SIGINT")
        if is_main_process():
            print(f"[train] interrupted at step {step}; `bash launch.sh --resume` continues from the last checkpoint")
        return 143 if isinstance(exc, Interrupted) else 130
    except BaseException as exc:
        metrics.end("error", error=f"{type(exc).__name__}: {exc}")
        raise
    metrics.end("ok", step=trainer.state.global_step, output_dir=resolve_output(cfg), **record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
