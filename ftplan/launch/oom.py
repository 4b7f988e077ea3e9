"""Recognise an out-of-memory failure and answer with the next rung of the planner's ladder.

The ladder is the planner's (``ftplan.planner.choose.next_rung``, in the README's order): a
smaller micro-batch, activation checkpointing, ZeRO-2 then ZeRO-3, FSDP2 where it keeps less than
ZeRO-3 (bf16 full fine-tuning, QLoRA), CPU offload of the optimizer then of the parameters
(FSDP2: both at once), QLoRA, a shorter sequence. When a run still runs out of memory, the advice
is the first rung the plan's chosen settings have not taken yet, written as answers-file lines
the user can paste.
"""

from __future__ import annotations

import re

import tomli_w

from ftplan.project import ProjectInfo

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


def next_rung(project: ProjectInfo) -> tuple[list[str], str]:
    """(answers lines, why) for the next memory-saving step beyond the plan's chosen settings:
    the planner's own ladder (``ftplan.planner.choose.next_rung``), written as TOML lines."""
    from ftplan.planner.choose import next_rung as planner_next_rung

    changes, why = planner_next_rung(project.settings, project.world_size)
    return [tomli_w.dumps({key: value}).strip().replace(f'"{key}"', key) for key, value in changes.items()], why


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
