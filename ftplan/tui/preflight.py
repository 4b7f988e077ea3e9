"""The plan's half of the launch checklist (the launcher checks the project and the host)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan


@dataclass(frozen=True)
class Check:
    status: str
    """ok | warn | fail, as `ftplan.launch.preflight.Check` has it."""
    name: str
    detail: str


def plan_checks(plan: Plan | None) -> list[Check]:
    if plan is None:
        return [Check("fail", "plan", "no valid plan: fix the answers first")]
    method = plan.recommendation.method
    mp = plan.methods[method]
    checks = [
        Check(
            "ok" if mp.fits else "fail",
            "plan fits",
            f"{method}: {mp.memory.total / 2**30:.1f} GiB per GPU on {plan.hardware.gpu}"
            + ("" if mp.fits else f"; needs {mp.hardware_needed or 'more memory'}"),
        )
    ]
    budget = plan.answers.get("budget", {}).get("usd")
    if budget:
        checks.append(
            Check("ok" if mp.cost.usd <= budget else "warn", "budget", f"one run ${mp.cost.usd:,.2f} of ${budget:,.2f}")
        )
    return checks
