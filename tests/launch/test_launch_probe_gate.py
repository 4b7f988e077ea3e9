"""`ftplan launch --probe`: the long run starts only when the probe's measurement fits."""

import json

from ftplan.launch import cli as launch_cli
from ftplan.launch import probe_gate
from ftplan.launch.probe_gate import probe_decision, projected_peak

GIB = 2**30


def plan(gpu="A100-80GB", memory_gib=80, total_gib=60.0, overhead_gib=1.0):
    return {
        "hardware": {"gpu": gpu, "gpu_memory": int(memory_gib * GIB)},
        "recommendation": {"method": "lora"},
        "methods": {"lora": {"memory": {"total": int(total_gib * GIB), "overhead": int(overhead_gib * GIB)}}},
    }


def probe(device="cpu", predicted=100, measured=100):
    return {
        "method": "lora",
        "device": device,
        "predicted": {"total": predicted},
        "measured": {"total": measured},
        "error": (predicted - measured) / measured,
    }


def test_cpu_probe_of_a_gpu_plan_scales_the_plan_by_the_measured_error():
    # measured 40 % above the prediction: 59 GiB allocator part becomes 82.6 GiB, + 1 GiB context
    assert projected_peak(plan(), probe(predicted=100, measured=140)) == int(59 * 1.4 * GIB + GIB)
    go, message = probe_decision(plan(), probe(predicted=100, measured=140))
    assert not go and "would run out of memory" in message and "83.6 GiB" in message


def test_a_probe_that_confirms_the_plan_lets_the_run_start():
    go, message = probe_decision(plan(), probe(predicted=100, measured=98))
    assert go and "fits" in message


def test_a_gpu_probe_is_taken_at_its_word():
    go, _ = probe_decision(plan(), probe(device="cuda", predicted=60 * GIB, measured=79 * GIB))
    assert not go
    assert probe_decision(plan(), probe(device="cuda", predicted=60 * GIB, measured=61 * GIB))[0]


def test_cpu_plans_are_never_refused_for_memory():
    assert probe_decision(plan(gpu="cpu", memory_gib=0), probe(predicted=1, measured=3))[0]


def test_launch_refuses_when_the_probe_says_no(project, monkeypatch, capsys):
    monkeypatch.setattr(probe_gate, "run_probe", lambda d, steps=2: probe(predicted=100, measured=140))
    plan_file = project / "plan.json"
    edited = json.loads(plan_file.read_text())
    edited["hardware"].update(gpu="A100-80GB", gpu_memory=80 * GIB)
    method = edited["recommendation"]["method"]
    edited["methods"][method]["memory"].update(total=70 * GIB, overhead=GIB)
    plan_file.write_text(json.dumps(edited))
    code = launch_cli.main([str(project), "--probe", "--smoke"])
    err = capsys.readouterr().err
    assert code == 1
    assert "would run out of memory" in err
