"""The training settings of one method: what the exported project will really run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ftplan.planner.answers import Attention, Method, Offload, Optimizer, Precision


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
    chosen_by_planner: tuple[str, ...] = ()
    """Names of the settings the planner chose (the rest came from the answers)."""

    @property
    def is_peft(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def global_batch_per_gpu(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps
