"""The questions the app asks: one `Field` per answers-file key, and the form <-> TOML mapping.

The help text of every question is the docstring of its pydantic field, read from
answers.py without pydantic (`ftplan.planner.fielddocs`, tested equal to
`model_fields[name].description`), so the app and the answers file never disagree.
The form keeps raw strings; pydantic (through `parse_answers`) does all the validating, so
an error in the app reads exactly like the one the headless CLI prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.choices import Attention, Loss, Offload, Optimizer, Precision, Sharding, TrainOn
from ftplan.planner.fielddocs import field_docs

if TYPE_CHECKING:
    from ftplan.planner.answers import Answers

AUTO = ""
"""The select value meaning "leave it out: the planner chooses"."""

Kind = Literal["select", "text", "int", "float", "switch"]


@dataclass(frozen=True)
class Field:
    section: str
    name: str
    kind: Kind
    choices: tuple[tuple[str, Any], ...] = ()
    placeholder: str = ""

    @property
    def key(self) -> str:
        """The dotted name problems use: `training.lora_r`."""
        return f"{self.section}.{self.name}"

    @property
    def widget_id(self) -> str:
        return f"{self.section}-{self.name}"

    @property
    def help(self) -> str:
        return field_docs()[self.key].help

    @property
    def default(self) -> Any:
        doc = field_docs()[self.key]
        return None if doc.required else doc.default


OBJECTIVE_KINDS: tuple[tuple[str, str], ...] = (
    ("instruction — chat, format, persona (LoRA usually)", "instruction"),
    ("domain_knowledge — continual pre-training on domain text", "domain_knowledge"),
    ("task_specific — one narrow task (classification, extraction…)", "task_specific"),
    ("new_vocabulary — new tokens whose embeddings must train", "new_vocabulary"),
)


def _auto(*values: Any, label: str = "auto (the planner chooses)") -> tuple[tuple[str, Any], ...]:
    return ((label, AUTO), *((str(v), v) for v in values))


GPU_CHOICES: tuple[tuple[str, str], ...] = (
    ("auto (detect)", "auto"),
    *((f"{name} ({gpu.memory / 2**30:.0f} GiB, ${gpu.usd_per_hour:.2f}/h)", name) for name, gpu in GPUS.items()),
    ("cpu (smoke runs)", "cpu"),
)

SECTIONS: dict[str, str] = {
    "objective": "Objective",
    "model": "Model",
    "data": "Data",
    "hardware": "Hardware",
    "budget": "Budget",
    "training": "Training overrides",
}

FIELDS: tuple[Field, ...] = (
    Field("objective", "kind", "select", OBJECTIVE_KINDS),
    Field("objective", "new_tokens", "int", placeholder="0"),
    Field("objective", "variants", "int", placeholder="1"),
    Field("model", "name", "text", placeholder="e.g. meta-llama/Llama-3.1-8B (→ completes)"),
    Field("model", "trust_remote_code", "switch"),
    Field("data", "path", "text", placeholder="data/train.jsonl"),
    Field(
        "data",
        "format",
        "select",
        (("auto", "auto"), ("messages", "messages"), ("alpaca", "alpaca"), ("text", "text")),
    ),
    Field("data", "examples", "int", placeholder="measured from path, else 10,000"),
    Field("data", "avg_tokens", "int", placeholder="measured from path, else 512"),
    Field("data", "max_seq_len", "int", placeholder="2048"),
    Field("data", "epochs", "float", placeholder="planner suggests"),
    Field("data", "packing", "switch"),
    Field("data", "train_on", "select", _auto(*get_args(TrainOn), label="auto (answers for instruction data)")),
    Field("hardware", "gpu", "select", GPU_CHOICES),
    Field("hardware", "gpus_per_node", "int", placeholder="1"),
    Field("hardware", "nodes", "int", placeholder="1"),
    Field("hardware", "host_ram_gb", "float", placeholder="detected"),
    Field("budget", "usd", "float", placeholder="no limit"),
    Field("budget", "gpu_hour_usd", "float", placeholder="catalog price"),
    Field("budget", "hours", "float", placeholder="no deadline"),
    Field(
        "training",
        "method",
        "select",
        (("auto (recommended)", "auto"), ("full", "full"), ("lora", "lora"), ("qlora", "qlora")),
    ),
    Field("training", "precision", "select", _auto(*get_args(Precision))),
    Field("training", "optimizer", "select", _auto(*get_args(Optimizer))),
    Field("training", "micro_batch_size", "int", placeholder="auto"),
    Field("training", "gradient_accumulation_steps", "int", placeholder="auto"),
    Field("training", "gradient_checkpointing", "select", _auto(True, False)),
    Field("training", "attention", "select", _auto(*get_args(Attention))),
    Field("training", "zero_stage", "select", _auto(0, 1, 2, 3)),
    Field("training", "offload", "select", _auto(*get_args(Offload))),
    Field("training", "sharding", "select", _auto(*get_args(Sharding))),
    Field("training", "loss", "select", _auto(*get_args(Loss))),
    Field("training", "compile", "select", _auto(True, False, label="auto (off)")),
    Field("training", "learning_rate", "float", placeholder="auto"),
    Field("training", "lora_r", "int", placeholder="auto"),
    Field("training", "lora_alpha", "float", placeholder="auto"),
    Field("training", "lora_dropout", "float", placeholder="auto"),
    Field("training", "lora_target_modules", "text", placeholder='auto, "all-linear" or q_proj, v_proj'),
)

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}


def form_value(f: Field, value: Any) -> Any:
    """A value from answers (or a raw TOML dict) as the widget holds it."""
    if f.kind == "switch":
        return bool(value) if value is not None else bool(f.default)
    if f.kind == "select":
        if value is None:
            return AUTO if any(v == AUTO for _, v in f.choices) else f.default
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def raw_value(f: Field, value: Any) -> tuple[bool, Any]:
    """A widget's value as it goes into the answers dict: (present, value)."""
    if f.kind == "switch":
        return value != f.default, bool(value)
    if f.kind == "select":
        if value == AUTO or value is None:
            return False, None
        return value != f.default, value
    text = str(value).strip()
    if not text:
        return False, None
    if f.key == "training.lora_target_modules":
        if text.strip("\"'") == "all-linear":
            return True, "all-linear"
        return True, [part.strip().strip("\"'") for part in text.strip("[]").split(",") if part.strip()]
    return True, number_text(text, f.kind) if f.kind in ("int", "float") else text


_NUMBER = re.compile(
    r"^\$?\s*((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9][0-9_]*)(?:\.[0-9]*)?|\.[0-9]+)(?:e([+-]?[0-9]+))?\s*([km])?$",
    re.IGNORECASE,
)
_SUFFIX = {"k": 1_000, "m": 1_000_000}


def number_text(text: str, kind: Kind) -> Any:
    """A number field's text as a number when it reads as one the way people write them:
    `30000`, `30,000`, `30_000`, `30k`, `3e4`, `1.5M`, `$200`. Anything else goes to the
    validator untouched, so its message quotes exactly what was typed (`my_bad_value`)."""
    match = _NUMBER.match(text.strip())
    if not match:
        return text
    digits, exponent, suffix = match.groups()
    value = float(f"{digits.replace(',', '').replace('_', '')}e{exponent or 0}")
    value *= _SUFFIX.get((suffix or "").lower(), 1)
    if kind == "int":
        return int(value) if value == int(value) else text  # 2.5 examples: the validator says why not
    return value


@dataclass
class FormState:
    """The raw form values by dotted key; `to_raw()` is the dict `parse_answers` validates."""

    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: dict[str, Any] | None) -> FormState:
        raw = raw or {}
        values = {}
        for f in FIELDS:
            section = raw.get(f.section) if isinstance(raw.get(f.section), dict) else {}
            values[f.key] = form_value(f, section.get(f.name, f.default if f.kind != "select" else None))
        return cls(values)

    @classmethod
    def from_answers(cls, answers: Answers | None) -> FormState:
        return cls.from_raw(answers.model_dump(mode="python", exclude_defaults=True) if answers else None)

    def to_raw(self) -> dict[str, dict[str, Any]]:
        raw: dict[str, dict[str, Any]] = {"model": {}}  # so a missing name is reported as model.name
        for f in FIELDS:
            present, value = raw_value(f, self.values.get(f.key))
            if present:
                raw.setdefault(f.section, {})[f.name] = value
        return raw


def answers_toml(answers: Answers) -> str:
    """The answers as TOML: only what differs from the defaults, plus model.name."""
    import tomli_w

    data = answers.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("model", {})["name"] = answers.model.name
    order = ["objective", "model", "data", "hardware", "budget", "training"]
    data = {k: data[k] for k in order if data.get(k)}
    return "# ftplan answers (saved from the app; only what differs from the defaults)\n" + tomli_w.dumps(data)
