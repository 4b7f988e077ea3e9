"""An sbatch script for multi-node plans: one task per node, each running torchrun.

The exporter may write it next to launch.sh (``slurm.sbatch``). Rendezvous is static, like
``ftplan launch --nnodes``: node 0 (the first host of the allocation) is the master.
"""

from __future__ import annotations

import math
import shlex

from ftplan.project import MASTER_PORT, ProjectInfo, run_environment, shell_exports


def _walltime(hours: float) -> str:
    """The plan's hours plus 20 % and 30 minutes for loading and checkpoints, as D-HH:MM:SS."""
    minutes = max(30, math.ceil(hours * 60 * 1.2) + 30)
    days, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:00" if days else f"{h:02d}:{m:02d}:00"


def render_sbatch(
    project: ProjectInfo,
    *,
    job_name: str = "ftplan",
    partition: str | None = None,
    cpus_per_gpu: int = 8,
    port: int = MASTER_PORT,
    python: str = "python",
) -> str:
    """The text of slurm.sbatch for the project's plan (nodes × GPUs per node)."""
    gpus = project.gpus_per_node
    lines = [
        "#!/bin/bash",
        f"# {project.method} fine-tuning of {project.model_name}: {project.nodes} node(s) × {gpus} {project.gpu}",
        "# Written by ftplan. Submit with: sbatch slurm.sbatch",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={project.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if not project.is_cpu:
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    lines += [
        f"#SBATCH --cpus-per-task={cpus_per_gpu * gpus}",
        f"#SBATCH --time={_walltime(project.hours)}",
        "#SBATCH --output=runs/slurm-%j.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    env = shell_exports({"PYTHONUNBUFFERED": "1", **run_environment(project.is_cpu)})
    torchrun = " ".join(
        [
            shlex.quote(python), "-m", "torch.distributed.run",
            "--nnodes", "$SLURM_NNODES",
            "--node_rank", "$SLURM_NODEID",
            "--master_addr", "$MASTER_ADDR",
            "--master_port", "$MASTER_PORT",
            "--nproc_per_node", str(gpus),
            "--log-dir", "runs/torchrun",
            project.train_script, "--config", project.config_file, '"$@"',
        ]
    )  # fmt: skip
    body = [
        "",
        "set -euo pipefail",
        'cd "${SLURM_SUBMIT_DIR:-.}"',
        "mkdir -p runs",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        f"MASTER_PORT={port}",
        "export MASTER_ADDR MASTER_PORT",
        *env,
        "",
        "# One task per node; $SLURM_NODEID is evaluated on each node, hence bash -c.",
        f"srun --kill-on-bad-exit=1 bash -c '{torchrun}' bash \"$@\"",
        "",
    ]
    return "\n".join(lines + body)
