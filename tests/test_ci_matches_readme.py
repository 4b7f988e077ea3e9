"""CI runs the README's test command: the two must not drift apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    second = [line for line in readme.splitlines() if "pytest" in line][0]
    pytest_command = re.search(r"python3 -m pytest[^#]*", second).group(0).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert pytest_command in [line.strip() for line in ci], f"{pytest_command!r} is not a line of .ci/run"
    assert "pip install torch==2.13.0" in second and any("torch==2.13.0" in line for line in ci)
