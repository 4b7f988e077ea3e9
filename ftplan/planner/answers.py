"""The answers file: what the user tells ftplan, as frozen pydantic models.

Each field's docstring is its help text: the TUI shows it beside the question and
the error messages quote it. Only ``model.name`` is required; ``None`` means
"the planner chooses" and the plan says what it chose.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ftplan.planner.choices import (  # noqa: F401 (re-exported: the schema's types live here too)
    METHODS,
    Attention,
    DataFormat,
    Loss,
    Method,
    ObjectiveKind,
    Offload,
    Optimizer,
    Precision,
    Sharding,
    TrainOn,
)


class _Section(BaseModel):
    # defer_build: validators are built on first use (the plan worker), not when the app
    # imports the schema to draw its questions.
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, defer_build=True)


class Objective(_Section):
    kind: ObjectiveKind = "instruction"
    """What the fine-tuning should teach: instruction (chat, format, persona), domain_knowledge
    (continual pre-training on domain text), task_specific (one narrow task), new_vocabulary
    (new tokens)."""
    new_tokens: int = Field(0, ge=0)
    """Tokens to add to the vocabulary; their embedding and output rows must train."""
    variants: int = Field(1, ge=1)
    """Fine-tuned variants that will be served from one base model (customers, languages...)."""


class ModelChoice(_Section):
    name: str = Field(min_length=1)
    """A hub id from the built-in catalog (over 100 ids: Llama 2-4, Qwen2.5/3 dense and MoE, Gemma 2/3,
    Mistral, Mixtral, Phi-3/4, OLMo-2, SmolLM3, Granite, gpt-oss, DeepSeek-V3/R1; completed as you
    type), a hub id whose config.json is in the local HF cache, or a local folder with config.json.
    Any other model: fetch only its config.json (`hf download ID config.json`, no weights) or save
    it in a folder and give the folder."""
    trust_remote_code: bool = False
    """Allow the model's own Python code to run when loading (only for models that need it)."""


class Data(_Section):
    path: str = ""
    """A local .jsonl/.json/.parquet/.csv file or a hub dataset id."""
    format: DataFormat = "auto"
    """messages (chat turns), alpaca (instruction/input/output), text (raw text), or auto."""
    examples: int | None = Field(None, ge=1)
    """Training examples; counted from `path` when it is a local file and this is left out."""
    avg_tokens: int | None = Field(None, ge=1)
    """Mean tokens per example; estimated from `path` when it is a local file and this is left out."""
    max_seq_len: int = Field(2048, ge=16, le=1_048_576)
    """Longest sequence in tokens; longer examples are truncated."""
    epochs: float | None = Field(None, gt=0, le=100)
    """Passes over the data (the planner suggests 1-3)."""
    packing: bool = True
    """Pack several examples into each sequence so no compute is spent on padding."""
    train_on: TrainOn | None = None
    """answers (the loss covers assistant turns, alpaca outputs and completions only; the default
    for instruction data) or all (every token; the default for text and domain_knowledge)."""


class Hardware(_Section):
    gpu: str = "auto"
    """auto (detect), a catalog name such as A100-80GB, H100-SXM, RTX-4090, L4, or cpu."""
    gpus_per_node: int = Field(1, ge=1, le=64)
    """GPUs in each machine."""
    nodes: int = Field(1, ge=1, le=4096)
    """Machines in the run."""
    host_ram_gb: float | None = Field(None, gt=0)
    """Host memory (RAM) per machine in GB; detected when left out. CPU offload must fit in it."""


class Budget(_Section):
    usd: float | None = Field(None, gt=0)
    """The most one training run may cost, in US dollars."""
    gpu_hour_usd: float | None = Field(None, gt=0)
    """Price per GPU-hour; the catalog's on-demand price when left out."""
    hours: float | None = Field(None, gt=0)
    """Wall-clock deadline for one run, in hours."""


class Training(_Section):
    method: Literal["auto", "full", "lora", "qlora"] = "auto"
    """Which method to plan as the choice; all three are always estimated."""
    precision: Precision | None = None
    """bf16 (weights, grads and optimizer states in bf16), bf16-mixed (fp32 master weights,
    bf16 compute), fp16-mixed, or fp32."""
    optimizer: Optimizer | None = None
    """TrainingArguments `optim` name."""
    micro_batch_size: int | None = Field(None, ge=1, le=4096)
    """Sequences per GPU per forward pass."""
    gradient_accumulation_steps: int | None = Field(None, ge=1, le=65536)
    """Micro-batches accumulated before each optimizer step."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass: far less memory, about a third more compute."""
    attention: Attention | None = None
    """Attention kernel: sdpa, flash_attention_2 (Ampere or newer) or eager (stores s x s scores)."""
    zero_stage: Literal[0, 1, 2, 3] | None = None
    """DeepSpeed ZeRO stage: 0 is plain data parallel; 3 shards the weights too."""
    offload: Offload | None = None
    """DeepSpeed CPU offload: none, optimizer, or optimizer+params."""
    sharding: Sharding | None = None
    """The engine that shards at zero_stage: deepspeed or fsdp2 (PyTorch FSDP2 through accelerate)."""
    loss: Loss | None = None
    """chunked (no full-vocabulary logits: TRL's fused LM head, as the exported train.py runs) or
    full_logits (the model's own loss, as the HF Trainer runs it)."""
    compile: bool | None = None
    """torch.compile the model (TrainingArguments torch_compile): fused element-wise kernels, about a
    quarter faster on GPUs after a first step that compiles; off when left out. Not under DeepSpeed
    ZeRO-3 (the planner shards with FSDP2 instead)."""
    learning_rate: float | None = Field(None, gt=0, lt=1)
    """Peak learning rate (1e-5 to 5e-5 for full fine-tuning, 1e-4 to 3e-4 for LoRA)."""
    lora_r: int | None = Field(None, ge=1, le=4096)
    """LoRA rank (LoRA and QLoRA only)."""
    lora_alpha: float | None = Field(None, gt=0)
    """LoRA scaling numerator; the adapter is scaled by alpha / r (2 x r is the usual choice)."""
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_target_modules: Literal["all-linear"] | list[str] | None = None
    """Modules to adapt: "all-linear" or a list of module names such as ["q_proj", "v_proj"]."""

    @field_validator("lora_target_modules")
    @classmethod
    def _non_empty_targets(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError('must name at least one module, or be "all-linear"')
        return value


class Answers(_Section):
    """Everything the user answered; the planner fills in the rest."""

    objective: Objective = Field(default_factory=Objective)
    model: ModelChoice
    data: Data = Field(default_factory=Data)
    hardware: Hardware = Field(default_factory=Hardware)
    budget: Budget = Field(default_factory=Budget)
    training: Training = Field(default_factory=Training)

    @model_validator(mode="after")
    def _vocabulary_objective_has_tokens(self):
        return self
