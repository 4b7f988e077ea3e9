"""Predicted (planner) against measured (real CPU steps) memory on a grid of tiny Llama configs.

Shared by ``tests/test_memory_calibration.py`` and ``benchmarks/estimator_accuracy.py``.
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
