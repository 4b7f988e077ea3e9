"""`ftplan launch --probe`: measure a few real steps first; refuse a long run that will not fit.

The probe runs in a child process (it imports the training stack and the project's own
train.py); the decision is a pure function of plan.json and the probe's JSON result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ftplan.project import PLAN_FILE

USABLE_FRACTION = 0.95  # as the planner: fragmentation eats the rest


def projected_peak(plan: dict, probe: dict) -> int:
    """The per-GPU peak the run will reach: the plan's total scaled by measured / predicted.

    When the probe ran on the plan's own device its measurement is the answer; when a GPU plan
    is probed on the CPU, the ratio carries the error over to the plan's numbers.
    """
    method = plan["recommendation"]["method"] if probe.get("method") is None else probe["method"]
    planned = plan["methods"][method]["memory"]
    predicted, measured = probe["predicted"]["total"], probe["measured"]["total"]
    if probe.get("device") == "cuda":
        return int(measured)
    ratio = measured / predicted if predicted else 1.0
    return int((planned["total"] - planned["overhead"]) * ratio + planned["overhead"])


def probe_decision(plan: dict, probe: dict) -> tuple[bool, str]:
    """(go, message) for the long run after a probe."""
    hardware = plan["hardware"]
    if hardware["gpu"] == "cpu":
        return True, f"probe: CPU plan, error {100 * probe['error']:+.1f}% against the plan"
    peak = projected_peak(plan, probe)
    usable = int(hardware["gpu_memory"] * USABLE_FRACTION)
    gib = 2**30
    if peak > usable:
        return False, (
            f"probe: the run would need {peak / gib:,.1f} GiB per GPU, {hardware['gpu']} has {usable / gib:,.1f} GiB "
            f"usable (measured {100 * -probe['error']:+.0f}% against the plan): it would run out of memory; "
            "lower micro_batch_size or max_seq_len, or turn on gradient_checkpointing"
        )
    return True, f"probe: {peak / gib:,.1f} GiB of {usable / gib:,.1f} GiB per GPU ({hardware['gpu']}); fits"


def run_probe(project_dir: str | Path, steps: int = 2, timeout: float | None = None) -> dict:
    """Run `ftplan probe DIR --json` in a child process; raise RuntimeError with its message."""
    run = subprocess.run(
        [sys.executable, "-m", "ftplan", "probe", str(project_dir), "--steps", str(steps), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"probe failed (exit {run.returncode}): {last}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def gate(project_dir: str | Path, steps: int = 2) -> tuple[bool, str]:
    plan = json.loads((Path(project_dir) / PLAN_FILE).read_text(encoding="utf-8"))
    try:
        probe = run_probe(project_dir, steps)
    except (RuntimeError, subprocess.SubprocessError, json.JSONDecodeError, IndexError) as exc:
        return False, f"probe: {exc}"
    return probe_decision(plan, probe)
