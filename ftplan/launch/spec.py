"""Project + options in, the exact command out: a pure function, no I/O.

``build_launch_spec`` decides how an exported project starts: plain ``python train.py`` for one
process, ``torchrun --standalone --nproc_per_node N`` for several on one machine, and a static
``--nnodes/--node_rank/--master_addr/--master_port`` rendezvous for several machines. A CPU plan
(or a ``--smoke`` run on a machine without a GPU) hides the GPUs and uses gloo. The runner only
spawns what this built, and ``--dry-run`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftplan.project import MASTER_PORT, ProjectInfo, run_environment

DEFAULT_SMOKE_STEPS = 5


class SpecError(ValueError):
    """The options do not fit the project (e.g. a node rank beyond the node count)."""


@dataclass(frozen=True)
class LaunchOptions:
    """What the user asked for on the command line, plus the host facts the spec depends on."""

    dry_run: bool = False
    smoke: bool = False
    resume: bool = False
    nnodes: int | None = None
    """Machines in the run; the plan's ``hardware.nodes`` when left out."""
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = MASTER_PORT
    smoke_steps: int = DEFAULT_SMOKE_STEPS
    extra_args: tuple[str, ...] = ()
    """Passed to train.py after ftplan's own flags."""
    python: str = "python"
    torchrun: tuple[str, ...] = ("torchrun",)
    gpus_here: int | None = None
    """GPUs visible on this machine (None: unknown, assume the plan's)."""
    cpus_here: int = 1
    log_dir: str | None = None
    """Where torchrun writes its per-worker error files (the run's folder)."""


@dataclass(frozen=True)
class LaunchSpec:
    """The command to run: ``env`` holds only what ftplan adds to the inherited environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    nproc: int = 1
    nnodes: int = 1
    on_cpu: bool = False

    def shell(self) -> str:
        """The command as one copy-pasteable shell line, environment first."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cmd = shlex.join(self.argv)
        return f"cd {shlex.quote(self.cwd)} && {env + ' ' if env else ''}{cmd}"


def runs_on_cpu(project: ProjectInfo, options: LaunchOptions) -> bool:
    """A CPU plan, or a smoke run of a GPU plan on a machine with no GPU."""
    return project.is_cpu or (options.smoke and options.gpus_here == 0)


def option_problems(project: ProjectInfo, options: LaunchOptions) -> list[str]:
    """Every way the launch options do not fit the project, one line each (empty: they fit).

    Checked before anything touches the host (preflight binds ``--master-port``), so that a bad
    value is one message and exit 2, never a traceback."""
    nnodes = options.nnodes if options.nnodes is not None else project.nodes
    problems = []
    if nnodes < 1:
        problems.append(f"--nnodes should be at least 1, not {nnodes}")
    elif not 0 <= options.node_rank < nnodes:
        problems.append(f"--node-rank {options.node_rank} is outside 0..{nnodes - 1} (--nnodes {nnodes})")
    if not 0 < options.master_port < 65536:
        problems.append(f"--master-port should be 1..65535, not {options.master_port}")
    if options.smoke_steps < 1:
        problems.append(f"--smoke-steps should be at least 1, not {options.smoke_steps}")
    addr = options.master_addr
    if addr is not None and (not addr.strip() or any(c.isspace() for c in addr)):
        problems.append(f"--master-addr {addr!r} is not a host name or address")
    if nnodes > 1 and not (addr or "").strip():
        problems.append(
            f"this run spans {nnodes} nodes: start it on each node with --nnodes {nnodes} "
            "--node-rank R --master-addr ADDRESS-OF-NODE-0 [--master-port P]"
        )
    return problems


def build_launch_spec(project: ProjectInfo, options: LaunchOptions) -> LaunchSpec:
    """The exact argv, added environment and working directory that run ``project``."""
    problems = option_problems(project, options)
    if problems:
        raise SpecError("; ".join(problems))
    nnodes = options.nnodes if options.nnodes is not None else project.nodes
    nproc = project.gpus_per_node
    cpu = runs_on_cpu(project, options)

    train = [project.train_script, "--config", project.config_file]
    if options.smoke:
        # --smoke too, not only --max-steps: train.py then writes in output_dir/smoke, so a later
        # --resume of the real run never continues the smoke schedule.
        train += ["--smoke", "--max-steps", str(options.smoke_steps)]
    if options.resume:
        train.append("--resume")
    train += list(options.extra_args)

    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    env.update(run_environment(cpu))
    if cpu:  # the cores shared between the processes
        env["OMP_NUM_THREADS"] = str(max(1, options.cpus_here // nproc))

    # DeepSpeed wants the distributed environment (RANK, MASTER_ADDR...) even for one process.
    if nproc == 1 and nnodes == 1 and not project.deepspeed and not project.uses_fsdp:  # FSDP2 too
        argv = [options.python, *train]
    else:
        argv = list(options.torchrun)
        if nnodes == 1:
            argv += ["--standalone"]
        else:
            argv += [
                "--nnodes", str(nnodes),
                "--node_rank", str(options.node_rank),
                "--master_addr", str(options.master_addr),
                "--master_port", str(options.master_port),
            ]  # fmt: skip
        argv += ["--nproc_per_node", str(nproc)]
        if options.log_dir:
            argv += ["--log-dir", options.log_dir]
        argv += train
    return LaunchSpec(argv=argv, env=env, cwd=project.directory, nproc=nproc, nnodes=nnodes, on_cpu=cpu)
