"""slurm.sbatch by value for a two-node plan."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ftplan.export.slurm import _walltime, render_sbatch
from ftplan.launch import load_project

from .conftest import answers_text, make_project


def test_two_node_sbatch(tmp_path):
    p = load_project(make_project(tmp_path / "p", answers_text(gpu="H100-SXM", gpus=8, nodes=2)))
    text = render_sbatch(p, partition="gpu")
    head = text.split("\n\n")[0].splitlines()
    assert head[3:] == [
        "#SBATCH --job-name=ftplan",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=64",
        f"#SBATCH --time={_walltime(p.hours)}",
        "#SBATCH --output=runs/slurm-%j.out",
        "#SBATCH --partition=gpu",
    ]
    assert (
        "srun --kill-on-bad-exit=1 bash -c 'python -m torch.distributed.run --nnodes $SLURM_NNODES "
        "--node_rank $SLURM_NODEID --master_addr $MASTER_ADDR --master_port $MASTER_PORT --nproc_per_node 8 "
        '--log-dir runs/torchrun train.py --config train_config.toml "$@"\' bash "$@"'
    ) in text
    assert "export FTPLAN_DIST_BACKEND=nccl" in text


def test_walltime():
    assert _walltime(0.0) == "00:30:00"
    assert _walltime(1.0) == "01:42:00"
    assert _walltime(30.0) == "1-12:30:00"


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_sbatch_is_valid_bash(tmp_path):
    p = load_project(make_project(tmp_path / "p", answers_text(gpus=2, nodes=2)))
    script = tmp_path / "slurm.sbatch"
    script.write_text(render_sbatch(p))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
