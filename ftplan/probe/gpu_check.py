"""Predicted vs measured peak memory for real model shapes on an NVIDIA GPU (or tiny ones on the CPU).

    python -m ftplan.probe.gpu_check [--dry-run] [--models NAME ...] [--seq N] [--batch N]

GPU mode builds randomly initialised Llama-3.2-1B, Llama-3.2-3B and Qwen2.5-1.5B from their
config.json shapes (no downloads), trains full / LoRA / QLoRA with and without gradient
checkpointing, with ``--loss chunked`` (TRL SFTTrainer's fused LM head, what train.py runs: no
(batch, seq, vocab) logits), ``--loss full_logits`` (the model's own cross-entropy on fp32 logits) or
``--loss both``, for a warm-up step plus one measured step (``torch.cuda.max_memory_allocated``
per phase), and prints the planner's ``total - overhead`` for the same ``training.loss`` next to
the measured peak, one row per case.
``--dry-run`` runs the same code on the CPU with tiny configs of the same families (MemTracker).
Exits 1 when a case misses the tolerance.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

MODELS = ("meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "meta-llama/Llama-3.2-3B")
METHODS = ("full", "lora", "qlora")
LOSSES = ("chunked", "full_logits")
# The planner's training.loss -> how ftplan.probe.measure.build_model computes that loss.
MEASURED_LOSS = {"chunked": "trl", "full_logits": "hf"}
# Earlier spellings of --loss (measure.build_model's names), kept so existing calls still run.
LOSS_ALIASES = {"trl": "chunked", "hf": "full_logits"}
GIB = 2**30


def model_config(name: str, dry_run: bool) -> dict:
    from ftplan.planner.catalog.models import MODEL_CONFIGS
    from ftplan.probe.measure import tiny_llama_config

    real = dict(MODEL_CONFIGS[name])
    if dry_run:  # same family and quirks (GQA ratio, biases, tied embeddings), tiny sizes
        heads = 4
        kv = max(1, heads * real["num_key_value_heads"] // real["num_attention_heads"])
        cfg = tiny_llama_config(
            hidden=64,
            layers=2,
            heads=heads,
            kv_heads=kv,
            vocab=512,
            tied=real.get("tie_word_embeddings", False),
            model_type=real["model_type"],
        )
        return cfg
    base = tiny_llama_config(model_type=real["model_type"])
    base.update(real)
    base["max_position_embeddings"] = 131072
    return base


def run(
    models,
    methods,
    checkpointing,
    seq: int,
    batch: int,
    dry_run: bool,
    tolerance: float,
    out=sys.stdout,
    losses=("chunked",),
) -> int:
    import torch

    from ftplan.planner.arch import arch_from_config
    from ftplan.planner.catalog.gpus import CPU, GPUS
    from ftplan.planner.memory import Device, estimate_memory
    from ftplan.planner.settings import Settings
    from ftplan.probe.calibration import quiet
    from ftplan.probe.measure import build_model, measure_step

    quiet()
    cuda = torch.cuda.is_available() and not dry_run
    if not cuda and not dry_run:
        print("gpu_check: no CUDA device here; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    device = Device(CPU) if not cuda else Device(_catalog_gpu(torch.cuda.get_device_name(0), GPUS))
    precision = "bf16" if cuda else "fp32"
    failures = 0
    print(
        f"{'model':26s} {'method':6s} {'ckpt':5s} {'loss':11s} {'predicted':>11s} {'measured':>11s} {'error':>7s} "
        f"{'phase p/m':>22s} {'s':>5s}",
        file=out,
    )
    for name in models:
        cfg = model_config(name, dry_run)
        arch = arch_from_config(cfg)
        for method in methods:
            for ckpt, loss in [(c, x) for c in checkpointing for x in losses]:
                s = Settings(
                    method=method,
                    precision=precision,
                    optimizer="adamw_torch",
                    micro_batch_size=batch,
                    gradient_accumulation_steps=1,
                    gradient_checkpointing=ckpt,
                    attention="sdpa",
                    max_seq_len=seq,
                    lora_r=16,
                    lora_alpha=32.0,
                    lora_dropout=0.05,
                    loss=loss,
                )
                est = estimate_memory(arch, s, device)  # the planner's own reading of s.loss
                predicted = est.total - est.overhead
                t0 = time.perf_counter()
                try:
                    model = build_model(
                        cfg,
                        method=method,
                        precision=precision,
                        gradient_checkpointing=ckpt,
                        lora_r=16,
                        lora_alpha=32.0,
                        lora_dropout=0.05,
                        device="cuda" if cuda else "cpu",
                        loss=MEASURED_LOSS[loss],
                    )
                    m = measure_step(model, micro_batch_size=batch, seq_len=seq, optimizer="adamw_torch")
                except Exception as exc:  # report and go on (e.g. out of memory)
                    print(
                        f"{name:26s} {method:6s} {str(ckpt):5s} {loss:11s} failed: {type(exc).__name__}: {exc}",
                        file=out,
                    )
                    failures += 1
                    continue
                finally:
                    model = None
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                err = (predicted - m.peak) / m.peak
                bad = abs(err) > tolerance
                failures += bad
                unit = GIB if cuda else 2**20
                suffix = "GiB" if cuda else "MiB"
                print(
                    f"{name:26s} {method:6s} {str(ckpt):5s} {loss:11s} {predicted / unit:8.2f}{suffix} {m.peak / unit:8.2f}{suffix} "
                    f"{100 * err:+6.1f}% {est.peak_phase + '/' + m.peak_phase:>22s} {time.perf_counter() - t0:5.1f}"
                    + ("  <- outside tolerance" if bad else ""),
                    file=out,
                    flush=True,
                )
    return 1 if failures else 0


def _catalog_gpu(detected: str, gpus: dict):
    from ftplan.planner.catalog.gpus import DETECTED_NAMES

    for needle, name in DETECTED_NAMES:
        if needle in detected:
            return gpus[name]
    return gpus["H100-SXM"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Planner vs measured peak memory on real model shapes.")
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU (MemTracker)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    ap.add_argument("--seq", type=int, default=None, help="sequence length (GPU 2048, dry run 64)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument(
        "--loss",
        choices=(*LOSSES, "both", *LOSS_ALIASES),
        default="chunked",
        help="chunked: TRL SFTTrainer's fused LM head (what train.py runs); full_logits: the model's own "
        "loss on fp32 logits; both: each case with each (trl / hf: old names of chunked / full_logits)",
    )
    args = ap.parse_args(argv)
    ckpt = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    seq = args.seq or (64 if args.dry_run else 2048)
    from ftplan.planner.catalog.models import MODEL_CONFIGS

    unknown = [m for m in args.models if m not in MODEL_CONFIGS]
    if unknown:
        ap.error(f"--models: {', '.join(unknown)} not in the catalog (e.g. {', '.join(MODELS)})")
    loss = LOSS_ALIASES.get(args.loss, args.loss)
    losses = LOSSES if loss == "both" else (loss,)
    return run(args.models, args.methods, ckpt, seq, args.batch, args.dry_run, args.tolerance, losses=losses)


if __name__ == "__main__":
    raise SystemExit(main())
