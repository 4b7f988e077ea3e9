"""How fast is a plan? Planner call time and cold `ftplan --answers F --json`, beside the goals.

Run: python benchmarks/plan_speed.py [--repeats N]
Goals (issue "The planner"): planner call <= 2 ms median; cold CLI <= 1.0 s and about 5x
faster than counting the same model's parameters with transformers on the meta device.
Goals (issue "Any model"): a catalog card model's cold `--json` <= 1 s without importing torch; the first
plan of a local config.json not yet in the card cache (``ftplan.derive.cache``, here a fresh
``$FTPLAN_CACHE_DIR``) <= 15 s, the second <= 1 s. Wall-clock times on a shared machine are noisy: the
CLI rows report the fastest of ``--repeats`` runs (a first plan: each run with its own empty cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "llama3-8b-chat.toml"

META_COUNT = """
import torch, transformers
cfg = transformers.AutoConfig.for_model("llama", hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(cfg)
print(sum(p.numel() for p in model.parameters()))
"""


def planner_call_ms(repeats: int = 300, fresh_model: bool = False) -> list[float]:
    """Milliseconds per ``make_plan``; ``fresh_model`` drops the cached catalog accounting first
    (the first plan of a model; the app's later keystrokes reuse it)."""
    sys.path.insert(0, str(ROOT))
    from ftplan.planner import load_answers, make_plan
    from ftplan.planner.models import _catalog_arch

    answers = load_answers(EXAMPLE)
    make_plan(answers)
    times = []
    for _ in range(repeats):
        if fresh_model:
            _catalog_arch.cache_clear()
        start = time.perf_counter()
        make_plan(answers)
        times.append((time.perf_counter() - start) * 1000)
    return times


def wall(cmd: list[str], repeats: int = 5) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - start)
    return times


CARD_MODEL = "Qwen/Qwen3-30B-A3B"
"""A shipped card (MoE, 48 layers, 128 experts): planned without torch; its config.json is the local-folder case."""
TORCH_PROBE = (
    "import sys, runpy; sys.argv = ['ftplan', '--answers', sys.argv[1], '--json']\n"
    "try:\n    runpy.run_module('ftplan', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "sys.stderr.write('torch imported: %s\\n' % ('torch' in sys.modules))"
)


def _answers(folder: Path, name: str) -> Path:
    path = folder / "answers.toml"
    path.write_text(f'[model]\nname = "{name}"\n[hardware]\ngpu = "A100-80GB"\n', encoding="utf-8")
    return path


def _env(cache: Path) -> dict:
    root = str(ROOT)
    return {
        **os.environ,
        "FTPLAN_CACHE_DIR": str(cache),
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def _timed(answers: Path, env: dict) -> tuple[float, bool]:
    """Seconds of one cold ``ftplan --answers F --json`` process, and whether it imported torch."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, str(answers)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env=env,
    )
    seconds = time.perf_counter() - start
    if "torch imported: " not in done.stderr or not done.stdout.lstrip().startswith("{"):
        raise RuntimeError(f"no plan from {answers}: {done.stderr[-2000:]}")
    return seconds, "torch imported: True" in done.stderr


def any_model_rows(repeats: int) -> list[tuple[str, str, str]]:
    """Cold CLI times of a catalog card, and of the same model as a local config.json: first plan, second plan."""
    from ftplan.planner.catalog.models import CARD_MODELS

    config = {k: v for k, v in CARD_MODELS[CARD_MODEL].items() if not k.startswith("_")}
    runs: dict[str, list[tuple[float, bool]]] = {"catalog": [], "first": [], "second": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "local-model"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        catalog_answers = _answers(root, CARD_MODEL)
        local_answers = _answers(folder, str(folder))
        for i in range(repeats):
            env = _env(root / f"cache{i}")  # each round starts with an empty card cache
            runs["catalog"].append(_timed(catalog_answers, env))
            runs["first"].append(_timed(local_answers, env))
            runs["second"].append(_timed(local_answers, env))

    def fastest(kind: str) -> str:
        return f"{min(t for t, _ in runs[kind]):.2f} s"

    def torch(kind: str) -> str:
        return "yes" if any(loaded for _, loaded in runs[kind]) else "no"

    return [
        (f"cold `--json`, catalog card {CARD_MODEL} (min of {repeats})", fastest("catalog"), "≤ 1.0 s"),
        ("  torch imported by that plan", torch("catalog"), "no"),
        ("first plan of its config.json as a local folder (empty card cache)", fastest("first"), "≤ 15 s"),
        ("second plan of that folder (card cached)", fastest("second"), "≤ 1.0 s"),
        ("  torch imported by the second plan", torch("second"), "no"),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each any-model CLI row (the fastest is shown)")
    args = ap.parse_args(argv)
    calls = planner_call_ms()
    fresh = planner_call_ms(fresh_model=True)
    cli = wall([sys.executable, "-m", "ftplan", "--answers", str(EXAMPLE), "--json"])
    meta = wall([sys.executable, "-c", META_COUNT], repeats=3)
    rows = [
        ("planner call (Llama-3.1-8B, 3 methods)", f"{statistics.median(calls):.2f} ms", "≤ 2 ms"),
        ("  90th percentile", f"{sorted(calls)[len(calls) * 9 // 10]:.2f} ms", ""),
        ("  first plan of the model (no cached accounting)", f"{statistics.median(fresh):.2f} ms", ""),
        ("cold `ftplan --answers F --json`", f"{statistics.median(cli):.2f} s", "≤ 1.0 s"),
        ("transformers meta-device count alone", f"{statistics.median(meta):.2f} s", "—"),
        ("speed-up of ftplan over meta count", f"{statistics.median(meta) / statistics.median(cli):.1f}×", "≈ 5×"),
        *any_model_rows(args.repeats),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'measured':>10}  {'goal':>8}")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal:>8}")


if __name__ == "__main__":
    main()
