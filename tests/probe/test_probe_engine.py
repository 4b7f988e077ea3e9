"""`ftplan probe` under the project's own engine: a ZeRO-3 project on two CPU processes (gloo),
measured per rank, judged on memory and throughput; the live-bytes counter it measures with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftplan.probe.cli import THROUGHPUT_FACTOR, main, throughput_ratio, verdict


def test_live_bytes_follows_allocations_and_frees():
    torch = pytest.importorskip("torch")
    from ftplan.probe.engine import LiveBytes

    kept = torch.zeros(1000)  # 4,000 bytes alive before: the baseline
    tracker = LiveBytes()
    tracker.add(kept, "weights")
    with tracker:
        a = torch.ones(250, dtype=torch.float64)  # 2,000 bytes
        b = a * 2  # 2,000 more: the peak
        del a, b
        c = torch.ones(10, dtype=torch.int8)
    expected_peak = kept.untyped_storage().nbytes() + 2 * 250 * 8
    assert tracker.peak == expected_peak
    assert tracker.peak_split == {"weights": 4000, "activations": 4000}
    assert tracker.total == kept.untyped_storage().nbytes() + c.untyped_storage().nbytes()


def _result(predicted_tps: float, measured_tps: float, plan_device: str = "cpu") -> dict:
    return {
        "error": 0.01,
        "device": "cpu",
        "predicted": {"plan_device": plan_device},
        "tokens_per_s": {"predicted": predicted_tps, "measured": measured_tps},
    }


def test_the_verdict_judges_throughput():
    ok = verdict(_result(1500.0, 1000.0))
    assert ok.splitlines()[0].startswith("OK") and "throughput holds" in ok
    off = verdict(_result(1000.0 * THROUGHPUT_FACTOR * 1.5, 1000.0))
    assert "WARNING: the run is 3.0x slower than planned" in off
    # A GPU plan probed on the CPU: its tokens/s is for the GPU, nothing to judge.
    assert throughput_ratio(_result(30000.0, 100.0, plan_device="A100-80GB")) is None


def _zero3_project(tmp_path, monkeypatch) -> Path:
    """The tiny Llama's full fine-tuning under ZeRO-3 on two CPU processes, exported."""
    pytest.importorskip("deepspeed")
    from ftplan.context import build_context
    from ftplan.export import export_project
    from ftplan.planner import make_plan, read_answers_text
    from tests.conftest import tiny_training_kit

    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, value)
    kit = tiny_training_kit(tmp_path)
    text = kit.answers_text(tmp_path / "model", tmp_path / "data.jsonl", method="full", zero_stage=3,
                            gpus_per_node=2, micro_batch_size=2)  # fmt: skip
    answers = read_answers_text(text)
    plan = make_plan(answers, build_context(answers, detect=False))
    project = tmp_path / "zero3"
    export_project(plan, text, project, method="full")
    return project


@pytest.mark.slow
def test_zero3_project_probes_on_two_cpu_processes(tmp_path, capsys, monkeypatch):
    """Today's probe ran the model outside the engine on empty ZeRO-3 shards and failed."""
    project = _zero3_project(tmp_path, monkeypatch)
    capsys.readouterr()  # what building the kit printed
    code = main([str(project), "--steps", "4", "--json"])
    assert code == 0, capsys.readouterr().err + (project / "probe.log").read_text()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    measured = out["measured"]
    assert out["engine"] == "torchrun, 2 processes, DeepSpeed" and len(measured["ranks"]) == 2
    assert measured["total"] == max(measured["ranks"]) > 0
    assert set(measured["phases"]) == {"forward", "backward", "optimizer_step"}
    assert abs(out["error"]) <= 0.15, out
    # The CPU plan's throughput is the right order: within THROUGHPUT_FACTOR (slack for a shared CI box).
    ratio = throughput_ratio(out)
    assert ratio is not None and 1 / (1.25 * THROUGHPUT_FACTOR) <= ratio <= 1.25 * THROUGHPUT_FACTOR, out
    assert not (project / "output").exists()  # the probe trains in a scratch folder, never the user's output/
    assert json.loads(Path(project / "probe.json").read_text())["error"] == out["error"]


@pytest.mark.slow
def test_a_failing_engine_probe_names_the_worker_and_its_error(tmp_path, capsys, monkeypatch):
    """The probe's message was torchrun's last line (a row of '='); the user learnt nothing."""
    project = _zero3_project(tmp_path, monkeypatch)
    (tmp_path / "model").rename(tmp_path / "moved")  # each rank fails to load the model
    capsys.readouterr()
    assert main([str(project), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "the probe's 2 process(es) exited 1. Worker rank" in err, err
    assert "The error: " in err and "Error" in err.split("The error: ", 1)[1], err
    log = project / "probe.log"
    assert str(log) in err and "ChildFailedError" in log.read_text()
