"""Predicted (planner) against measured (real CPU steps) memory on a grid of tiny Llama configs.

Shared by ``tests/probe/test_memory_calibration.py`` and ``benchmarks/estimator_accuracy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftplan.probe.measure import StepMemory, measure_config, tiny_llama_config


@dataclass(frozen=True)
class Case:
    method: str = "full"
    precision: str = "fp32"
    checkpointing: bool = False
    attention: str = "sdpa"
    vocab: int = 512
    micro_batch: int = 1
    seq: int = 128
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    lora_r: int = 8
    lora_dropout: float = 0.0
    optimizer: str = "adamw_torch"
    tied: bool = False
    accumulation: int = 1
    loss: str = "hf"
    """"hf": the model's own loss (HF Trainer); "trl": TRL SFTTrainer's fused LM head (train.py)."""
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        parts = [
            self.method,
            self.precision,
            "ckpt" if self.checkpointing else "nockpt",
            self.attention,
            f"V{self.vocab}",
            f"b{self.micro_batch}",
            f"s{self.seq}",
            f"h{self.hidden}",
            f"L{self.layers}",
        ]
        if self.lora_dropout:
            parts.append(f"drop{self.lora_dropout}")
        if self.tied:
            parts.append("tied")
        if self.optimizer != "adamw_torch":
            parts.append(self.optimizer)
        if self.accumulation > 1:
            parts.append(f"ga{self.accumulation}")
        if self.loss != "hf":
            parts.append(f"loss-{self.loss}")
        return " ".join(parts)

    def config(self) -> dict:
        return tiny_llama_config(
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            kv_heads=self.kv_heads,
            vocab=self.vocab,
            tied=self.tied,
        )

    def settings(self):
        from ftplan.planner.settings import Settings

        return Settings(
            method=self.method,
            precision=self.precision,
            optimizer=self.optimizer,
            micro_batch_size=self.micro_batch,
            gradient_accumulation_steps=self.accumulation,
            gradient_checkpointing=self.checkpointing,
            attention=self.attention,
            max_seq_len=self.seq,
            lora_r=self.lora_r,
            lora_alpha=2.0 * self.lora_r,
            lora_dropout=self.lora_dropout,
            lora_target_modules="all-linear",
        )


# 23 cases: every method x precision x checkpointing x attention x vocabulary effect is covered
# at least once, micro-batch 1..4 and sequence 64..512, hidden 64..256, 2..4 layers.
GRID: tuple[Case, ...] = (
    Case("full", "fp32", False, "sdpa", 512, 2, 256, 128, 2),
    Case("full", "fp32", True, "sdpa", 32000, 1, 128, 64, 2),
    Case("full", "bf16", False, "sdpa", 512, 2, 128, 128, 2),
    Case("full", "bf16", True, "eager", 512, 1, 512, 64, 2),
    Case("full", "bf16", False, "sdpa", 32000, 4, 64, 64, 2),
    Case("full", "fp32", False, "eager", 512, 2, 256, 64, 4),
    Case("lora", "fp32", False, "sdpa", 512, 4, 64, 256, 2),
    Case("lora", "fp32", False, "eager", 512, 1, 512, 64, 3),
    Case("lora", "bf16", True, "sdpa", 32000, 2, 64, 128, 2),
    Case("lora", "bf16", False, "sdpa", 512, 1, 256, 128, 4),
    Case("lora", "bf16", False, "eager", 32000, 1, 128, 64, 3),
    Case("lora", "fp32", True, "sdpa", 512, 1, 256, 256, 4),
    Case("lora", "bf16", False, "sdpa", 512, 2, 128, 128, 2, lora_dropout=0.05),
    Case("lora", "fp32", True, "sdpa", 32000, 1, 128, 128, 2, lora_dropout=0.05),
    Case("qlora", "bf16", True, "sdpa", 512, 1, 256, 128, 2),
    Case("qlora", "bf16", False, "sdpa", 32000, 1, 128, 128, 2),
    Case("qlora", "fp32", False, "eager", 512, 1, 256, 128, 2, lora_dropout=0.05),
    Case("full", "bf16", True, "sdpa", 32000, 2, 64, 64, 2, tied=True),
    # gradient accumulation: gradients are held through the next micro-batch's forward/backward
    Case("full", "fp32", False, "sdpa", 512, 1, 128, 128, 2, accumulation=2),
    Case("lora", "bf16", True, "sdpa", 512, 1, 256, 128, 2, accumulation=2),
    # TRL SFTTrainer's fused LM head (what the exported train.py runs)
    Case("lora", "fp32", False, "sdpa", 512, 2, 64, 64, 2, lora_dropout=0.05, accumulation=2, loss="trl"),
    Case("full", "bf16", False, "sdpa", 32000, 1, 128, 64, 2, loss="trl"),
    Case("lora", "bf16", True, "sdpa", 32000, 1, 128, 128, 2, loss="trl"),
)


@dataclass
class Result:
    case: Case
    predicted: int
    measured: int
    predicted_phases: dict
    measured_phases: dict
    predicted_components: dict
    measured_components: dict
    measurement: StepMemory | None = None

    @property
    def error(self) -> float:
        """Relative error of the prediction, (predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured


def predict(case: Case):
    from ftplan.planner.arch import arch_from_config
    from ftplan.planner.catalog.gpus import CPU
    from ftplan.planner.device import Device
    from ftplan.planner.memory import estimate_memory

    loss = "trl_fused" if case.loss == "trl" else "hf"
    return estimate_memory(arch_from_config(case.config()), case.settings(), Device(CPU), loss=loss)


def run_case(case: Case) -> Result:
    est = predict(case)
    m = measure_config(
        case.config(),
        method=case.method,
        precision=case.precision,
        attention=case.attention,
        gradient_checkpointing=case.checkpointing,
        micro_batch_size=case.micro_batch,
        seq_len=case.seq,
        optimizer=case.optimizer,
        lora_r=case.lora_r,
        lora_dropout=case.lora_dropout,
        accumulation=case.accumulation,
        loss=case.loss,
    )
    comps = est.model_dump()
    comps.pop("overhead")
    comps.pop("total")
    return Result(
        case=case,
        predicted=est.total - est.overhead,
        measured=m.peak,
        predicted_phases=dict(est.phases),
        measured_phases=dict(m.phases),
        predicted_components=comps,
        measured_components=m.components,
        measurement=m,
    )


def quiet() -> None:
    """Silence transformers' progress bars and warnings during measurements."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


# ---- any architecture: the card's activation figures against real steps -------------------------

ARCH_TYPES = (
    "llama",
    "qwen3",
    "qwen3_moe",
    "gemma3_text",
    "phi3",
    "olmo2",
    "mixtral",
    "gpt_oss",
    "granite",
    "smollm3",
)
"""Model types ``benchmarks/estimator_accuracy.py --archs`` measures (tiny, random weights)."""
TINY_ARCH = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "max_position_embeddings": 1024,
    "pad_token_id": 0,
}
"""Every linear width a multiple of 32: bitsandbytes' CPU 4-bit kernel needs it (QLoRA)."""
TINY_MOE = {"num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
TINY_ARCH_OVERRIDES = {
    "qwen3_moe": TINY_MOE,
    "mixtral": TINY_MOE,
    "gpt_oss": {**TINY_MOE, "sliding_window": 32},
    "gemma3_text": {"sliding_window": 32},
}
_NOT_CONFIG = ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype")


@dataclass(frozen=True)
class ArchCase:
    """One method of one tiny architecture, planned from its config.json and measured on the CPU."""

    model_type: str
    method: str = "lora"
    checkpointing: bool = False
    precision: str = "bf16"
    micro_batch: int = 2
    seq: int = 256
    lora_r: int = 8

    @property
    def name(self) -> str:
        ckpt = "ckpt" if self.checkpointing else "nockpt"
        return f"{self.model_type} {self.method} {ckpt} {self.precision} b{self.micro_batch} s{self.seq}"

    def config(self) -> dict:
        """The tiny model's config.json (transformers' own serialisation of its config class)."""
        from transformers import AutoConfig

        values = {**TINY_ARCH, **TINY_ARCH_OVERRIDES.get(self.model_type, {})}
        config = AutoConfig.for_model(self.model_type, **values).to_dict()
        return {k: v for k, v in config.items() if k not in _NOT_CONFIG}

    def settings(self, arch):
        """The plan's settings: SDPA where the class accepts it (else eager), the model's own loss."""
        from ftplan.planner.settings import Settings

        return Settings(
            method=self.method,
            precision=self.precision,
            optimizer="adamw_torch",
            micro_batch_size=self.micro_batch,
            gradient_checkpointing=self.checkpointing,
            attention="sdpa" if "sdpa" in arch.attention_kernels else "eager",
            max_seq_len=self.seq,
            lora_r=self.lora_r,
            lora_alpha=2.0 * self.lora_r,
            lora_dropout=0.0,
            lora_target_modules="all-linear",
        )


@dataclass
class ArchResult:
    case: ArchCase
    predicted: int
    measured: int
    predicted_activations: int
    measured_activations: int
    predicted_phase: str
    measured_phase: str

    @property
    def error(self) -> float:
        """Relative error of the planned peak, (predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured

    @property
    def activation_error(self) -> float:
        """Relative error of the activation bytes at each side's peak."""
        return (self.predicted_activations - self.measured_activations) / self.measured_activations


def plan_arch_case(case: ArchCase, folder):
    """The planner's CPU estimate for ``case``, planned from ``folder/config.json`` as ``ftplan probe``
    plans a project: the model resolved like an answers file's local folder (its card derived from the
    model's code, or the hand-written accounting), ``Device(CPU)``."""
    from ftplan.planner.catalog.gpus import CPU
    from ftplan.planner.memory import Device, estimate_memory
    from ftplan.planner.models import resolve_model

    arch = resolve_model(str(folder)).arch
    settings = case.settings(arch)
    return estimate_memory(arch, settings, Device(CPU), loss="hf"), settings


def run_arch_case(case: ArchCase, root) -> ArchResult:
    """Plan ``case`` from a config.json written under ``root`` and measure one steady-state CPU step."""
    import json
    from pathlib import Path

    config = case.config()
    folder = Path(root) / case.model_type
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    est, settings = plan_arch_case(case, folder)
    m = measure_config(
        config,
        method=case.method,
        precision=case.precision,
        attention=settings.attention,
        gradient_checkpointing=case.checkpointing,
        micro_batch_size=case.micro_batch,
        seq_len=case.seq,
        lora_r=case.lora_r,
        loss="hf",
    )
    return ArchResult(
        case=case,
        predicted=est.total - est.overhead,
        measured=m.peak,
        predicted_activations=est.activations,
        measured_activations=m.components["activations"],
        predicted_phase=est.peak_phase,
        measured_phase=m.peak_phase,
    )
