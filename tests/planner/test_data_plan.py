"""The plan counts the data it is given: data.path read and checked, tokens counted with the
model's tokenizer (or characters / 4, said so), steps from sequences, host RAM held against the
node's, gpu = "auto" with the detected count, offload with the ZeRO stage it needs."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from ftplan import context as ctx
from ftplan.cli import main
from ftplan.context import build_context
from ftplan.planner import AnswersError, make_plan, read_answers_text
from ftplan.planner.timecost import DataShape, eval_fraction, optimizer_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_support import build_model  # noqa: E402

CATALOG_MODEL = "Qwen/Qwen2.5-0.5B"


def chat_rows(n: int, user: str = "Please answer the question number {i} now.", answer: str = "It is {i}.") -> list:
    return [
        {
            "messages": [
                {"role": "user", "content": user.format(i=i) * (1 + i % 5)},
                {"role": "assistant", "content": answer.format(i=i)},
            ]
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answers_for(model: str, data: Path | str, extra: str = "", hardware: str = 'gpu = "cpu"') -> str:
    return f'[model]\nname = "{model}"\n[data]\npath = "{data}"\n{extra}\n[hardware]\n{hardware}\n'


def plan_cli(tmp_path: Path, text: str, capsys) -> tuple[int, dict | None, str]:
    answers = tmp_path / "answers.toml"
    answers.write_text(text)
    rc = main(["--answers", str(answers), "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


# ---- data.path problems are bad input ------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", "", "is empty"),
        ("folder.jsonl", "<folder>", "is a folder"),
        ("broken.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": \n', "line 3 is not valid JSON"),
        ("columns.jsonl", '{"text": "a"}\n{"body": "b"}\n', "line 2 has no 'text' column"),
        ("alpaca.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', "line 2 has no 'output'"),
        ("unknown.jsonl", '{"body": "b"}\n', "cannot tell the data format"),
        ("notes.txt", "hello\n", "expected a .jsonl/.json/.parquet/.csv file"),
    ],
)
def test_broken_data_path_exits_2_naming_the_field_and_line(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content == "<folder>":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    fmt = 'format = "alpaca"' if name == "alpaca.jsonl" else ('format = "text"' if name == "columns.jsonl" else "")
    rc, _, err = plan_cli(tmp_path, answers_for(CATALOG_MODEL, path, fmt), capsys)
    assert rc == 2
    assert "data.path" in err and expected in err and "Traceback" not in err


def test_hub_ids_and_files_elsewhere_are_planned_and_said_so(tmp_path, capsys):
    rc, plan, _ = plan_cli(tmp_path, answers_for(CATALOG_MODEL, "tatsu-lab/alpaca"), capsys)
    assert rc == 0 and not plan["data"]["measured"]
    assert any("hub dataset id" in n and "not" in n for n in plan["notes"])
    # A path on the training machine, with the figures given: planned from them, and noted.
    given = answers_for(CATALOG_MODEL, tmp_path / "elsewhere.jsonl", "examples = 900\navg_tokens = 300")
    rc, plan, _ = plan_cli(tmp_path, given, capsys)
    assert rc == 0 and plan["data"]["examples"] == 900
    assert any("not on this machine" in n for n in plan["notes"])


# ---- data read, not guessed ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny") / "model")


def test_tokens_are_counted_with_the_models_tokenizer_and_chat_template(tiny_model, tmp_path, capsys):
    rows = chat_rows(40)
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    rc, plan, _ = plan_cli(tmp_path, answers_for(str(tiny_model), data, "max_seq_len = 64"), capsys)
    assert rc == 0
    d = plan["data"]
    # The same counts, independently: the tokenizer's chat template; answers = full - prompt.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))

    def n_ids(turns, gen=False):
        out = tok.apply_chat_template(turns, tokenize=True, add_generation_prompt=gen)
        return len(out["input_ids"] if hasattr(out, "keys") else out)

    lengths = [n_ids(r["messages"]) for r in rows]
    answers = [n_ids(r["messages"]) - n_ids(r["messages"][:1], gen=True) for r in rows]
    kept = [min(n, 64) for n in lengths]
    trained = [max(0, a - max(0, n - 64)) for n, a in zip(lengths, answers, strict=True)]
    assert d["measured"] and d["tokenizer"] and str(tiny_model) in d["tokenizer"]
    assert d["examples"] == 40 and d["sampled"] == 40
    assert d["length_max"] == max(lengths)
    assert d["length_p50"] == sorted(lengths)[20]
    assert d["tokens"] == sum(kept)
    assert d["truncated_share"] == pytest.approx(sum(n > 64 for n in lengths) / 40)
    assert d["train_on"] == "answers" and d["tokens_trained"] == sum(trained) < d["tokens"]
    # train_on = "all": every token trains.
    rc, plan, _ = plan_cli(tmp_path, answers_for(str(tiny_model), data, 'max_seq_len = 64\ntrain_on = "all"'), capsys)
    assert plan["data"]["tokens_trained"] == plan["data"]["tokens"]


def test_without_a_tokenizer_tokens_are_estimated_and_the_plan_says_so(tmp_path, capsys, monkeypatch):
    rows = chat_rows(30)
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # a catalog model, no tokenizer cached
    rc, plan, _ = plan_cli(tmp_path, answers_for(CATALOG_MODEL, data), capsys)
    assert rc == 0 and plan["data"]["measured"] and plan["data"]["tokenizer"] is None
    chars = [sum(len(t["content"]) for t in r["messages"]) for r in rows]
    assert plan["data"]["avg_tokens"] == round(sum(round(c / 4) for c in chars) / len(chars))
    assert any("characters / 4" in n and "estimate" in n for n in plan["notes"])


def test_large_files_are_sampled_and_the_plan_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(ctx, "SAMPLE_LIMIT", 50)
    monkeypatch.setattr(ctx, "CHECK_LIMIT", 120)
    data = write_jsonl(tmp_path / "big.jsonl", chat_rows(300))
    answers = read_answers_text(answers_for(CATALOG_MODEL, data))
    plan = make_plan(answers, build_context(answers, detect=False))
    assert plan.data["examples"] == 300 and plan.data["sampled"] == 50
    assert any("50 of them" in n and "120 of 300 examples checked" in n for n in plan.notes)


# ---- steps come from sequences -------------------------------------------------------------


def test_unpacked_steps_count_examples_not_tokens():
    """The issue's figure: 50k examples of 400 tokens at 2048, packing off, 1 x (4 x 4) per step:
    train.py holds out 500 for evaluation, so the Trainer runs ceil(49,500 / 4 / 4) = 3,094 steps
    per epoch, not tokens / (4 x 2048 x 4)."""
    answers = read_answers_text(
        '[model]\nname = "meta-llama/Llama-3.1-8B"\n[data]\nexamples = 50000\navg_tokens = 400\n'
        'max_seq_len = 2048\nepochs = 1\npacking = false\n[hardware]\ngpu = "H100-SXM"\n'
        "[training]\nmicro_batch_size = 4\ngradient_accumulation_steps = 4\n"
    )
    plan = make_plan(answers)
    for m in plan.methods.values():
        assert m.time.steps == 3094
    packed = make_plan(answers.model_copy(update={"data": answers.data.model_copy(update={"packing": True})}))
    # Packed: the 49,500 train examples x 400 tokens in 2,048-token sequences, 16 per step.
    assert packed.methods["lora"].time.steps == math.ceil(math.ceil(49500 * 400 / 2048) / 16)


def test_packed_steps_follow_best_fit_decreasing_on_the_measured_lengths():
    """Examples of 1,200 tokens at 2,048 cannot share a sequence: one sequence each (950 train
    examples: train.py holds 5 % of 1,000 out for evaluation)."""
    s = make_plan(read_answers_text('[model]\nname = "Qwen/Qwen2.5-0.5B"\n[hardware]\ngpu = "cpu"\n')).methods["lora"]
    s = s.settings.model_copy(update={"packing": True, "max_seq_len": 2048, "micro_batch_size": 2})
    s = s.model_copy(update={"gradient_accumulation_steps": 1, "epochs": 1.0})
    assert optimizer_steps(DataShape.from_sample(1000, 1200, (1200,) * 50), s, 1) == 475
    # four per sequence (238 sequences); the sample packs to within one sequence of it
    assert optimizer_steps(DataShape.from_sample(1000, 500, (500,) * 50), s, 1) == pytest.approx(119, abs=1)


# ---- host RAM, gpu = auto, offload, context window ------------------------------------------


def test_offload_plans_are_held_against_host_ram():
    text = (
        '[model]\nname = "meta-llama/Llama-3.1-8B"\n[data]\nexamples = 5000\navg_tokens = 400\n'
        '[hardware]\ngpu = "RTX-4090"\ngpus_per_node = 2\nhost_ram_gb = {ram}\n[training]\nmethod = "full"\n'
    )
    small = make_plan(read_answers_text(text.format(ram=64))).methods["full"]
    assert not small.fits
    need = small.cpu_memory / 2**30
    assert need > 64e9 / 2**30
    assert any("host RAM" in w and f"{need:,.1f} GiB" in w and f"{64e9 / 2**30:,.1f} GiB" in w for w in small.warnings)
    big = make_plan(read_answers_text(text.format(ram=1024))).methods["full"]
    assert big.fits and big.settings.offload != "none" and big.cpu_memory <= 1024e9


def test_the_ladder_picks_no_offload_rung_past_host_ram():
    """Llama-3.1-8B full on one A100-40GB at ZeRO-3: offloading the parameters too needs more
    host RAM than offloading the optimizer alone; with less RAM than the parameter offload
    needs, the ladder must pick the optimizer-only offload, which fits both the GPU and the host."""
    from ftplan.planner.catalog.gpus import GPUS
    from ftplan.planner.choose import choose_settings
    from ftplan.planner.device import Device
    from ftplan.planner.memory import MemoryModel, usable_memory
    from ftplan.planner.models import resolve_model

    answers = read_answers_text(  # pure bf16 fixed: bf16-mixed's fallback to bf16 would also cut host RAM
        '[model]\nname = "meta-llama/Llama-3.1-8B"\n[data]\nexamples = 5000\navg_tokens = 400\nmax_seq_len = 1024\n'
        '[training]\nprecision = "bf16"\nzero_stage = 3\n'
    )
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    device = Device(GPUS["A100-40GB"], 1, 1)
    data = DataShape(5000, 400)
    roomy = choose_settings("full", answers, arch, device, data, host_ram=None)
    with_params = roomy.model_copy(update={"offload": "optimizer+params"})
    params_host = MemoryModel(arch, with_params, device).estimate().cpu_memory
    optimizer_host = MemoryModel(arch, roomy.model_copy(update={"offload": "optimizer"}), device).estimate().cpu_memory
    assert optimizer_host < params_host
    host_ram = params_host - 1
    s = choose_settings("full", answers, arch, device, data, host_ram=host_ram)
    mem = MemoryModel(arch, s, device).estimate()
    assert s.offload == "optimizer" and mem.cpu_memory <= host_ram and mem.total <= usable_memory(device)
    plan = make_plan(
        answers.model_copy(
            update={"hardware": answers.hardware.model_copy(update={"gpu": "A100-40GB", "host_ram_gb": host_ram / 1e9})}
        )
    )
    assert plan.methods["full"].fits and plan.methods["full"].settings.offload == "optimizer"


def test_host_ram_is_detected_when_left_out():
    assert (ctx.detect_host_ram() or 0) > 2**28
    answers = read_answers_text(f'[model]\nname = "{CATALOG_MODEL}"\n[data]\nexamples = 10\navg_tokens = 10\n')
    plan = make_plan(answers, build_context(answers))
    assert plan.hardware.host_ram == ctx.detect_host_ram()
    assert any("host_ram_gb" in n and "detected" in n for n in plan.notes)


def test_auto_gpu_headless_uses_the_detected_count(tmp_path, monkeypatch):
    rows = "\n".join(f"{i}, GPU-{i}, NVIDIA H100 80GB HBM3, 81559, 80000, 9.0" for i in range(8))
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{rows}\nEOF\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    answers = read_answers_text('[model]\nname = "meta-llama/Llama-3.1-8B"\n')
    plan = make_plan(answers, build_context(answers))
    assert plan.hardware.gpus_per_node == 8 and plan.hardware.world_size == 8
    assert plan.answers["hardware"]["gpus_per_node"] == 8
    one = read_answers_text('[model]\nname = "meta-llama/Llama-3.1-8B"\n[hardware]\ngpus_per_node = 1\n')
    assert make_plan(one, build_context(one)).hardware.gpus_per_node == 1  # what the user set stays


@pytest.mark.parametrize("offload, stage", [("optimizer", 2), ("optimizer+params", 3)])
def test_offload_without_zero_stage_is_planned_with_one(offload, stage):
    answers = read_answers_text(
        f'[model]\nname = "meta-llama/Llama-3.1-8B"\n[hardware]\ngpu = "A100-80GB"\n[training]\noffload = "{offload}"\n'
    )
    for m in make_plan(answers).methods.values():
        assert m.settings.offload == offload and m.settings.zero_stage >= stage
        assert m.cpu_memory > 0
        assert any(f"planned with ZeRO-{m.settings.zero_stage}" in w for w in m.warnings)


def test_max_seq_len_past_the_context_window_warns(tiny_model):
    answers = read_answers_text(f'[model]\nname = "{tiny_model}"\n[data]\nmax_seq_len = 512\n[hardware]\ngpu = "cpu"\n')
    plan = make_plan(answers)
    assert plan.model.context_window == 256
    assert all(any("context window" in w and "256" in w for w in m.warnings) for m in plan.methods.values())
    inside = read_answers_text(f'[model]\nname = "{tiny_model}"\n[data]\nmax_seq_len = 256\n[hardware]\ngpu = "cpu"\n')
    assert not any("context window" in w for m in make_plan(inside).methods.values() for w in m.warnings)


def test_bad_data_is_an_answers_error_for_build_context(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{oops\n')
    answers = read_answers_text(answers_for(CATALOG_MODEL, bad))
    with pytest.raises(AnswersError) as exc:
        build_context(answers, detect=False)
    assert exc.value.problems[0].field == "data.path" and "line 2" in exc.value.problems[0].message


def test_cold_cli_with_a_catalog_model_does_not_import_transformers(tmp_path):
    import subprocess

    answers = tmp_path / "a.toml"
    answers.write_text(f'[model]\nname = "{CATALOG_MODEL}"\n')
    code = (
        "import sys, runpy; sys.argv = ['ftplan', '--answers', sys.argv[1], '--json'];"
        "import ftplan.cli as c; rc = c.main(sys.argv[1:]);"
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code, str(answers)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_steps_count_the_train_split_only():
    """train.py holds ceil(examples x eval_fraction) out for evaluation (the exporter's eval_fraction,
    the planner's rule): 1,000 examples, 1 x (1 x 1) per step, packing off: 950 steps, not 1,000;
    200,000 examples: 500 held out, 199,500 steps."""
    s = make_plan(read_answers_text('[model]\nname = "Qwen/Qwen2.5-0.5B"\n[hardware]\ngpu = "cpu"\n')).methods["lora"]
    s = s.settings.model_copy(update={"packing": False, "micro_batch_size": 1, "gradient_accumulation_steps": 1})
    s = s.model_copy(update={"epochs": 1.0, "max_seq_len": 2048})
    assert optimizer_steps(DataShape(1000, 300), s, 1) == 950
    assert optimizer_steps(DataShape(200_000, 300), s, 1) == 199_500
    assert eval_fraction(1000) == 0.05 and eval_fraction(200_000) == 0.0025


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packing_with_eager_or_sdpa_is_not_warned_about(attention):
    """train.py packs padding-free with restarting position_ids and no KV cache: transformers builds
    the block-diagonal mask for eager and SDPA alike (tests/export/test_recipe_data.py checks a packed
    document's logits against it alone), so the old 'packed examples attend to each other' is stale."""
    answers = read_answers_text(
        '[model]\nname = "Qwen/Qwen2.5-0.5B"\n[data]\npacking = true\n'
        f'[hardware]\ngpu = "A100-80GB"\n[training]\nattention = "{attention}"\n'
    )
    plan = make_plan(answers)
    for m in plan.methods.values():
        assert m.settings.packing and m.settings.attention == attention
        assert not [w for w in m.warnings if "attend to each other" in w], m.warnings
