"""Predicted vs measured peak memory for real model shapes on an NVIDIA GPU (or tiny ones on the CPU).

    python -m ftplan.probe.gpu_check [--dry-run] [--models NAME ...] [--seq N] [--batch N]

GPU mode builds randomly initialised Llama-3.2-1B, Llama-3.2-3B and Qwen2.5-1.5B from their
config.json shapes (no downloads), trains full / LoRA / QLoRA with and without gradient
checkpointing, with ``--loss chunked`` (TRL SFTTrainer's fused LM head, what train.py runs: no
(batch, seq, vocab) logits), ``--loss full_logits`` (the model's own cross-entropy on fp32 logits) or
``--loss both``, for a warm-up step plus one measured step (``torch.cuda.max_memory_allocated``
per phase), and prints the planner's ``total - overhead`` for the same ``training.loss`` next to
the measured peak, one row per case.
``--sharding fsdp2`` (or ``both``) adds each case under FSDP2 on two processes (``fully_shard`` per
decoder layer and the root, parameters resharded after forward: what the exported accelerate
config runs at zero_stage 3), planned with ``sharding = "fsdp2"`` on two GPUs and measured on
rank 0; it needs two GPUs and says so and skips them on fewer. QLoRA is not measured under FSDP2
here: ``measure.build_model`` builds the single-process QLoRA (uint8 quant storage,
``prepare_model_for_kbit_training``'s fp32 upcasts), not the FSDP2 one the export runs (bf16
storage, no upcasts; trained in tests/export/test_fsdp2_export.py), so its figure would not be
the plan's.
``--dry-run`` runs the same code on the CPU with tiny configs of the same families (MemTracker;
FSDP2 on two gloo processes).
``--speed`` times training steps instead (``--compile off|on|both``): planned vs measured tokens/s
on one device, eager and under torch.compile, i.e. the time model's ``BASE_EFFICIENCY`` and
``COMPILED_EFFICIENCY`` on this GPU (checkpointing on, AdamW, the fused LM head). A dry run checks
that code path only: its planned figure is the CPU model of an exported project's Trainer steps,
whose fixed costs a bare loop does not have, so its errors say nothing and never fail it.
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
SHARDINGS = ("none", "fsdp2")
FSDP_WORLD = 2
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
    shardings=("none",),
) -> int:
    import torch

    from ftplan.planner.arch import arch_from_config
    from ftplan.planner.device import Device
    from ftplan.planner.memory import estimate_memory
    from ftplan.planner.settings import Settings
    from ftplan.probe.measure import build_model, measure_step

    where = _where(dry_run)
    if where is None:
        return 2
    cuda, device, precision = where
    failures = 0
    if "fsdp2" in shardings and cuda and torch.cuda.device_count() < FSDP_WORLD:
        print(
            f"gpu_check: FSDP2 cases skipped: they need {FSDP_WORLD} GPUs and this machine has "
            f"{torch.cuda.device_count()}",
            file=out,
            flush=True,
        )
        shardings = tuple(x for x in shardings if x != "fsdp2")
    print(
        f"{'model':26s} {'method':6s} {'ckpt':5s} {'loss':11s} {'shard':5s} {'predicted':>11s} {'measured':>11s} {'error':>7s} "
        f"{'phase p/m':>22s} {'s':>5s}",
        file=out,
    )
    for name in models:
        cfg = model_config(name, dry_run)
        arch = arch_from_config(cfg)
        for method in methods:
            cases = [(c, x, sh) for c in checkpointing for x in losses for sh in shardings]
            for ckpt, loss, sharding in cases:
                fsdp = sharding == "fsdp2"
                if fsdp and method == "qlora":  # see the module docstring
                    print(
                        f"{name:26s} {method:6s} {str(ckpt):5s} {loss:11s} {sharding:5s} skipped: QLoRA under "
                        "FSDP2 is trained by tests/export/test_fsdp2_export.py, not measured here",
                        file=out,
                        flush=True,
                    )
                    continue
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
                    sharding="fsdp2" if fsdp else "deepspeed",
                    zero_stage=3 if fsdp else 0,
                )
                world = Device(device.gpu, gpus_per_node=FSDP_WORLD) if fsdp else device
                est = estimate_memory(arch, s, world)  # the planner's own reading of s.loss
                predicted = est.total - est.overhead
                t0 = time.perf_counter()
                try:
                    if fsdp:
                        build = dict(method=method, precision=precision, ckpt=ckpt, loss=MEASURED_LOSS[loss])
                        m = measure_fsdp2(cfg, build, batch=batch, seq=seq, cuda=cuda)
                    else:
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
                        f"{name:26s} {method:6s} {str(ckpt):5s} {loss:11s} {sharding:5s} failed: {type(exc).__name__}: {exc}",
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
                    f"{name:26s} {method:6s} {str(ckpt):5s} {loss:11s} {sharding:5s} {predicted / unit:8.2f}{suffix} {m.peak / unit:8.2f}{suffix} "
                    f"{100 * err:+6.1f}% {est.peak_phase + '/' + m.peak_phase:>22s} {time.perf_counter() - t0:5.1f}"
                    + ("  <- outside tolerance" if bad else ""),
                    file=out,
                    flush=True,
                )
    return 1 if failures else 0


SPEED_WARMUP, SPEED_STEPS = 3, 5
COMPILE_MODES = ("off", "on")


def speed_run(
    models, methods, seq: int, batch: int, dry_run: bool, tolerance: float, out=sys.stdout, compiles=COMPILE_MODES
) -> int:
    """Planned vs measured training tokens/s on one device, eager and under torch.compile: the
    time model's BASE_EFFICIENCY / COMPILED_EFFICIENCY on this GPU. Each case: checkpointing on,
    AdamW, SPEED_WARMUP untimed steps (the compile happens there), then SPEED_STEPS timed ones.
    A dry run times the tiny configs on the CPU (compiled with aot_eager: inductor's C++ build
    takes minutes there) against the CPU step model."""
    import torch

    from ftplan.planner.arch import arch_from_config
    from ftplan.planner.settings import Settings
    from ftplan.planner.timecost import DataShape, estimate_time

    where = _where(dry_run)
    if where is None:
        return 2
    cuda, device, precision = where
    failures = 0
    print(
        f"{'model':26s} {'method':6s} {'compile':7s} {'planned':>9s} {'measured':>9s} {'error':>7s}  tokens/s", file=out
    )
    for name in models:
        cfg = model_config(name, dry_run)
        arch = arch_from_config(cfg)
        for method in methods:
            for mode in compiles:
                compiled = mode == "on"
                s = Settings(
                    method=method, precision=precision, optimizer="adamw_torch", micro_batch_size=batch,
                    gradient_accumulation_steps=1, max_seq_len=seq, lora_r=16, lora_alpha=32.0, compile=compiled,
                )  # fmt: skip
                planned = estimate_time(arch, s, device, DataShape(100_000, seq)).tokens_per_second
                try:
                    measured = _time_steps(cfg, method, precision, batch, seq, cuda, compiled, dry_run)
                except Exception as exc:  # report and go on (e.g. out of memory)
                    print(f"{name:26s} {method:6s} {mode:7s} failed: {type(exc).__name__}: {exc}", file=out)
                    failures += 1
                    continue
                finally:
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                err = (planned - measured) / measured
                bad = abs(err) > tolerance and not dry_run  # the CPU model is of the Trainer's steps, not this loop's
                failures += bad
                print(
                    f"{name:26s} {method:6s} {mode:7s} {planned:9,.0f} {measured:9,.0f} {100 * err:+6.1f}%"
                    + ("  <- outside tolerance" if bad else ""),
                    file=out,
                    flush=True,
                )
    return 1 if failures else 0


def _time_steps(cfg, method, precision, batch, seq, cuda, compiled, dry_run) -> float:
    """Measured tokens/s of SPEED_STEPS optimizer steps after SPEED_WARMUP ones."""
    import torch

    from ftplan.probe.measure import _step, build_model, make_batch, make_optimizer

    model = build_model(
        cfg, method=method, precision=precision, gradient_checkpointing=True, lora_r=16, lora_alpha=32.0,
        lora_dropout=0.05, device="cuda" if cuda else "cpu", loss="trl",
    )  # fmt: skip
    optimizer = make_optimizer(model, "adamw_torch")
    if compiled:
        model = torch.compile(model, backend="aot_eager" if dry_run else "inductor")
    data = make_batch(cfg["vocab_size"], batch, seq, device="cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(SPEED_WARMUP):
        _step(model, optimizer, data, 1.0)
    sync()
    start = time.perf_counter()
    for _ in range(SPEED_STEPS):
        _step(model, optimizer, data, 1.0)
    sync()
    return batch * seq * SPEED_STEPS / (time.perf_counter() - start)


def measure_fsdp2(cfg: dict, build: dict, *, batch: int, seq: int, cuda: bool):
    """One case under FSDP2 on FSDP_WORLD processes (nccl on GPUs, gloo on the CPU): rank 0's
    measured step. Separate processes, not threads: each rank needs its own process group and,
    on the CPU, its own MemTracker; the result comes back through a file rank 0 writes."""
    import json
    import os
    import socket
    import tempfile

    import torch.multiprocessing as mp

    from ftplan.probe.measure import StepMemory

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rank0.json")
        mp.spawn(_fsdp2_rank, args=(port, cfg, build, batch, seq, cuda, result), nprocs=FSDP_WORLD, join=True)
        with open(result, encoding="utf-8") as fh:
            return StepMemory(**json.load(fh))


def _fsdp2_rank(rank: int, port: int, cfg: dict, build: dict, batch: int, seq: int, cuda: bool, result: str):
    """One rank: build the model as measure.build_model does, shard each decoder layer and then the
    root with fully_shard (the exported accelerate config's wrap policy, reshard after forward),
    and measure a step; rank 0 writes what it measured."""
    import dataclasses
    import json
    import os

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from ftplan.probe.calibration import quiet
    from ftplan.probe.measure import build_model, measure_step

    quiet()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=FSDP_WORLD)
    try:
        model = build_model(
            cfg,
            method=build["method"],
            precision=build["precision"],
            gradient_checkpointing=build["ckpt"],
            lora_r=16,
            lora_alpha=32.0,
            lora_dropout=0.05,
            device=f"cuda:{rank}" if cuda else "cpu",
            loss=build["loss"],
        )
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        for layer in layers:
            fully_shard(layer, reshard_after_forward=True)
        fully_shard(model, reshard_after_forward=True)
        m = measure_step(model, micro_batch_size=batch, seq_len=seq, optimizer="adamw_torch")
        if rank == 0:
            with open(result, "w", encoding="utf-8") as fh:
                json.dump(dataclasses.asdict(m), fh)
    finally:
        dist.destroy_process_group()


def _where(dry_run: bool):
    """(cuda, the planner's Device, precision) of this run, library logging quieted; None, said on
    stderr, without a GPU outside a dry run."""
    import torch

    from ftplan.planner.catalog.gpus import CPU, GPUS
    from ftplan.planner.device import Device
    from ftplan.probe.calibration import quiet

    quiet()
    cuda = torch.cuda.is_available() and not dry_run
    if not cuda and not dry_run:
        print("gpu_check: no CUDA device here; use --dry-run for the CPU check", file=sys.stderr)
        return None
    device = Device(CPU) if not cuda else Device(_catalog_gpu(torch.cuda.get_device_name(0), GPUS))
    return cuda, device, "bf16" if cuda else "fp32"


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
    ap.add_argument(
        "--sharding",
        choices=(*SHARDINGS, "both"),
        default="none",
        help=f"none: one process; fsdp2: FSDP2 on {FSDP_WORLD} processes ({FSDP_WORLD} GPUs, gloo in a dry run); both",
    )
    ap.add_argument(
        "--speed",
        action="store_true",
        help="time training steps instead: planned vs measured tokens/s, eager and compiled (see --compile)",
    )
    ap.add_argument("--compile", choices=(*COMPILE_MODES, "both"), default="both", help="with --speed")
    ap.add_argument("--speed-tolerance", type=float, default=0.25, help="with --speed (the issue's worst-row goal)")
    args = ap.parse_args(argv)
    ckpt = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    seq = args.seq or (64 if args.dry_run else 2048)
    from ftplan.planner.catalog.models import MODEL_CONFIGS

    unknown = [m for m in args.models if m not in MODEL_CONFIGS]
    if unknown:
        ap.error(f"--models: {', '.join(unknown)} not in the catalog (e.g. {', '.join(MODELS)})")
    if args.speed:
        compiles = COMPILE_MODES if args.compile == "both" else (args.compile,)
        return speed_run(
            args.models, args.methods, seq, args.batch, args.dry_run, args.speed_tolerance, compiles=compiles
        )
    loss = LOSS_ALIASES.get(args.loss, args.loss)
    losses = LOSSES if loss == "both" else (loss,)
    shardings = SHARDINGS if args.sharding == "both" else (args.sharding,)
    return run(
        args.models,
        args.methods,
        ckpt,
        seq,
        args.batch,
        args.dry_run,
        args.tolerance,
        losses=losses,
        shardings=shardings,
    )


if __name__ == "__main__":
    raise SystemExit(main())
