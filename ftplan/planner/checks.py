"""Checks that need more than one field: the model exists, targets exist, combinations work."""

from __future__ import annotations

from ftplan.planner.answers import Answers
from ftplan.planner.catalog.gpus import GPUS, gpu_by_name
from ftplan.planner.models import ModelNotFound, resolve_model
from ftplan.planner.problems import Problem, did_you_mean


def name_problems(model_name: object, gpu: object) -> tuple[list[Problem], object]:
    """An unknown model or GPU, and the model's architecture when it is known.

    Needs only the two names, so the loader also runs it when other fields fail validation:
    every problem of a file is reported in one round (`gpu = "RTX-5090"` beside a bad `method`).
    """
    problems: list[Problem] = []
    arch = None
    if isinstance(model_name, str):
        try:
            arch = resolve_model(model_name).arch
        except ModelNotFound as exc:
            problems.append(Problem("model.name", str(exc)))
    if isinstance(gpu, str) and gpu != "auto" and gpu_by_name(gpu) is None:
        close = did_you_mean(gpu, list(GPUS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (known: auto, cpu, {', '.join(GPUS)})"
        problems.append(Problem("hardware.gpu", f"unknown GPU {gpu!r}{hint}"))
    return problems, arch


def semantic_problems(answers: Answers) -> list[Problem]:
    """Every cross-field problem of valid-typed answers (empty when all is well)."""
    problems, arch = name_problems(answers.model.name, answers.hardware.gpu)
    t = answers.training
    if arch is not None and isinstance(t.lora_target_modules, list):
        missing = arch.unmatched_targets(t.lora_target_modules)
        if missing:
            names = sorted({lin.name.rsplit(".", 1)[-1] for lin in arch.layer_linears})
            problems.append(
                Problem(
                    "training.lora_target_modules",
                    f"{', '.join(missing)} not in {answers.model.name} (its linear layers: {', '.join(names)})",
                )
            )
    if arch is not None and t.lora_dropout and t.method != "full":
        targets = t.lora_target_modules or "all-linear"
        if arch.lora_adapts_expert_tensors(targets):
            problems.append(
                Problem(
                    "training.lora_dropout",
                    f"{answers.model.name}'s LoRA targets include its fused expert tensors, which peft adapts "
                    "without dropout (lora.ParamWrapper refuses lora_dropout != 0): set 0, or leave it out",
                )
            )
    if arch is not None and t.attention is not None and t.attention not in arch.attention_kernels:
        problems.append(
            Problem(
                "training.attention",
                f"{answers.model.name} does not accept {t.attention!r} attention (its class supports: "
                f"{', '.join(arch.attention_kernels)})",
            )
        )
    if t.offload not in (None, "none") and t.zero_stage in (0,):
        problems.append(Problem("training.offload", "CPU offload needs DeepSpeed: set zero_stage to 2 or 3"))
    if t.offload == "optimizer+params" and t.zero_stage in (1, 2):
        problems.append(Problem("training.offload", "parameter offload needs zero_stage = 3"))
    if t.compile and t.sharding == "deepspeed" and (t.zero_stage == 3 or t.offload == "optimizer+params"):
        problems.append(
            Problem(
                "training.compile",
                "torch.compile fails under DeepSpeed ZeRO-3 (its partitioned parameters change in place between "
                'forward and backward): use sharding = "fsdp2", zero_stage = 2, or compile = false',
            )
        )
    if answers.objective.kind == "new_vocabulary" and answers.objective.new_tokens == 0:
        problems.append(Problem("objective.new_tokens", "objective new_vocabulary needs new_tokens > 0"))
    if t.method == "qlora" and t.precision in ("fp32",):
        problems.append(Problem("training.precision", "QLoRA computes in 16 bits: use bf16 or fp16-mixed"))
    return problems
