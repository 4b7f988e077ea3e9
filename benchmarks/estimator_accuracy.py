"""How close the planner's estimates are to real steps.

    PYTHONPATH=. python benchmarks/estimator_accuracy.py [--quick] [--json FILE]

1. Memory grid: tiny Llama-style configs trained for real on the CPU (MemTracker), the planner's
   ``total - overhead`` for ``Device(CPU)`` against the measured peak of a steady-state step.
2. Published measured references (docs/sources.md) (GPU runs by others) next to the planner's prediction for the
   same setup; printed side by side, not fitted.
3. Time: ``time_rows()`` is the place for throughput rows (predicted vs measured tokens/s).
"""

from __future__ import annotations

import argparse
import json
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


def reference_rows() -> list[dict]:
    from ftplan.probe.references import REFERENCES, predict_reference

    rows = []
    for ref in REFERENCES:
        p = predict_reference(ref)
        if ref.kind == "max_seq":
            rows.append(
                {
                    "setup": ref.setup,
                    "measured": f"{ref.measured_tokens:,} tokens",
                    "predicted": f"{p['predicted_tokens']:,} tokens",
                    "source": ref.source,
                    "note": ref.note,
                }
            )
        else:
            measured = f"{ref.measured_gb:.2f} GB" if ref.measured_gb else "-"
            rows.append(
                {
                    "setup": ref.setup,
                    "measured": measured,
                    "predicted": f"{p['predicted_gb']:.2f} GB",
                    "predicted_trl": f"{p['predicted_trl_gb']:.2f} GB",
                    "source": ref.source,
                    "note": ref.note,
                }
            )
    return rows


def time_rows() -> list[dict]:
    """Throughput rows: published tokens/s (docs/sources.md) vs ftplan's time model."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput_reference import throughput_rows

    return [
        {"setup": setup, "measured": measured, "predicted": predicted, "error": error / 100, "source": source}
        for setup, measured, predicted, error, source in throughput_rows()
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the first 6 grid cases")
    ap.add_argument("--no-grid", action="store_true", help="skip the CPU measurements")
    ap.add_argument("--json", help="also write all rows to this file")
    args = ap.parse_args(argv)
    out: dict = {}
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
    out["references"] = refs
    print("Published measured references (others' GPU runs) vs ftplan's prediction, not fitted")
    print(f"{'setup':72s} {'measured':>16s} {'ftplan hf-loss':>16s} {'TRL (default)':>14s}  source")
    for r in refs:
        trl = r.get("predicted_trl", "-")
        print(f"{r['setup']:72s} {r['measured']:>16s} {r['predicted']:>16s} {trl:>14s}  {r['source']}")
        if r["note"]:
            print(f"{'':72s}   note: {r['note']}")
    times = time_rows()
    out["time"] = times
    if times:
        print("\nThroughput: published tokens/s vs ftplan (rows with compile are faster than the exported recipe)")
        print(f"{'setup':72s} {'measured':>9s} {'ftplan':>9s} {'error':>7s}  source")
        for r in times:
            print(
                f"{r['setup']:72s} {r['measured']:>9,.0f} {r['predicted']:>9,.0f} {100 * r['error']:>+6.0f}%  {r['source']}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
