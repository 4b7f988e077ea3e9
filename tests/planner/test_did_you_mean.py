"""One suggester for every "did you mean": answers keys and GPU names alike."""

from __future__ import annotations

import pytest

from ftplan.planner import read_answers_text
from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.problems import AnswersError, did_you_mean


def test_a_gpu_name_suggests_its_own_generation_first():
    assert did_you_mean("H100-80GB", list(GPUS))[:2] == ["H100-SXM", "H100-PCIe"]
    assert did_you_mean("h100", list(GPUS))[:2] == ["H100-SXM", "H100-PCIe"]
    assert did_you_mean("4090", list(GPUS), cutoff=0.4)[0] == "RTX-4090"


def test_nothing_close_suggests_nothing():
    assert did_you_mean("zzzz", list(GPUS)) == []


def test_the_answers_file_uses_it_for_gpus_and_keys():
    with pytest.raises(AnswersError) as exc:
        read_answers_text(
            '[model]\nname = "Qwen/Qwen2.5-0.5B"\n[hardware]\ngpu = "H100-80GB"\n[training]\nmicro_batch = 2\n'
        )
    text = exc.value.render()
    assert "unknown GPU 'H100-80GB'; did you mean H100-SXM, H100-PCIe" in text
    assert "did you mean training.micro_batch_size?" in text
