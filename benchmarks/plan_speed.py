"""How fast is a plan? Planner call time and cold `ftplan --answers F --json`, beside the goals.

Run: python benchmarks/plan_speed.py
Goals (issue "The planner"): planner call <= 2 ms median; cold CLI <= 1.0 s and about 5x
faster than counting the same model's parameters with transformers on the meta device.
"""

from __future__ import annotations

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


def main() -> None:
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
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'measured':>10}  {'goal':>8}")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal:>8}")


if __name__ == "__main__":
    main()
