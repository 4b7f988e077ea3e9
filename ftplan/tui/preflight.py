"""The plan's half of the launch checklist (the launcher checks the project and the host)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftplan.launch.preflight import FAIL, OK, WARN, Check
from ftplan.planner.units import gib

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan

__all__ = ["Check", "plan_checks"]


def plan_checks(plan: Plan | None) -> list[Check]:
    if plan is None:
        return [Check("plan", FAIL, "no valid plan: fix the answers first")]
    method = plan.recommendation.method
    mp = plan.methods[method]
    checks = [
        Check(
            "plan fits",
            OK if mp.fits else FAIL,
            f"{method}: {gib(mp.memory.total)} per GPU on {plan.hardware.gpu}"
            + ("" if mp.fits else f"; needs {mp.hardware_needed or 'more memory'}"),
        )
    ]
    budget = plan.answers.get("budget", {}).get("usd")
    if budget:
        checks.append(
            Check("budget", OK if mp.cost.usd <= budget else WARN, f"one run ${mp.cost.usd:,.2f} of ${budget:,.2f}")
        )
    return checks
