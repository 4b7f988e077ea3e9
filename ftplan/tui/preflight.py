"""The checklist the launch screen shows before a run: what would make it fail early."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ftplan.planner import Plan


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None
    """True passes, False blocks a real launch, None is a warning."""
    detail: str


def preflight(plan: Plan | None, project_dir: Path | None, detected: list[str]) -> list[Check]:
    checks: list[Check] = []
    if plan is None:
        return [Check("plan", False, "no valid plan: fix the answers first")]
    method = plan.recommendation.method
    mp = plan.methods[method]
    checks.append(
        Check(
            "plan fits",
            mp.fits,
            f"{method}: {mp.memory.total / 2**30:.1f} GiB per GPU on {plan.hardware.gpu}"
            + ("" if mp.fits else f" — needs {mp.hardware_needed or 'more memory'}"),
        )
    )
    if project_dir is None or not str(project_dir).strip():
        checks.append(Check("project", False, "export the project first (ctrl+e), or type its folder"))
    else:
        folder = Path(project_dir).expanduser()
        present = [n for n in ("train.py", "train_config.toml", "launch.sh") if (folder / n).is_file()]
        checks.append(
            Check(
                "project",
                len(present) == 3,
                f"{folder}: " + ("train.py, train_config.toml and launch.sh found" if len(present) == 3 else "not an exported project (no train.py / launch.sh)"),
            )
        )
    want = plan.hardware.gpus_per_node
    if plan.hardware.gpu == "cpu":
        checks.append(Check("GPUs", True, "CPU run: no GPU needed"))
    elif not detected:
        checks.append(Check("GPUs", False, f"no GPU detected here; the plan wants {want}× {plan.hardware.gpu} (use dry run)"))
    else:
        checks.append(
            Check("GPUs", len(detected) >= want, f"{len(detected)}× {detected[0]} here; the plan wants {want} per node")
        )
    has_torch = importlib.util.find_spec("torch") is not None
    checks.append(Check("torch", has_torch or None, "installed" if has_torch else "not installed here: pip install 'ftplan[train]'"))
    budget = plan.answers.get("budget", {}).get("usd")
    if budget:
        checks.append(Check("budget", mp.cost.usd <= budget or None, f"one run ${mp.cost.usd:,.2f} of ${budget:,.2f}"))
    return checks
