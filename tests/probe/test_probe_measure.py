"""The measurement harness itself on a very small model (a few seconds)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


def test_measure_step_reports_phases_and_categories():
    from ftplan.probe.calibration import quiet
    from ftplan.probe.measure import PHASES, measure_config, tiny_llama_config

    quiet()
    m = measure_config(tiny_llama_config(hidden=64, layers=2, vocab=256), micro_batch_size=1, seq_len=32)
    assert set(m.phases) == set(PHASES)
    assert m.peak == max(m.phases.values())
    assert m.peak_phase in PHASES
    comps = m.components
    assert sum(comps.values()) == m.peak
    assert comps["weights"] > 0 and comps["optimizer"] > 0  # steady state: Adam states exist
    # after the optimizer step gradients are gone (zero_grad(set_to_none=True))
    assert m.after["optimizer_step"] < m.after["backward"] + comps["optimizer"]
    d = m.as_dict()
    assert d["components"] == comps


def test_frozen_base_weights_do_not_break_the_tracker():
    pytest.importorskip("peft")
    from ftplan.probe.calibration import quiet
    from ftplan.probe.measure import measure_config, tiny_llama_config

    quiet()
    m = measure_config(tiny_llama_config(hidden=64, layers=2, vocab=256), method="lora", micro_batch_size=1, seq_len=32)
    assert m.peak > 0
    assert m.phase_categories["optimizer_step"].get("Gradient", 0) > 0
