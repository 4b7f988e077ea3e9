"""Published peak-memory measurements (docs/sources.md, "Published measurements") next to the planner's prediction (not fitted).

Each row states the settings the planner is given for the reference setup; where the source
does not say (sequence lengths of an unpacked dataset, the optimizer) the assumption is in
``note``. The planner predicts HF Trainer + peft runs; the torchtune and unsloth rows use their
own kernels (chunked cross-entropy, compiled LoRA, fused QLoRA), so they check shape, not digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB = 10**9
QV = ["q_proj", "v_proj"]


@dataclass(frozen=True)
class Reference:
    setup: str
    model: str
    gpu: str
    measured_gb: float
    settings: dict
    gpus: int = 1
    source: str = ""
    note: str = ""
    kind: str = "peak"
    """"peak": compare peak memory; "max_seq": compare the longest sequence that fits (tokens)."""
    measured_tokens: int = 0
    extra: dict = field(default_factory=dict)


def checkpointed(method: str, lora_r: int, batch: int, seq: int | None = None, **more) -> dict:
    """The planner settings of a reference run: every source's runs use gradient checkpointing;
    ``seq`` is left out where the row asks for the longest sequence that fits."""
    settings = dict(method=method, lora_r=lora_r, micro_batch_size=batch, gradient_checkpointing=True, **more)
    return settings if seq is None else {**settings, "max_seq_len": seq}


UNSLOTH_QLORA = checkpointed(
    "qlora", 32, batch=1, attention="flash_attention_2", optimizer="adamw_8bit", lora_dropout=0.0
)
"""unsloth's longest-sequence benchmark setup (README, Jan 2025), on a 24 GB and an 80 GB GPU."""

REFERENCES: tuple[Reference, ...] = (
    Reference(
        "Llama-2-7B LoRA r8 q,v bf16 b4 s2048 ckpt, 1x RTX 4090",
        "meta-llama/Llama-2-7b-hf",
        "RTX-4090",
        21.3,
        checkpointed("lora", 8, batch=4, seq=2048, lora_target_modules=QV),
        source="torchtune README (May 2024)",
    ),
    Reference(
        "Llama-2-7B QLoRA r8 q,k,v,o+MLP b4 s2048 compile, 1x RTX 4090",
        "meta-llama/Llama-2-7b-hf",
        "RTX-4090",
        12.3,
        checkpointed("qlora", 8, batch=4, seq=2048, optimizer="adamw_torch_fused"),
        source="torchtune README (May 2024)",
        note="torchtune keeps QLoRA activations in bf16; HF + prepare_model_for_kbit_training keeps fp32",
    ),
    Reference(
        "Llama-2-7B LoRA r8 q,v bf16 b2 AdamW ckpt, alpaca unpacked",
        "meta-llama/Llama-2-7b-hf",
        "A100-80GB",
        15.57,
        checkpointed("lora", 8, batch=2, seq=512, lora_target_modules=QV),
        source="torchtune docs tutorials/lora_finetune.rst (reserved)",
        note="unpacked alpaca: s=512 assumed (longest batches)",
    ),
    Reference(
        "Llama-2-7B QLoRA r8 q,v b2 ckpt, alpaca unpacked",
        "meta-llama/Llama-2-7b-hf",
        "A100-80GB",
        9.29,
        checkpointed("qlora", 8, batch=2, seq=512, lora_target_modules=QV, optimizer="adamw_torch_fused"),
        source="torchtune docs tutorials/qlora_finetune.rst (reserved)",
        note="s=512 assumed",
    ),
    Reference(
        "Llama-3.1-8B QLoRA r32 all-linear b1 FA2: longest sequence on 24 GB",
        "meta-llama/Llama-3.1-8B",
        "RTX-4090",
        0.0,
        UNSLOTH_QLORA,
        source="unsloth README (Jan 2025)",
        kind="max_seq",
        measured_tokens=5789,
        note="unsloth: fused kernels, chunked cross-entropy, offloaded checkpoints; shape check only",
    ),
    Reference(
        "Llama-3.1-8B QLoRA r32 all-linear b1 FA2: longest sequence on 80 GB",
        "meta-llama/Llama-3.1-8B",
        "A100-80GB",
        0.0,
        UNSLOTH_QLORA,
        source="unsloth README (Jan 2025)",
        kind="max_seq",
        measured_tokens=28454,
    ),
    Reference(
        "Llama-2-70B LoRA r8 all-linear s2048 FA2 ckpt ZeRO-3, 8x H100, b8",
        "meta-llama/Llama-2-70b-hf",
        "H100-SXM",
        64.0,
        checkpointed("lora", 8, batch=8, seq=2048, attention="flash_attention_2", zero_stage=3),
        gpus=8,
        source="peft docs accelerate/deepspeed.md (nvidia-smi)",
    ),
    Reference(
        "Llama-2-70B QLoRA r8 all-linear ZeRO-3, 2x A100-40GB, b2",
        "meta-llama/Llama-2-70b-hf",
        "A100-40GB",
        36.6,
        checkpointed("qlora", 8, batch=2, seq=2048, attention="flash_attention_2", zero_stage=3),
        gpus=2,
        source="peft docs accelerate/deepspeed.md (nvidia-smi)",
    ),
    Reference(
        "Llama-3.1-8B LoRA r16 all-linear b1 s2048 ckpt (sanity, no measurement)",
        "meta-llama/Llama-3.1-8B",
        "A100-80GB",
        0.0,
        checkpointed("lora", 16, batch=1, seq=2048),
        source="16 GB bf16 weights + 3.2 GB logits (2048 x 128256 x 12 B) + 1 GB CUDA context",
    ),
)


def predict_reference(ref: Reference) -> dict:
    """The planner's prediction for a reference row."""
    from ftplan.planner.catalog.gpus import GPUS
    from ftplan.planner.choose import longest_sequence_that_fits
    from ftplan.planner.device import Device
    from ftplan.planner.memory import estimate_memory
    from ftplan.planner.models import resolve_model
    from ftplan.planner.settings import Settings

    arch = resolve_model(ref.model).arch
    base = dict(precision="bf16", optimizer="adamw_torch", gradient_accumulation_steps=1, lora_dropout=0.05)
    base.update(ref.settings)
    if "lora_alpha" not in base:
        base["lora_alpha"] = 2.0 * base.get("lora_r", 16)
    s = Settings(**base)
    per_node = min(ref.gpus, 8)
    device = Device(GPUS[ref.gpu], per_node, max(1, ref.gpus // per_node))
    if ref.kind == "max_seq":
        tokens = longest_sequence_that_fits(arch, s, device)
        return {"predicted_tokens": tokens, "predicted_trl_tokens": 0, "measured_tokens": ref.measured_tokens}
    est = estimate_memory(arch, s, device, loss="hf")
    trl = estimate_memory(arch, s, device, loss="trl_fused")
    return {
        "predicted_trl_gb": trl.total / GB,
        "predicted_gb": est.total / GB,
        "measured_gb": ref.measured_gb,
        "components": est.model_dump(),
        "peak_phase": est.peak_phase,
    }
