"""Answers in, plan out: the pure entry point the CLI and the TUI share."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from ftplan import __version__
from ftplan.planner.answers import METHODS, Answers, Method
from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GPU, GPUS, gpu_by_name
from ftplan.planner.choose import choose_settings, fitting_limits, most_frugal
from ftplan.planner.memory import Device, MemoryModel, estimate_memory, trainable_params, usable_memory
from ftplan.planner.models import resolve_model
from ftplan.planner.recommend import recommend
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import DataShape, estimate_cost, estimate_time
from ftplan.planner.warnings import method_warnings

DEFAULT_GPU = "A100-80GB"
DEFAULT_EXAMPLES = 10_000
DEFAULT_AVG_TOKENS = 512


@dataclass(frozen=True)
class Context:
    """What the shells found out before planning (the planner itself does no I/O)."""

    detected_gpu: str | None = None
    detected_gpus: int = 0
    examples: int | None = None
    avg_tokens: int | None = None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Memory(_Frozen):
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    total: int


class Time(_Frozen):
    tokens: int
    flops: float
    hours: float
    gpu_hours: float
    tokens_per_second: float
    steps: int


class Cost(_Frozen):
    usd: float
    usd_per_gpu_hour: float
    checkpoint_gb: float
    checkpoints_kept: int
    checkpoint_storage_usd_month: float
    artifact_gb: float
    serving_variants: int
    serving_storage_gb: float
    serving_gpus: int
    serving_usd_month: float
    experiment_runs: int
    experiments_usd: float
    runs_within_budget: int | None


class MethodPlan(_Frozen):
    trainable_params: int
    settings: Settings
    memory: Memory
    cpu_memory: int
    fits: bool
    time: Time
    cost: Cost
    warnings: list[str]
    memory_phases: dict[str, int]
    max_seq_len_that_fits: int
    max_micro_batch_that_fits: int
    hardware_needed: str
    """The smallest setup of this GPU type that fits, e.g. "4× A100-80GB (ZeRO-3)"."""


class ModelSummary(_Frozen):
    name: str
    source: str
    model_type: str
    params: int
    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    experts: int
    largest_layer_params: int


class HardwareSummary(_Frozen):
    gpu: str
    gpu_memory: int
    gpus_per_node: int
    nodes: int
    world_size: int
    usd_per_gpu_hour: float
    tflops: float
    bf16: bool
    detected: bool


class Recommendation(_Frozen):
    method: Method
    reasons: list[str]


class Plan(_Frozen):
    ftplan_version: str
    answers: dict
    model: ModelSummary
    hardware: HardwareSummary
    data: dict
    methods: dict[str, MethodPlan]
    recommendation: Recommendation
    notes: list[str]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @property
    def chosen(self) -> MethodPlan:
        return self.methods[self.recommendation.method]


def resolve_gpu(answers: Answers, context: Context) -> tuple[GPU, bool, list[str]]:
    notes = []
    if answers.hardware.gpu != "auto":
        return gpu_by_name(answers.hardware.gpu), False, notes
    if context.detected_gpu:
        gpu = gpu_by_name(context.detected_gpu, detected=True)
        if gpu is not None:
            notes.append(f"hardware.gpu: detected {context.detected_gpu} ({gpu.name}).")
            return gpu, True, notes
        notes.append(f"hardware.gpu: detected {context.detected_gpu}, not in the catalog; planning for {DEFAULT_GPU}.")
    else:
        notes.append(f"hardware.gpu: no GPU detected here; planning for {DEFAULT_GPU} (set hardware.gpu to change).")
    return GPUS[DEFAULT_GPU], False, notes


LARGEST_GPU = "H200"


def hardware_needed(method: Method, answers: Answers, arch: ModelArch, gpu: GPU, data: DataShape) -> str:
    """The fewest GPUs of this type (up to 64) on which the method fits with its ladder;
    failing that, the fewest of the catalog's largest GPU."""
    if gpu.name == "cpu":
        return "cpu"
    found = _fewest_gpus(method, answers, arch, gpu, data)
    if not found and gpu.name != LARGEST_GPU:
        found = _fewest_gpus(method, answers, arch, GPUS[LARGEST_GPU], data)
    return found


def _fewest_gpus(method: Method, answers: Answers, arch: ModelArch, gpu: GPU, data: DataShape) -> str:
    for count in (1, 2, 4, 8, 16, 32, 64):
        per_node = min(count, 8)
        device = Device(gpu, per_node, count // per_node)
        s = choose_settings(method, answers, arch, device, data)
        if estimate_memory(arch, s, device).total <= usable_memory(device):
            stage = f", ZeRO-{s.zero_stage}" if s.zero_stage else ""
            off = f", offload {s.offload}" if s.offload != "none" else ""
            nodes = f" ({count // per_node} nodes)" if count > 8 else ""
            return f"{count}× {gpu.name}{nodes}{stage}{off}".replace(", ", " (", 1).rstrip() + (
                ")" if stage or off else ""
            )
    return ""


def plan_method(
    method: Method, answers: Answers, arch: ModelArch, device: Device, data: DataShape, price: float
) -> MethodPlan:
    s = choose_settings(method, answers, arch, device, data)
    memory = MemoryModel(arch, s, device)
    mem = memory.estimate()
    frugal = most_frugal(method, answers, s, device, data)
    longest, largest = fitting_limits(arch, frugal, device, memory if frugal == s else None)
    fits = device.is_cpu or mem.total <= usable_memory(device)
    time = estimate_time(arch, s, device, data)
    cost = estimate_cost(arch, s, device, time, price, answers.objective.variants, answers.budget.usd)
    return MethodPlan(
        trainable_params=trainable_params(arch, s),
        settings=s,
        memory=Memory(**mem.as_dict()),
        cpu_memory=mem.cpu_memory,
        fits=fits,
        time=Time(**time.as_dict()),
        cost=Cost(**cost.as_dict()),
        warnings=method_warnings(answers, arch, s, device, mem, fits),
        memory_phases=mem.phases,
        max_seq_len_that_fits=longest,
        max_micro_batch_that_fits=largest,
        hardware_needed=hardware_needed(method, answers, arch, device.gpu, data) if not fits else "",
    )


def make_plan(answers: Answers, context: Context = Context()) -> Plan:
    """Plan all three methods and recommend one. Pure: same answers, same plan."""
    model = resolve_model(answers.model.name)
    arch = model.arch
    gpu, detected, notes = resolve_gpu(answers, context)
    hw = answers.hardware
    device = Device(gpu, hw.gpus_per_node, hw.nodes)
    examples = answers.data.examples or context.examples or DEFAULT_EXAMPLES
    avg_tokens = answers.data.avg_tokens or context.avg_tokens or DEFAULT_AVG_TOKENS
    if not answers.data.examples and not context.examples:
        notes.append(f"data.examples: not given; assuming {DEFAULT_EXAMPLES:,}.")
    if not answers.data.avg_tokens and not context.avg_tokens:
        notes.append(f"data.avg_tokens: not given; assuming {DEFAULT_AVG_TOKENS}.")
    data = DataShape(examples, avg_tokens)
    price = answers.budget.gpu_hour_usd or gpu.usd_per_hour
    methods = {m: plan_method(m, answers, arch, device, data, price) for m in METHODS}
    ratio = methods["full"].time.flops / max(methods["lora"].time.flops, 1.0)
    notes.append(
        f"Equal epochs are not equal compute: full fine-tuning spends {ratio:.1f}× LoRA's FLOPs on the same "
        "data; compare the methods' quality at equal FLOPs or wall-clock, not equal epochs."
    )
    desc = f"{device.world_size}× {gpu.name}" if gpu.name != "cpu" else "the CPU"
    method, reasons = recommend(answers, methods, examples, desc)
    filled = answers.model_dump(mode="json")
    filled["hardware"]["gpu"] = gpu.name
    filled["data"].update(examples=examples, avg_tokens=avg_tokens, epochs=methods[method].settings.epochs)
    filled["budget"]["gpu_hour_usd"] = price
    chosen = methods[method].settings
    for key in filled["training"]:
        if filled["training"][key] is None and hasattr(chosen, key):
            filled["training"][key] = getattr(chosen, key)
    filled["training"]["method"] = method
    return Plan(
        ftplan_version=__version__,
        answers=filled,
        model=ModelSummary(
            name=model.name,
            source=model.source,
            model_type=arch.model_type,
            params=arch.params,
            layers=arch.layers,
            hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size,
            heads=arch.heads,
            kv_heads=arch.kv_heads,
            head_dim=arch.head_dim,
            vocab_size=arch.vocab_size,
            tied_embeddings=arch.tied_embeddings,
            experts=arch.experts,
            largest_layer_params=arch.largest_layer_params,
        ),
        hardware=HardwareSummary(
            gpu=gpu.name,
            gpu_memory=gpu.memory,
            gpus_per_node=hw.gpus_per_node,
            nodes=hw.nodes,
            world_size=device.world_size,
            usd_per_gpu_hour=price,
            tflops=gpu.tflops,
            bf16=gpu.bf16,
            detected=detected,
        ),
        data={"examples": examples, "avg_tokens": avg_tokens, "path": answers.data.path, "format": answers.data.format},
        methods=methods,
        recommendation={"method": method, "reasons": reasons},
        notes=notes,
    )
