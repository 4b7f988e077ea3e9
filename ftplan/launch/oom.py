"""Recognise an out-of-memory failure and answer with the next rung of the planner's ladder.

The planner trades speed for memory in a fixed order (ftplan/planner/choose.py): activation
checkpointing, a smaller micro-batch, ZeRO-2 then ZeRO-3 (full fine-tuning on several GPUs),
FSDP2 where it keeps less than ZeRO-3 (bf16 full fine-tuning, QLoRA), CPU offload of the
optimizer then of the parameters (FSDP2: both at once), and finally QLoRA. When a run still runs
out of memory, the advice is the first rung the plan's chosen settings have not taken yet,
written as answers-file lines the user can paste.
"""

from __future__ import annotations

import re

from ftplan.launch.project import ProjectInfo

OOM_PATTERNS = (
    re.compile(r"CUDA out of memory"),
    re.compile(r"CUDA error: out of memory"),
    re.compile(r"torch\.(cuda\.)?OutOfMemoryError"),
    re.compile(r"\bOutOfMemoryError\b"),
    re.compile(r"CUBLAS_STATUS_ALLOC_FAILED"),
    re.compile(r"HIP out of memory"),
)


def is_oom(text: str) -> bool:
    """True when a line (or an error file's text) reports a GPU out-of-memory error."""
    return any(p.search(text) for p in OOM_PATTERNS)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def next_rung(project: ProjectInfo) -> tuple[list[str], str]:
    """(answers lines, why) for the next memory-saving step beyond the plan's chosen settings."""
    s = project.settings
    method = project.method
    mb = int(s.get("micro_batch_size", 1))
    gas = int(s.get("gradient_accumulation_steps", 1))
    zero = int(s.get("zero_stage", 0))
    offload = str(s.get("offload", "none"))

    def line(key: str, value) -> str:
        return f"{key} = {_toml(value)}"

    if not s.get("gradient_checkpointing", True):
        return [line("training.gradient_checkpointing", True)], (
            "activation checkpointing recomputes activations in the backward pass: far less memory, about a third more compute"
        )
    if mb > 1:
        return (
            [
                line("training.micro_batch_size", mb // 2),
                line("training.gradient_accumulation_steps", gas * 2),
            ],
            f"half the micro-batch ({mb} -> {mb // 2}) halves the activations; twice the accumulation keeps the global batch",
        )
    fsdp = _fsdp2_rung(project, line)
    if fsdp is not None:
        return fsdp
    if method == "full":
        if project.world_size > 1 and zero < 2:
            return [line("training.zero_stage", 2)], "ZeRO-2 shards gradients and optimizer states across the GPUs"
        if project.world_size > 1 and zero < 3:
            return [line("training.zero_stage", 3)], "ZeRO-3 also shards the weights across the GPUs"
        if offload == "none":
            return [line("training.zero_stage", 3), line("training.offload", "optimizer")], (
                "DeepSpeed CPU offload moves the optimizer states to host memory"
            )
        if offload == "optimizer":
            return [line("training.zero_stage", 3), line("training.offload", "optimizer+params")], (
                "offloading the parameters too leaves only the working layers on the GPU"
            )
    if method != "qlora":
        return [line("training.method", "qlora")], "QLoRA stores the frozen base weights in 4 bits"
    seq = int(s.get("max_seq_len", 2048))
    return [line("data.max_seq_len", max(16, seq // 2))], (
        "every rung of the ladder is taken; shorter sequences are what is left (or more GPUs)"
    )


def _fsdp2_rung(project: ProjectInfo, line) -> tuple[list[str], str] | None:
    """FSDP2's rungs: under FSDP2 its own stages and its one offload (parameters with the
    optimizer); under DeepSpeed, FSDP2 where it keeps less than ZeRO-3 does (bf16 full
    fine-tuning: no fp32 master weights; QLoRA: no fp32 upcasts). None: the shared ladder goes on."""
    s = project.settings
    zero = int(s.get("zero_stage", 0))
    offload = str(s.get("offload", "none"))
    if s.get("sharding", "deepspeed") == "fsdp2":
        if project.world_size > 1 and 0 < zero < 3:
            return [line("training.zero_stage", 3)], "FSDP2 at stage 3 reshards the weights after each layer's forward"
        if project.method == "full" and offload == "none":
            return [line("training.zero_stage", 3), line("training.offload", "optimizer+params")], (
                "FSDP2's CPU offload keeps the sharded parameters, gradients and optimizer states in host memory"
            )
        return None
    if zero != 3 or offload != "none":
        return None
    if project.method == "full" and project.precision == "bf16":
        return [line("training.sharding", "fsdp2")], (
            "FSDP2 keeps the bf16 parameters without DeepSpeed's fp32 master weights: 8 bytes per parameter, not 16"
        )
    if project.method == "qlora":
        return [line("training.sharding", "fsdp2")], (
            "QLoRA under FSDP2 keeps norms, embeddings and activations in bf16 (ZeRO-3 runs them in fp32)"
        )
    return None


def oom_message(project: ProjectInfo) -> tuple[str, list[str]]:
    """The user-facing message and the answers lines to change."""
    lines, why = next_rung(project)
    text = (
        "The run ran out of GPU memory. Next step on the planner's ladder: " + why + ".\n"
        "Change in the answers file (answers.toml in the project):\n"
        + "\n".join(f"    {x}" for x in lines)
        + "\nthen re-plan and re-export: ftplan --answers answers.toml --out "
        + project.directory
    )
    return text, lines
