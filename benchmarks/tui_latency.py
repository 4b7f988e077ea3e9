"""TUI latency: time to first screen and keystroke-to-updated-table, next to their goals.

    PYTHONPATH=. python benchmarks/tui_latency.py [--keys 30] [--starts 5]

Time to first screen: a fresh interpreter runs the app (headless driver, opened the way
`ftplan --answers examples/llama3-8b-chat.toml --interactive` opens it) and reports when the first
frame is handed to the terminal; measured from just before the process is spawned, so it includes
Python start-up and every import. It also checks torch/transformers/peft were not imported.
The CPU time the app's process used until then is printed under it: on a machine whose cores
other work shares, the wall time waits for them and the CPU time does not. To see the wall time
a machine of one's own gives, let the benchmark take a core first: `chrt -f 10 python
benchmarks/tui_latency.py` (Linux, root; docs/INTERNALS.md has figures both ways).

Keystroke latency: the app in-process (Pilot), one key at a time into `data.examples` (a digit,
then backspace); measured from the edit reaching the app to the frame after the new tables were
swapped in (`call_after_refresh`). Reported with the 100 ms debounce (what a user sees
after the last key of a burst) and with the debounce off (the work itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "llama3-8b-chat.toml"
GOAL_FIRST_SCREEN_S = 1.0
GOAL_KEYSTROKE_MS = 50.0

CHILD = r"""
import sys, time, json, tomllib
from textual.app import App
from ftplan.tui.app import FtplanApp
path = sys.argv[1]
with open(path, "rb") as f:
    raw = tomllib.load(f)
app = FtplanApp(None, path, raw=raw, detect=None)  # as ftplan.tui.run_app opens a file
out = {}
display = App._display  # private, but it is where a frame goes to the terminal
def first_frame(self, screen, renderable):
    if "first_screen" not in out:
        out["first_screen"], out["first_screen_cpu"] = time.time(), time.process_time()
    return display(self, screen, renderable)
App._display = first_frame
async def auto_pilot(pilot):
    import asyncio
    while app.plan is None:
        await asyncio.sleep(0.001)  # pilot.pause() would message every widget each time
    app.call_after_refresh(lambda: out.setdefault("first_plan", time.time()))
    while "first_plan" not in out:
        await asyncio.sleep(0.001)
    out["heavy"] = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
    app.exit()
app.run(headless=True, size=(120, 40), auto_pilot=auto_pilot)
print(json.dumps(out))
"""


def first_screen(runs: int) -> tuple[list[float], list[float], list[float], list[str]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    screens, cpu, plans, heavy = [], [], [], []
    for _ in range(runs):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=120
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        screens.append(out["first_screen"] - start)
        cpu.append(out["first_screen_cpu"])
        plans.append(out["first_plan"] - start)
        heavy = out["heavy"]
    return screens, cpu, plans, heavy


PHASES: dict[float, list[dict[str, float]]] = {}
FULL: dict[float, list[float]] = {}


async def keystrokes(count: int, debounce: float) -> list[tuple[float, float, float]]:
    sys.path.insert(0, str(ROOT))
    from textual.widgets import Input

    from ftplan.planner import load_answers
    from ftplan.tui.app import FtplanApp

    app = FtplanApp(load_answers(EXAMPLE), EXAMPLE, detect=None, debounce=debounce, cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:

        async def settled() -> None:
            # Poll the app's state with plain sleeps: pilot.pause() posts a message to every
            # widget each time, main-thread work that would compete with the plan worker.
            while not app.plan_settled or len(app.latencies) < expected or len(app.full_latencies) < expected:
                await asyncio.sleep(0.002)

        expected = 0
        await settled()
        field = app.query_one("#data-examples", Input)
        field.focus()
        field.scroll_visible(animate=False)  # a user types where they can see it
        await asyncio.sleep(0.2)
        await pilot.press("end")
        app.latencies.clear()
        app.latency_phases.clear()
        app.full_latencies.clear()
        for i in range(count):
            await pilot.press("backspace" if i % 2 else str(i % 10))  # 50000 -> 500000 -> 50000 -> 500002 ...
            expected = i + 1
            await settled()
        PHASES[debounce] = list(app.latency_phases)
        FULL[debounce] = list(app.full_latencies)
        return list(app.latencies)


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"median {statistics.median(values) * 1000:6.1f} ms   p90 {p90 * 1000:6.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} (other work shares the CPUs)\n")

    screens, cpu, plans, heavy = first_screen(args.starts)
    with_debounce = asyncio.run(keystrokes(args.keys, 0.1))
    no_debounce = asyncio.run(keystrokes(args.keys, 0.0))

    first = statistics.median(screens)
    rows = [
        (
            "time to first screen",
            f"median {first:6.2f} s    max {max(screens):6.2f} s",
            f"≤ {GOAL_FIRST_SCREEN_S:.1f} s",
            "met" if first <= GOAL_FIRST_SCREEN_S else "MISSED",
        ),
        (
            "  of which CPU time (the app's own)",
            f"median {statistics.median(cpu):6.2f} s    min {min(cpu):6.2f} s",
            "",
            "",
        ),
        ("time to first plan shown", f"median {statistics.median(plans):6.2f} s    max {max(plans):6.2f} s", "", ""),
        (
            "keystroke → top tables (no debounce)",
            ms([t for t, _, _ in no_debounce]),
            f"≤ {GOAL_KEYSTROKE_MS:.0f} ms",
            "met" if statistics.median([t for t, _, _ in no_debounce]) * 1000 <= GOAL_KEYSTROKE_MS else "MISSED",
        ),
        ("keystroke → all tables (no debounce)", ms(FULL[0.0]), "", "second pass: tables below the fold"),
        ("keystroke → tables (100 ms debounce)", ms([t for t, _, _ in with_debounce]), "", "includes the debounce"),
        (
            "  of which after the debounce",
            ms([d for _, d, _ in with_debounce]),
            f"≤ {GOAL_KEYSTROKE_MS:.0f} ms",
            "met" if statistics.median([d for _, d, _ in with_debounce]) * 1000 <= GOAL_KEYSTROKE_MS else "MISSED",
        ),
        ("  of which planning (worker)", ms([p for _, _, p in with_debounce]), "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}   {'measured'.ljust(38)}   {'goal'.ljust(9)}   verdict")
    for name, value, goal, verdict in rows:
        print(f"{name.ljust(width)}   {value.ljust(38)}   {goal.ljust(9)}   {verdict}")
    phases = PHASES.get(0.1) or []
    if phases:
        print("\nafter the debounce, by phase (median):")
        for name in phases[0]:
            print(f"  {name.ljust(22)} {statistics.median(p[name] for p in phases) * 1000:6.1f} ms")
    print(f"\nheavy modules imported by the first screen: {', '.join(heavy) or 'none'}")
    print(f"({args.starts} cold starts, {args.keys} keystrokes per mode)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
