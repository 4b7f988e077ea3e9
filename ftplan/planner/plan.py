"""Answers in, plan out: the pure entry point the CLI and the TUI share."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from ftplan import __version__
from ftplan.planner.answers import METHODS, Answers, Method
from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GPU, GPUS, gpu_by_name
from ftplan.planner.choose import choose_settings, fitting_limits, most_frugal
from ftplan.planner.device import Device
from ftplan.planner.memory import Memory, MemoryModel, MemoryTerm, estimate_memory, usable_memory
from ftplan.planner.model_states import trainable_params
from ftplan.planner.models import resolve_model
from ftplan.planner.recommend import recommend
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import (
    Cost,
    DataSample,
    DataShape,
    Time,
    dropped_share,
    estimate_cost,
    estimate_time,
    sequences_per_epoch,
)
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
    data_sample: DataSample | None = None
    """The data file as the shell read it: examples counted, a sample's tokens (see ftplan/context.py)."""
    data_notes: tuple[str, ...] = ()
    """What the shell could not measure and why (a hub dataset id, a file on another machine)."""
    host_ram: int | None = None
    """This machine's RAM in bytes (used per node when hardware.host_ram_gb is left out)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


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
    memory_terms: list[MemoryTerm] = []
    """Where each byte of ``memory`` and ``cpu_memory`` comes from: a component's terms add up to it
    (empty in plans written before ftplan listed them)."""
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
    context_window: int | None = None
    """The config's max_position_embeddings (None when the config does not say)."""


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
    host_ram: int | None = None
    """Host RAM per node in bytes the plans are held against (None: not known, not checked)."""


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


def hardware_needed(
    method: Method, answers: Answers, arch: ModelArch, gpu: GPU, data: DataShape, host_ram: int | None = None
) -> str:
    """The fewest GPUs of this type (up to 64) on which the method fits with its ladder;
    failing that, the fewest of the catalog's largest GPU."""
    if gpu.name == "cpu":
        return "cpu"
    found = _fewest_gpus(method, answers, arch, gpu, data, host_ram)
    if not found and gpu.name != LARGEST_GPU:
        found = _fewest_gpus(method, answers, arch, GPUS[LARGEST_GPU], data, host_ram)
    return found


def _fewest_gpus(
    method: Method, answers: Answers, arch: ModelArch, gpu: GPU, data: DataShape, host_ram: int | None = None
) -> str:
    for count in (1, 2, 4, 8, 16, 32, 64):
        per_node = min(count, 8)
        device = Device(gpu, per_node, count // per_node)
        s = choose_settings(method, answers, arch, device, data, host_ram)
        mem = estimate_memory(arch, s, device)
        if mem.total <= usable_memory(device) and host_memory_needed(mem, device) <= (host_ram or math.inf):
            stage = f", ZeRO-{s.zero_stage}" if s.zero_stage else ""
            if s.uses_fsdp:
                stage = f", FSDP2 zero_stage {s.zero_stage}"
            off = f", offload {s.offload}" if s.offload != "none" else ""
            nodes = f" ({count // per_node} nodes)" if count > 8 else ""
            return f"{count}× {gpu.name}{nodes}{stage}{off}".replace(", ", " (", 1).rstrip() + (
                ")" if stage or off else ""
            )
    return ""


def host_memory_needed(mem: Memory, device: Device) -> int:
    """Host RAM per node the plan needs: the offloaded states (``cpu_memory``), and on the CPU
    the whole training state of every process on the node."""
    if device.is_cpu:
        return mem.total * device.gpus_per_node + mem.cpu_memory
    return mem.cpu_memory


def plan_method(
    method: Method,
    answers: Answers,
    arch: ModelArch,
    device: Device,
    data: DataShape,
    price: float,
    host_ram: int | None = None,
    context_window: int | None = None,
) -> MethodPlan:
    s = choose_settings(method, answers, arch, device, data, host_ram)
    memory = MemoryModel(arch, s, device)
    mem, memory_terms = memory.itemise()
    frugal = most_frugal(method, answers, s, device, data)
    longest, largest = fitting_limits(arch, frugal, device, memory if frugal == s else None)
    gpu_fits = device.is_cpu or mem.total <= usable_memory(device)
    host_need = host_memory_needed(mem, device)
    fits = gpu_fits and (host_ram is None or host_need <= host_ram)
    time = estimate_time(arch, s, device, data)
    cost = estimate_cost(arch, s, device, time, price, answers.objective.variants, answers.budget.usd)
    warnings = method_warnings(
        answers, arch, s, device, mem, gpu_fits, host_need=host_need, host_ram=host_ram, context_window=context_window
    )
    dropped = 0.0 if s.packing else dropped_share(data, s.max_seq_len)
    if dropped:
        warnings.append(
            f"{dropped:.0%} of the examples have a prompt of max_seq_len ({s.max_seq_len:,}) tokens or more: "
            "truncation cuts their whole answer away and TRL drops them; the steps count the rest "
            "(raise max_seq_len or shorten those prompts)"
        )
    return MethodPlan(
        trainable_params=trainable_params(arch, s),
        settings=s,
        memory=mem,
        cpu_memory=mem.cpu_memory,
        fits=fits,
        time=time,
        cost=cost,
        warnings=warnings,
        memory_phases=mem.phases,
        memory_terms=memory_terms,
        max_seq_len_that_fits=longest,
        max_micro_batch_that_fits=largest,
        hardware_needed=hardware_needed(method, answers, arch, device.gpu, data, host_ram) if not fits else "",
    )


def make_plan(answers: Answers, context: Context = Context()) -> Plan:
    """Plan all three methods and recommend one. Pure: same answers, same plan."""
    model = resolve_model(answers.model.name)
    arch = model.arch
    gpu, detected, notes = resolve_gpu(answers, context)
    hw = answers.hardware
    per_node = gpus_per_node(answers, context, notes)
    device = Device(gpu, per_node, hw.nodes)
    host_ram = host_ram_per_node(answers, context, notes)
    data, sample = data_shape(answers, context, notes)
    examples, avg_tokens = data.examples, data.avg_tokens
    window = context_window(model.config)
    price = answers.budget.gpu_hour_usd or gpu.usd_per_hour
    methods = {m: plan_method(m, answers, arch, device, data, price, host_ram, window) for m in METHODS}
    ratio = methods["full"].time.flops / max(methods["lora"].time.flops, 1.0)
    notes.append(
        f"Equal epochs are not equal compute: full fine-tuning spends {ratio:.1f}× LoRA's FLOPs on the same "
        "data; compare the methods' quality at equal FLOPs or wall-clock, not equal epochs."
    )
    desc = f"{device.world_size}× {gpu.name}" if gpu.name != "cpu" else "the CPU"
    method, reasons = recommend(answers, methods, examples, desc)
    filled = answers.model_dump(mode="json")
    filled["hardware"]["gpu"] = gpu.name
    filled["hardware"]["gpus_per_node"] = per_node
    filled["data"].update(examples=examples, avg_tokens=avg_tokens, epochs=methods[method].settings.epochs)
    filled["budget"]["gpu_hour_usd"] = price
    chosen = methods[method].settings.model_dump(mode="json")  # what the plan's JSON shows
    for key in filled["training"]:
        if filled["training"][key] is None and key in chosen:
            filled["training"][key] = chosen[key]
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
            context_window=window,
        ),
        hardware=HardwareSummary(
            gpu=gpu.name,
            gpu_memory=gpu.memory,
            gpus_per_node=per_node,
            nodes=hw.nodes,
            world_size=device.world_size,
            usd_per_gpu_hour=price,
            tflops=gpu.tflops,
            bf16=gpu.bf16,
            detected=detected,
            host_ram=host_ram,
        ),
        data=data_summary(answers, data, sample, methods[method].settings),
        methods=methods,
        recommendation={"method": method, "reasons": reasons},
        notes=notes,
    )


def gpus_per_node(answers: Answers, context: Context, notes: list[str]) -> int:
    """hardware.gpus_per_node, or with gpu = "auto" and the count left out, the GPUs detected
    here (as the app fills it in)."""
    hw = answers.hardware
    if hw.gpu == "auto" and context.detected_gpus > 1 and "gpus_per_node" not in hw.model_fields_set:
        notes.append(f"hardware.gpus_per_node: {context.detected_gpus} GPUs detected here; planning for all of them.")
        return context.detected_gpus
    return hw.gpus_per_node


def host_ram_per_node(answers: Answers, context: Context, notes: list[str]) -> int | None:
    """hardware.host_ram_gb in bytes, or this machine's RAM; None when neither is known."""
    if answers.hardware.host_ram_gb is not None:
        return int(answers.hardware.host_ram_gb * 1e9)
    if context.host_ram:
        notes.append(
            f"hardware.host_ram_gb: {context.host_ram / 1e9:,.1f} GB detected on this machine; "
            "set it when the run goes on another machine."
        )
    return context.host_ram


def context_window(config: dict) -> int | None:
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def data_shape(answers: Answers, context: Context, notes: list[str]) -> tuple[DataShape, DataSample | None]:
    """The data as the planner counts it: the answers' figures first, then the measured file,
    then defaults (each default named in a note)."""
    d = answers.data
    sample = context.data_sample
    notes.extend(context.data_notes)
    examples = d.examples or (sample.examples if sample else None) or context.examples
    avg_tokens = d.avg_tokens or (sample.mean_tokens if sample else None) or context.avg_tokens
    if not examples:
        notes.append(f"data.examples: not given; assuming {DEFAULT_EXAMPLES:,}.")
    if not avg_tokens:
        notes.append(f"data.avg_tokens: not given; assuming {DEFAULT_AVG_TOKENS}.")
    examples, avg_tokens = examples or DEFAULT_EXAMPLES, avg_tokens or DEFAULT_AVG_TOKENS
    if sample is None or d.avg_tokens:
        return DataShape(examples, avg_tokens), None  # given figures win over the file's
    how = sample.tokenizer or "characters / 4 (no tokenizer for the model on this machine: an estimate)"
    part = "" if sample.checked == sample.examples else f"; {sample.checked:,} of {sample.examples:,} examples checked"
    notes.append(
        f"data.path: {sample.examples:,} examples; tokens of {len(sample.lengths):,} of them counted with {how}{part}."
    )
    return DataShape.from_sample(examples, avg_tokens, sample.lengths, sample.prompts), sample


def _quantile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def data_summary(answers: Answers, data: DataShape, sample: DataSample | None, s: Settings) -> dict:
    """The plan's "data" section: per epoch, after truncation at max_seq_len."""
    d = answers.data
    longest = s.max_seq_len
    out = {
        "examples": data.examples,
        "avg_tokens": data.avg_tokens,
        "path": d.path,
        "format": sample.format if sample else d.format,
        "measured": sample is not None,
        "tokenizer": sample.tokenizer if sample else None,
        "sampled": len(sample.lengths) if sample else 0,
        "sequences": sequences_per_epoch(data, s),
        "packing": s.packing,
    }
    if sample is None:
        real = min(data.avg_tokens, longest)
        out.update(
            tokens=data.examples * real,
            tokens_trained=data.examples * real if d.train_on == "all" or d.format == "text" else None,
            train_on=d.train_on,
            length_p50=None,
            length_p95=None,
            length_max=None,
            truncated_share=None,
        )
        return out
    n = len(sample.lengths)
    ordered = sorted(sample.lengths)
    kept = [min(length, longest) for length in sample.lengths]
    # Truncation cuts the end, where the answer is: the trained tokens lost are the overflow.
    trained = [max(0, t - max(0, length - longest)) for length, t in zip(sample.lengths, sample.trained, strict=True)]
    out.update(
        tokens=round(data.examples * sum(kept) / n),
        tokens_trained=round(data.examples * sum(trained) / n),
        train_on=sample.train_on,
        length_p50=_quantile(ordered, 0.5),
        length_p95=_quantile(ordered, 0.95),
        length_max=ordered[-1],
        truncated_share=sum(length > longest for length in sample.lengths) / n,
    )
    return out
