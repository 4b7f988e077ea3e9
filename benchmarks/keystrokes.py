"""Keystrokes from a bare `ftplan` to a recommendation, and to an exported project.

    PYTHONPATH=. python benchmarks/keystrokes.py [--size 120x40] [--keep]

Drives the real app in tmux as a user at a terminal would: `tmux send-keys` one key at a
time (every typed character counts one), `tmux capture-pane` to wait for the screen to show
what the next key needs. The scenario is issue 14's: "Qwen2.5-7B, customer-support chat,
30,000 examples of ~600 tokens, 2× RTX-4090, $200, 12 hours". The machine's GPUs are hidden
(its PATH holds no nvidia-smi, so the GPU is picked by hand: where the app detects the
GPUs it pre-fills type and count, and those keys are not needed).

Prints every step, then last:
    keystrokes to a recommendation: N
    keystrokes to an exported project: N
Goals: at most 40 and 55. Exit code 1 if a goal is missed or the screen never showed a step.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RECOMMENDATION = 40
GOAL_EXPORT = 55
SESSION = f"ftplan-keys-{os.getpid()}"

# (keys, what the screen must show before the next step): tmux key names, one per press.
QUICK_START: list[tuple[str, list[str], str]] = [
    ("model: a few characters, Enter takes the completion", [*"qwen2.5-7", "Enter"], r"Qwen/Qwen2\.5-7B\b"),
    ("objective: chat is the default (instruction)", ["Tab"], r"instruction"),
    ("GPU: Enter opens the list", ["Enter"], r"A100-40GB \(40 GiB"),
    ("type to find it", [*"rtx-4"], r"RTX-4090 \(24 GiB"),
    ("Enter takes it", ["Enter"], r"RTX-4090 \(24 GiB.*▼"),
    ("GPUs per node", ["Tab", "2"], r"2× RTX-4090"),
    ("examples", ["Tab", *"30k"], r"30,000 ex"),
    ("avg tokens", ["Tab", *"600"], r"× 600\s"),
    ("budget (USD)", ["Tab", *"200"], r"budget covers|> budget"),
    ("deadline (hours)", ["Tab", *"12"], r"Recommendation: \w+"),
]
STEP_QUIET_S = 0.3
"""After each step: the screen must stay the same this long (an overlay opened, a plan drawn)."""
SETTLED_S = 1.0
"""After the last key: the screen must stay the same this long (the debounced plan is drawn)."""
EXPORT: list[tuple[str, list[str], str]] = [
    ("export screen", ["C-e"], r"files for \w+ in"),
    ("Enter in the folder field writes", ["Enter"], r"Project written|\bwritten\b"),
]


class Tmux:
    def __init__(self, size: str, cwd: Path, env: dict[str, str]) -> None:
        width, height = size.split("x")
        self.cwd = cwd
        command = f"{shutil.which('env')} " + " ".join(f"{k}={v}" for k, v in env.items())
        command += f" {sys.executable} -m ftplan"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", SESSION, "-x", width, "-y", height, "-c", str(cwd), command],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True, check=False
        ).stdout

    def press(self, key: str) -> None:
        literal = len(key) == 1
        args = ["tmux", "send-keys", "-t", SESSION] + (["-l", key] if literal else [key])
        subprocess.run(args, check=True)
        time.sleep(0.05)  # a fast typist; the app debounces, the screen is waited for below

    def wait_for(self, pattern: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.screen()):
                return True
            time.sleep(0.1)
        return False

    def wait_stable(self, quiet: float, timeout: float) -> None:
        """Until two captures `quiet` seconds apart are the same."""
        end, before = time.monotonic() + timeout, self.screen()
        while time.monotonic() < end:
            time.sleep(quiet)
            now = self.screen()
            if now == before:
                return
            before = now

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], check=False, capture_output=True)


def recommendation_of(screen: str) -> str:
    """The summary line and the recommendation's title, as the screen shows them."""
    lines = [line for line in screen.splitlines() if "Recommendation:" in line or " ex × " in line]
    return "\n".join("     " + re.sub(r".*▕\s*", "", line).strip() for line in lines)


def run_steps(tmux: Tmux, steps, timeout: float) -> int | None:
    """Press each step's keys and wait for its screen; the keys pressed, or None on a timeout."""
    pressed = 0
    for what, keys, pattern in steps:
        for key in keys:
            tmux.press(key)
        pressed += len(keys)
        ok = tmux.wait_for(pattern, timeout)
        if ok:
            tmux.wait_stable(STEP_QUIET_S, timeout)  # a user looks before the next key, too
        print(f"{pressed:3d}  {what}: {' '.join(keys)}" + ("" if ok else "  -- NEVER SHOWN"), flush=True)
        if not ok:
            print(tmux.screen(), file=sys.stderr)
            return None
    return pressed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="120x40", help="terminal size, WxH (default 120x40)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each screen")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the exported project)")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("keystrokes.py needs tmux (apt-get install -y tmux)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ftplan-keys-"))
    (work / "nobin").mkdir()
    # PATH without nvidia-smi: the same bare start on every machine (no GPU detected, picked by hand)
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "PATH": str(work / "nobin")}
    tmux = Tmux(args.size, work, env)
    started = time.monotonic()
    try:
        if not tmux.wait_for(r"model name", args.timeout):
            print(tmux.screen(), file=sys.stderr)
            print("the app never showed its first screen", file=sys.stderr)
            return 1
        to_plan = run_steps(tmux, QUICK_START, args.timeout)
        if to_plan is not None:
            tmux.wait_stable(SETTLED_S, args.timeout)
            print(recommendation_of(tmux.screen()))
        plan_s = time.monotonic() - started
        more = None if to_plan is None else run_steps(tmux, EXPORT, args.timeout)
        to_export = None if more is None else to_plan + more
        export_s = time.monotonic() - started
        written = to_export is not None and any(p.name == "train.py" for p in work.rglob("train.py"))
        if to_export is not None and not written:
            print("the export screen said written, but no train.py is in the folder", file=sys.stderr)
            to_export = None
    finally:
        tmux.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder: {work}")
    if to_plan is not None:
        print(f"time to a recommendation: {plan_s:.0f} s (waiting for the screen included)")
    if to_export is not None:
        print(f"time to an exported project: {export_s:.0f} s")
    print(f"keystrokes to a recommendation: {to_plan if to_plan is not None else 'not reached'}")
    print(f"keystrokes to an exported project: {to_export if to_export is not None else 'not reached'}")
    ok = to_plan is not None and to_export is not None
    return 0 if ok and to_plan <= GOAL_RECOMMENDATION and to_export <= GOAL_EXPORT else 1


if __name__ == "__main__":
    sys.exit(main())
