"""Plans that no change meant to move stay byte-identical (see tests/golden/golden.py)."""

from __future__ import annotations

import json

from tests.golden.golden import build, differences, load


def test_golden_plans_unchanged():
    old, new = load(), build()
    assert sorted(old) == sorted(new), "the grid changed: rewrite with `python -m tests.golden.golden --write`"
    moved = {
        c: list(differences(old[c], new[c]))
        for c in old
        if json.dumps(old[c], sort_keys=True) != json.dumps(new[c], sort_keys=True)
    }
    report = "\n".join(f"{c}\n    " + "\n    ".join(d[:10]) for c, d in list(moved.items())[:10])
    assert not moved, (
        f"{len(moved)} of {len(old)} golden plans moved; if on purpose, rewrite with "
        f"`python -m tests.golden.golden --write` and list the change in CHANGELOG.md:\n{report}"
    )
