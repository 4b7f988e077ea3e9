"""The answers' closed sets of values: plain ``Literal`` types, no pydantic.

The app draws its select boxes from these before it imports the answers models.
"""

from __future__ import annotations

from typing import Literal

ObjectiveKind = Literal["instruction", "domain_knowledge", "task_specific", "new_vocabulary"]
Method = Literal["full", "lora", "qlora"]
Precision = Literal["bf16", "bf16-mixed", "fp16-mixed", "fp32"]
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
]
Attention = Literal["sdpa", "flash_attention_2", "eager"]
Offload = Literal["none", "optimizer", "optimizer+params"]
DataFormat = Literal["auto", "messages", "alpaca", "text", "prompt_completion"]
TrainOn = Literal["answers", "all"]
Sharding = Literal["deepspeed", "fsdp2"]
Loss = Literal["chunked", "full_logits"]

METHODS: tuple[Method, ...] = ("full", "lora", "qlora")
