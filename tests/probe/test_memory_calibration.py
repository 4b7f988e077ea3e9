"""The planner's CPU memory estimate against real training steps (MemTracker), within 10%.

Each case builds a tiny random Llama-style model, runs one untracked step (optimizer states are
created lazily) and measures the next; the grid lives in ftplan.probe.calibration.GRID
(23 cases, about 2-3 minutes on 2 idle cores).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ftplan.probe.calibration import GRID, quiet, run_case  # noqa: E402

TOLERANCE = 0.10


def _needs(case):
    if case.method == "qlora":
        pytest.importorskip("bitsandbytes")


@pytest.mark.slow
@pytest.mark.parametrize("case", GRID, ids=[c.name.replace(" ", "-") for c in GRID])
def test_prediction_within_tolerance(case):
    _needs(case)
    quiet()
    r = run_case(case)
    assert abs(r.error) <= TOLERANCE, (
        f"{case.name}: predicted {r.predicted:,} B, measured {r.measured:,} B ({100 * r.error:+.1f}%); "
        f"phases predicted {r.predicted_phases}, measured {r.measured_phases}"
    )
