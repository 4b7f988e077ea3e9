"""The golden set of plans: a grid of answers planned headless, kept as one JSON line per case.

A change that should not move a number proves it did not: `tests/golden/test_golden.py` plans
the grid again and compares every figure. A change that moves numbers on purpose rewrites the
file and says in its commit (and the CHANGELOG) which figures moved and why:

    python -m tests.golden.golden --write        # rewrite tests/golden/plans.jsonl.gz
    python -m tests.golden.golden --diff         # list what moved, case by case
    python -m tests.golden.golden --diff --ignore memory_terms   # a change that adds a key: nothing else moved

The grid: each example answers file × 4 GPUs × {1, 8} GPUs per node × 4 models × 2 sequence
lengths × {sdpa, eager}. Plans are pure (no detection, no data file read), so the file does not
depend on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("plans.jsonl.gz")  # gzip: a rewrite is a small diff
GPUS = ("A100-80GB", "H100-SXM", "RTX-4090", "L4")
GPU_COUNTS = (1, 8)
MODELS = ("meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-0.5B", "mistralai/Mixtral-8x7B-v0.1", "meta-llama/Llama-3.1-70B")
SEQ_LENS = (1024, 4096)
ATTENTION = ("sdpa", "eager")


def cases() -> Iterator[tuple[str, dict]]:
    """(case id, raw answers) for every point of the grid."""
    for example in sorted((ROOT / "examples").glob("*.toml")):
        base = tomllib.loads(example.read_text(encoding="utf-8"))
        for gpu, count, model, seq, attention in itertools.product(GPUS, GPU_COUNTS, MODELS, SEQ_LENS, ATTENTION):
            raw = json.loads(json.dumps(base))
            raw.setdefault("model", {})["name"] = model
            raw.setdefault("hardware", {}).update(gpu=gpu, gpus_per_node=count)
            raw.setdefault("data", {})["max_seq_len"] = seq
            raw.setdefault("training", {})["attention"] = attention
            yield f"{example.stem}|{gpu}x{count}|{model}|{seq}|{attention}", raw


def plan_record(raw: dict) -> dict:
    """The plan's JSON without the version stamp (a release must not move the golden set)."""
    from ftplan.planner import parse_answers
    from ftplan.planner.plan import make_plan

    plan = json.loads(make_plan(parse_answers(raw)).to_json())
    plan.pop("ftplan_version", None)
    return plan


def build() -> dict[str, dict]:
    return {case: plan_record(raw) for case, raw in cases()}


def load() -> dict[str, dict]:
    lines = gzip.decompress(GOLDEN.read_bytes()).decode("utf-8").splitlines()
    return {rec["case"]: rec["plan"] for rec in map(json.loads, lines)}


def write(plans: dict[str, dict]) -> None:
    text = "".join(
        json.dumps({"case": c, "plan": p}, sort_keys=True, separators=(",", ":")) + "\n" for c, p in plans.items()
    )
    GOLDEN.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def differences(old: object, new: object, path: str = "", ignore: frozenset[str] = frozenset()) -> Iterator[str]:
    """Each leaf that differs, as `path: old -> new` (keys named in ``ignore`` left out, at any depth)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted((set(old) | set(new)) - ignore):
            where = f"{path}.{key}" if path else key
            yield from differences(old.get(key, "<absent>"), new.get(key, "<absent>"), where, ignore)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from differences(a, b, f"{path}[{i}]", ignore)
    elif old != new:
        yield f"{path}: {old!r} -> {new!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the golden file from today's planner")
    parser.add_argument("--diff", action="store_true", help="print what moved against the golden file")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY", help="leave this key out (repeatable)")
    args = parser.parse_args(argv)
    plans = build()
    if args.write:
        write(plans)
        print(f"wrote {len(plans)} plans to {GOLDEN.relative_to(ROOT)}")
        return 0
    old = load()
    moved = 0
    for case in sorted(set(old) | set(plans)):
        diffs = list(differences(old.get(case, {}), plans.get(case, {}), ignore=frozenset(args.ignore)))
        if diffs:
            moved += 1
            if args.diff:
                print(case)
                for line in diffs[:40]:
                    print("   ", line)
    print(f"{moved} of {len(plans)} plans moved")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
