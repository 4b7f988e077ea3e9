"""The training settings of one method: what the exported project will really run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ftplan.planner.answers import Attention, Loss, Method, Offload, Optimizer, Precision, Sharding


class Settings(BaseModel):
    """Every knob that changes memory, time or the exported training script."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    precision: Precision = "bf16"
    optimizer: Optimizer = "adamw_torch_fused"
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = True
    attention: Attention = "sdpa"
    zero_stage: Literal[0, 1, 2, 3] = 0
    offload: Offload = "none"
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 2048
    packing: bool = True
    epochs: float = 3.0
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_target_modules: Literal["all-linear"] | list[str] = "all-linear"
    new_tokens: int = 0
    train_new_token_rows: bool = False
    """LoRA/QLoRA with new tokens: train only the new rows of embed_tokens/lm_head
    (PEFT ``trainable_token_indices``) instead of whole embedding matrices."""
    general_data_ratio: float = 0.0
    """Share of general text mixed into the training data against catastrophic forgetting."""
    sharding: Sharding = Field("deepspeed", exclude_if=lambda value: value == "deepspeed")
    """The engine that shards at zero_stage: DeepSpeed ZeRO, or PyTorch FSDP2 through accelerate
    (zero_stage 3 = reshard after forward, 2 = keep gathered weights until backward). Left out of
    the plan's JSON at its default so that plans made before the option existed read the same."""
    loss: Loss = Field("chunked", exclude_if=lambda value: value == "chunked")
    """chunked: TRL's fused, tiled LM head (no batch x seq x vocab logits); full_logits: the model's
    own cross-entropy on fp32 logits. Left out of the JSON at its default, like ``sharding``."""
    compile: bool = Field(False, exclude_if=lambda value: not value)
    """torch.compile the model (TrainingArguments ``torch_compile``). Left out of the JSON when off."""
    chosen_by_planner: tuple[str, ...] = ()
    """Names of the settings the planner chose (the rest came from the answers)."""

    @property
    def is_peft(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def uses_fsdp(self) -> bool:
        """FSDP2 shards this run (a zero_stage of 0 is plain DDP whatever the engine)."""
        return self.sharding == "fsdp2" and self.zero_stage > 0

    @property
    def uses_deepspeed(self) -> bool:
        return self.sharding == "deepspeed" and self.zero_stage > 0

    @property
    def global_batch_per_gpu(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps
