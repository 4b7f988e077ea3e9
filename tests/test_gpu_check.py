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
            "--loss",
            "both",
        ],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("Qwen/")]
    assert not any("outside" in r or "failed:" in r for r in rows), proc.stdout
    # full, lora, qlora x checkpointing off/on x loss chunked/full_logits, planned beside measured
    cases = {(r[1], r[2], r[3]): (r[4], r[5]) for r in rows}
    assert len(rows) == len(cases) == 12
    assert {c[2] for c in cases} == {"chunked", "full_logits"}
    for method in ("full", "lora", "qlora"):
        for ckpt in ("False", "True"):
            # the plan reads training.loss: the two losses plan (and measure) different peaks
            assert cases[method, ckpt, "chunked"][0] != cases[method, ckpt, "full_logits"][0]
            assert cases[method, ckpt, "chunked"][1] != cases[method, ckpt, "full_logits"][1]


def test_gpu_check_without_a_gpu_says_so():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from ftplan.probe.gpu_check import main

    assert main(["--models", "Qwen/Qwen2.5-1.5B"]) == 2
