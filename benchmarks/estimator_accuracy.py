"""How close the planner's estimates are to real steps.

    PYTHONPATH=. python benchmarks/estimator_accuracy.py [--quick] [--json FILE] [--archs all|TYPE,TYPE]

1. Memory grid: tiny Llama-style configs trained for real on the CPU (MemTracker), the planner's
   ``total - overhead`` for ``Device(CPU)`` against the measured peak of a steady-state step.
1b. Any architecture (``--archs``): tiny random-weight versions of ten model types (MoE, Gemma-3, Qwen3,
   Phi-3, OLMo-2, ...), each planned from its own config.json as ``ftplan probe`` plans (the card derived
   from the model's code), full / LoRA / QLoRA x gradient checkpointing off / on, bf16: the planned
   activation bytes and peak beside MemTracker's on a real CPU step (``ftplan.probe.calibration.ArchCase``).
2. Published GPU runs by others (ftplan/probe/references.py, docs/sources.md): peak memory (like
   compared with like: allocated, reserved or nvidia-smi) and tokens/s per GPU, each planned with
   the sharding, loss, attention and checkpointing it used; the rows the time model's constants
   were chosen on (calibration) apart from the held-apart ones, each with median and worst error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2**20


def memory_rows(cases=None) -> list[dict]:
    from ftplan.probe.calibration import GRID, quiet, run_case

    quiet()
    rows = []
    for case in cases or GRID:
        t0 = time.perf_counter()
        r = run_case(case)
        rows.append(
            {
                "case": case.name,
                "predicted": r.predicted,
                "measured": r.measured,
                "error": r.error,
                "predicted_phases": r.predicted_phases,
                "measured_phases": r.measured_phases,
                "predicted_components": r.predicted_components,
                "measured_components": r.measured_components,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


def arch_rows(types, methods=("full", "lora", "qlora")) -> list[dict]:
    """Each type x method x checkpointing off/on, planned from its config.json and measured (``ArchCase``)."""
    import os
    import tempfile

    from ftplan.probe.calibration import ArchCase, quiet, run_arch_case

    quiet()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        os.environ["FTPLAN_CACHE_DIR"] = str(Path(root) / "cache")  # cards derived by this checkout's code
        for model_type in types:
            for method in methods:
                for checkpointing in (False, True):
                    case = ArchCase(model_type, method, checkpointing)
                    t0 = time.perf_counter()
                    try:
                        r = run_arch_case(case, root)
                    except Exception as exc:  # noqa: BLE001 - a type this transformers / bitsandbytes cannot run
                        rows.append({"case": case.name, "type": model_type, "method": method, "failed": repr(exc)})
                        continue
                    rows.append(
                        {
                            "case": case.name,
                            "type": model_type,
                            "method": method,
                            "checkpointing": checkpointing,
                            "predicted_activations": r.predicted_activations,
                            "measured_activations": r.measured_activations,
                            "activation_error": r.activation_error,
                            "predicted": r.predicted,
                            "measured": r.measured,
                            "error": r.error,
                            "phases": f"{r.predicted_phase}/{r.measured_phase}",
                            "seconds": time.perf_counter() - t0,
                        }
                    )
    return rows


def print_arch_rows(rows: list[dict]) -> None:
    print("Any architecture: planned (card from the tiny config.json, Device cpu) vs a real CPU step (MemTracker)")
    print("bf16, micro-batch 2 x 256 tokens, adamw_torch, LoRA r8 all-linear; activations and peak at each side's peak")
    print(
        f"{'case':38s} {'act plan':>9s} {'act meas':>9s} {'error':>7s}  {'peak plan':>9s} {'peak meas':>9s} {'error':>7s}"
        "  peak phase (plan/meas)"
    )
    for r in rows:
        if "failed" in r:
            print(f"{r['case']:38s} failed: {r['failed'][:100]}")
            continue
        print(
            f"{r['case']:38s} {r['predicted_activations'] / MIB:6.2f}MiB {r['measured_activations'] / MIB:6.2f}MiB "
            f"{100 * r['activation_error']:+6.1f}%  {r['predicted'] / MIB:6.2f}MiB {r['measured'] / MIB:6.2f}MiB "
            f"{100 * r['error']:+6.1f}%  {r['phases']}"
        )
    print(f"{'method':8s} {'cases':>5s} {'activations: median':>20s} {'worst':>7s} {'peak: median':>13s} {'worst':>7s}")
    for method in ("full", "lora", "qlora"):
        done = [r for r in rows if r["method"] == method and "failed" not in r]
        if done:
            act = sorted(abs(r["activation_error"]) for r in done)
            peak = sorted(abs(r["error"]) for r in done)
            print(
                f"{method:8s} {len(done):5d} {100 * statistics.median(act):19.1f}% {100 * act[-1]:6.1f}% "
                f"{100 * statistics.median(peak):12.1f}% {100 * peak[-1]:6.1f}%"
            )
    outside = [r["case"] for r in rows if "failed" in r or abs(r["activation_error"]) > 0.10]
    print(
        f"outside 10 % (activations) or failed: {len(outside)} of {len(rows)}"
        + (f": {', '.join(outside)}" if outside else "")
    )
    print()


def reference_rows() -> list[dict]:
    """Published GPU runs (ftplan/probe/references.py) with the planner's prediction and errors."""
    from ftplan.probe.references import accuracy_rows

    return accuracy_rows()


def shape_rows() -> list[dict]:
    """The longest-sequence rows (unsloth): a shape check, not in the error summaries."""
    from ftplan.probe.references import REFERENCES, predict_reference

    return [
        {"setup": ref.setup, "measured": ref.measured_tokens, **predict_reference(ref), "note": ref.note}
        for ref in REFERENCES
        if ref.kind == "max_seq"
    ]


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}%"


def print_reference_tables(rows: list[dict]) -> None:
    """Memory and tokens/s side by side, calibration rows first, then the held-apart ones,
    each group closed by its median and worst |error|."""
    from ftplan.probe.references import error_summary

    head = f"{'setup':76s} {'figure':>16s} {'meas GB':>8s} {'ftplan':>7s} {'error':>7s}"
    head += f" {'meas tok/s':>10s} {'ftplan':>7s} {'error':>7s}"
    for calibration, title in ((True, "calibration rows"), (False, "held-apart rows")):
        print(f"\nPublished GPU runs vs ftplan, {title} (per GPU)")
        print(head)
        for r in rows:
            ref = r["ref"]
            if ref.calibration != calibration:
                continue
            figure = f"{ref.figure}{'' if ref.per_gpu else ' total'}" if ref.measured_gb else ""
            memory = (
                f"{ref.measured_gb:8.2f} {r['predicted_gb']:7.2f} {_percent(r['memory_error']):>7s}"
                if ref.measured_gb
                else f"{'':8s} {'':7s} {'':7s}"
            )
            speed = (
                f"{ref.measured_tokens_per_s:10,.0f} {r['predicted_tokens_per_s']:7,.0f} {_percent(r['tokens_error']):>7s}"
                if ref.measured_tokens_per_s
                else ""
            )
            print(f"{ref.setup[:76]:76s} {figure:>16s} {memory} {speed}")
            print(f"{'':4s}source: {ref.source}" + (f"; note: {ref.note}" if ref.note else ""))
        for key, label in (("memory_error", "memory"), ("tokens_error", "tokens/s")):
            n, median, worst = error_summary(rows, key, calibration)
            print(f"  {label:9s} {title}: {n} rows, median |error| {100 * median:.1f}%, worst {100 * worst:.1f}%")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the first 6 grid cases")
    ap.add_argument("--no-grid", action="store_true", help="skip the CPU measurements")
    ap.add_argument("--json", help="also write all rows to this file")
    ap.add_argument(
        "--archs",
        help="also measure tiny versions of these model types ('all': ftplan.probe.calibration.ARCH_TYPES); "
        "with --no-grid, only them",
    )
    ap.add_argument("--methods", default="full,lora,qlora", help="methods of the --archs section (default: all three)")
    args = ap.parse_args(argv)
    out: dict = {}
    if args.archs:
        from ftplan.probe.calibration import ARCH_TYPES

        types = ARCH_TYPES if args.archs == "all" else tuple(args.archs.split(","))
        out["archs"] = arch_rows(types, tuple(args.methods.split(",")))
        print_arch_rows(out["archs"])
        if args.no_grid:
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=2, default=str))
            return 0
    if not args.no_grid:
        from ftplan.probe.calibration import GRID

        rows = memory_rows(GRID[:6] if args.quick else GRID)
        out["memory"] = rows
        print("Memory: planner (Device cpu, total - overhead) vs measured peak of a real CPU step (MemTracker)")
        print(f"{'case':56s} {'predicted':>10s} {'measured':>10s} {'error':>7s}  peak phase (pred/meas)")
        for r in rows:
            pp = max(r["predicted_phases"], key=r["predicted_phases"].get)
            mp = max(r["measured_phases"], key=r["measured_phases"].get)
            print(
                f"{r['case']:56s} {r['predicted'] / MIB:7.2f}MiB {r['measured'] / MIB:7.2f}MiB {100 * r['error']:+6.1f}%  {pp}/{mp}"
            )
        worst = max(abs(r["error"]) for r in rows)
        print(f"worst |error| {100 * worst:.1f}% over {len(rows)} cases\n")
    refs = reference_rows()
    out["references"] = [{**{k: v for k, v in r.items() if k != "ref"}, "setup": r["ref"].setup} for r in refs]
    print_reference_tables(refs)
    shapes = shape_rows()
    out["longest_sequence"] = shapes
    print("\nLongest sequence that fits (unsloth's table, its HF + FlashAttention-2 baseline; not in the summaries)")
    for r in shapes:
        print(f"{r['setup']:76s} measured {r['measured']:>7,} ftplan {r['predicted_tokens']:>7,}  {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
