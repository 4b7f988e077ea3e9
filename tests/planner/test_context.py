"""The shells' lookups: GPUs from nvidia-smi, examples and tokens measured from a local file."""

import json
import os
import stat

import pytest

from ftplan.context import build_context, detect_gpus, measure_local_data
from ftplan.planner import AnswersError, make_plan, read_answers_text


def fake_nvidia_smi(folder, rows: str):
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{rows}\nEOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return folder


def test_detects_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    # index, uuid, name, memory.total, memory.free (MiB), compute_cap: the query ftplan.host makes
    fake_nvidia_smi(
        tmp_path,
        "0, GPU-a, NVIDIA H100 80GB HBM3, 81559, 80000, 9.0\n1, GPU-b, NVIDIA H100 80GB HBM3, 81559, 1200, 9.0",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = detect_gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].free == 1200 * 2**20 and gpus[1].compute_capability == (9, 0)
    answers = read_answers_text('[model]\nname = "meta-llama/Llama-3.1-8B"\n')
    plan = make_plan(answers, build_context(answers))
    assert plan.hardware.gpu == "H100-SXM" and plan.hardware.detected
    assert any("detected NVIDIA H100" in n for n in plan.notes)


def test_no_gpu_plans_for_a_default_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []
    answers = read_answers_text('[model]\nname = "meta-llama/Llama-3.1-8B"\n')
    plan = make_plan(answers, build_context(answers))
    assert plan.hardware.gpu == "A100-80GB" and not plan.hardware.detected
    assert any("no GPU detected" in n for n in plan.notes)


def test_measures_examples_and_tokens_from_a_jsonl_file(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y" * 400}]}] * 30
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sample = measure_local_data(str(path), "auto", None, "Qwen/Qwen2.5-0.5B", "instruction")
    assert sample.examples == 30 and sample.format == "messages" and sample.train_on == "answers"
    assert 190 <= sample.mean_tokens <= 215  # ~801 characters at ~4 per token (no tokenizer on disk here)
    answers = read_answers_text(f'[model]\nname = "Qwen/Qwen2.5-0.5B"\n[data]\npath = "{path}"\n')
    plan = make_plan(answers, build_context(answers, detect=False))
    assert plan.data["examples"] == 30 and plan.data["avg_tokens"] == sample.mean_tokens


def test_what_is_not_here_is_not_measured_and_a_broken_file_is_named(tmp_path):
    assert measure_local_data(str(tmp_path / "missing.jsonl"), "auto", None, "m", "instruction") is None
    assert measure_local_data("tatsu-lab/alpaca", "auto", None, "m", "instruction") is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(AnswersError) as exc:
        measure_local_data(str(bad), "auto", None, "m", "instruction")
    assert "data.path" in exc.value.render() and "line 1" in exc.value.render()
