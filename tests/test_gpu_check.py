"""benchmarks/gpu_check.sh --dry-run: the GPU check's code path on tiny configs on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run():
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--dry-run",
            "--models",
            "Qwen/Qwen2.5-1.5B",
            "--seq",
            "32",
        ],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("Qwen/")]
    assert len(rows) == 6  # full, lora, qlora x checkpointing off/on
    assert not any("outside tolerance" in r or "failed" in r for r in rows)


def test_gpu_check_without_a_gpu_says_so():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from ftplan.probe.gpu_check import main

    assert main(["--models", "Qwen/Qwen2.5-1.5B"]) == 2
