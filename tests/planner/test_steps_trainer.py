"""Planned steps are the steps the real run takes: the exported project trains a tiny model on the
CPU for its whole schedule, and the HF Trainer's own max_steps (in metrics.jsonl) is held to the
plan's, with packing off (one padded sequence per example) and on (TRL's best-fit packing), with
the exported eval split on (the plan counts the train part only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ftplan.context import build_context
from ftplan.export import export_project
from ftplan.planner import make_plan, read_answers_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_support import answers_text, build_model, metrics, run  # noqa: E402

EXAMPLES = 80
MAX_SEQ_LEN = 128


def varied_chat(path: Path) -> Path:
    """Chats from ~15 to ~150 tokens: some pack four to a sequence, some are truncated."""
    rows = []
    for i in range(EXAMPLES):
        question = " ".join(f"word{(i * 7 + k) % 13}" for k in range(2 + (i * 5) % 40))
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": f"ok {i}"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    return build_model(root / "model"), varied_chat(root / "chat.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True])
def test_planned_steps_equal_the_trainers(tiny, tmp_path, packing):
    model, data = tiny
    text = answers_text(model, data, method="lora", micro_batch_size=2, gradient_accumulation_steps=2)
    text = text.replace("max_seq_len = 64", f"max_seq_len = {MAX_SEQ_LEN}\npacking = {str(packing).lower()}")
    answers = read_answers_text(text)
    plan = make_plan(answers, build_context(answers, detect=False))
    planned = plan.methods["lora"].time.steps
    # Half the chats have prompts of 128+ tokens: without packing TRL drops them (answer cut away).
    dropped = [w for w in plan.methods["lora"].warnings if "TRL drops them" in w]
    assert bool(dropped) is not packing, dropped
    assert plan.data["measured"] and plan.data["tokenizer"]
    project = tmp_path / "project"
    export_project(plan, text, project)
    assert "eval_fraction = 0.05 " in (project / "train_config.toml").read_text()  # 4 of 80 held out
    run(["bash", "launch.sh"], project, timeout=600)
    assert any(r.get("event") == "eval" for r in metrics(project))  # the eval split was on
    real = max(r["max_steps"] for r in metrics(project) if "max_steps" in r)
    print(f"packing={packing}: planned {planned} steps, the Trainer ran {real}")
    assert abs(planned - real) <= 0.1 * real
