"""Predicted vs published training throughput (docs/sources.md, "Published measurements").

The estimator is built from FLOPs and the GPU's matmul ceiling; these rows check its shape
against runs others measured. Rows marked "compile" used torch.compile and chunked
cross-entropy, which the exported HF recipe does not: ftplan predicts the plain recipe, so
it should land below them.

Run: python benchmarks/throughput_reference.py (also printed by estimator_accuracy.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftplan.planner.catalog.gpus import GPUS  # noqa: E402
from ftplan.planner.device import Device
from ftplan.planner.models import resolve_model  # noqa: E402
from ftplan.planner.settings import Settings  # noqa: E402
from ftplan.planner.timecost import DataShape, estimate_time  # noqa: E402

LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# (setup, model, gpu, settings, measured tokens/s, source)
REFERENCES = [
    (
        "Llama-3.2-3B full, bf16, b2, s4096 packed, no ckpt, no compile, 1x A100",
        "meta-llama/Llama-3.2-3B",
        "A100-80GB",
        dict(method="full", micro_batch_size=2, max_seq_len=4096, gradient_checkpointing=False),
        7075,
        "torchtune README, optimization flags",
    ),
    (
        "same + compile + chunked CE + checkpointing",
        "meta-llama/Llama-3.2-3B",
        "A100-80GB",
        dict(method="full", micro_batch_size=2, max_seq_len=4096, gradient_checkpointing=True),
        7210,
        "torchtune README (compile)",
    ),
    (
        "LoRA r64 q,v,o+MLP (compile, chunked CE, ckpt)",
        "meta-llama/Llama-3.2-3B",
        "A100-80GB",
        dict(method="lora", lora_r=64, lora_target_modules=LORA_TARGETS, micro_batch_size=2, max_seq_len=4096),
        8210,
        "torchtune README (compile)",
    ),
    (
        "QLoRA r64 q,v,o+MLP (compile, chunked CE, ckpt)",
        "meta-llama/Llama-3.2-3B",
        "A100-80GB",
        dict(method="qlora", lora_r=64, lora_target_modules=LORA_TARGETS, micro_batch_size=2, max_seq_len=4096),
        8035,
        "torchtune README (compile)",
    ),
]


def throughput_rows() -> list[tuple[str, float, float, float, str]]:
    """(setup, measured tokens/s, predicted tokens/s, error %, source) for each reference."""
    rows = []
    for setup, model, gpu, overrides, measured, source in REFERENCES:
        arch = resolve_model(model).arch
        settings = Settings(gradient_accumulation_steps=1, epochs=1, **overrides)
        time = estimate_time(arch, settings, Device(GPUS[gpu]), DataShape(10_000, settings.max_seq_len))
        predicted = time.tokens_per_second
        rows.append((setup, measured, predicted, 100 * (predicted - measured) / measured, source))
    return rows


def print_throughput_table() -> None:
    rows = throughput_rows()
    width = max(len(r[0]) for r in rows)
    print(f"{'throughput reference':<{width}}  {'measured':>9}  {'ftplan':>9}  {'error':>7}  source")
    for setup, measured, predicted, error, source in rows:
        print(f"{setup:<{width}}  {measured:>9,.0f}  {predicted:>9,.0f}  {error:>+6.0f}%  {source}")


if __name__ == "__main__":
    print_throughput_table()
