"""The planner stays pure and fast to import; `--json` prints exactly the contract."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftplan.cli import main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "textual", "trl", "deepspeed", "bitsandbytes", "accelerate", "datasets")


def test_importing_the_planner_and_cli_imports_nothing_heavy():
    code = (
        "import sys, ftplan.planner, ftplan.cli, ftplan.context, ftplan.render;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_headless_json_plan_run_imports_nothing_heavy(tmp_path):
    answers = tmp_path / "a.toml"
    answers.write_text('[model]\nname = "Qwen/Qwen2.5-7B"\n[hardware]\ngpu = "L4"\n')
    code = (
        "import sys; from ftplan.cli import main; rc = main(['--answers', sys.argv[1], '--json']);"
        f"print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr); sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code, str(answers)], capture_output=True, text=True)
    assert run.returncode == 0
    assert run.stderr.strip().splitlines()[-1] == "[]"


def test_import_linter_contract_holds():
    lint = pytest.importorskip("importlinter")
    del lint
    # The venv's own executable (beside this Python), not whatever `lint-imports` PATH finds.
    exe = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _json_plan(capsys, example: str) -> dict:
    assert main(["--answers", str(ROOT / "examples" / example), "--json"]) == 0
    out, _ = capsys.readouterr()
    return json.loads(out)


def documented_keys(section: str) -> set[str]:
    """The keys docs/plan-json.md promises under ``"section": {...}`` (what users' tools read)."""
    text = (ROOT / "docs" / "plan-json.md").read_text(encoding="utf-8")
    block = re.search(rf'"{section}": \{{(.*?)\}}', text, re.S)
    assert block, f"docs/plan-json.md does not list {section!r}"
    return set(re.findall(r'"(\w+)"', block.group(1)))


def test_json_plan_has_the_design_contract(capsys):
    plan = _json_plan(capsys, "llama3-8b-chat.toml")
    assert {"ftplan_version", "answers", "model", "hardware", "methods", "recommendation"} <= set(plan)
    assert plan["model"]["params"] == 8_030_261_248
    assert {"name", "params", "layers", "hidden_size", "vocab_size"} <= set(plan["model"])
    assert {"gpu", "gpu_memory", "gpus_per_node", "nodes"} <= set(plan["hardware"])
    assert set(plan["methods"]) == {"full", "lora", "qlora"}
    for method in plan["methods"].values():
        assert set(method["memory"]) == {"weights", "gradients", "optimizer", "activations", "overhead", "total"}
        assert all(isinstance(v, int) for v in method["memory"].values())
        assert method["memory"]["total"] == sum(v for k, v in method["memory"].items() if k != "total")
        assert isinstance(method["fits"], bool) and isinstance(method["cpu_memory"], int)
        for section in ("settings", "time", "cost", "memory_phases"):
            assert documented_keys(section) <= set(method[section]), section
    assert plan["methods"]["lora"]["trainable_params"] == 41_943_040
    assert plan["recommendation"]["method"] in plan["methods"]
    assert plan["recommendation"]["reasons"]
    # answers come back normalised with every default filled in
    assert plan["answers"]["training"]["micro_batch_size"] is not None
    assert plan["answers"]["hardware"]["gpu"] == "A100-80GB"


def test_rich_output_shows_all_three_methods(capsys):
    assert main(["--answers", str(ROOT / "examples" / "llama3-8b-chat.toml")]) == 0
    out, _ = capsys.readouterr()
    for word in ("Full", "LoRA", "QLoRA", "weights", "activations", "Recommendation", "Hidden costs"):
        assert word in out


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.toml")))
def test_every_example_plans(capsys, example):
    plan = _json_plan(capsys, example)
    assert plan["recommendation"]["method"] in ("full", "lora", "qlora")
