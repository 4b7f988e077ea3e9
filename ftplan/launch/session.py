"""Everything before the run, shared by the CLI and the TUI: read the project, look at the host,
build the spec, run the checklist; then a Runner wired to the caller's event callback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ftplan.launch.preflight import Check, HostFacts, failed, gather_host, run_checks
from ftplan.launch.process import popen_process
from ftplan.launch.runner import DEFAULT_GRACE_S, ProcessFactory, Runner, new_run_dir
from ftplan.launch.spec import LaunchOptions, LaunchSpec, SpecError, build_launch_spec, option_problems
from ftplan.project import ProjectError, ProjectInfo, latest_checkpoint, load_project

TORCHRUN_LOG_DIR = "runs/torchrun"


class LaunchInputError(Exception):
    """Bad project folder or options (exit 2); ``str`` is the one message."""


@dataclass(frozen=True)
class Prepared:
    project: ProjectInfo
    options: LaunchOptions
    spec: LaunchSpec
    checks: list[Check]
    host: HostFacts
    resume_from: str | None = None

    @property
    def failed(self) -> list[Check]:
        return failed(self.checks)

    @property
    def start_step(self) -> int:
        if not self.resume_from:
            return 0
        suffix = Path(self.resume_from).name.removeprefix("checkpoint-")
        return int(suffix) if suffix.isdigit() else 0


def torchrun_command(python: str) -> tuple[str, ...]:
    """torchrun next to this interpreter, else ``python -m torch.distributed.run``."""
    candidate = Path(python).parent / "torchrun"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return (str(candidate),)
    return (python, "-m", "torch.distributed.run")


def host_options(options: LaunchOptions) -> LaunchOptions:
    """Fill in this machine's interpreter, torchrun, CPU count and torchrun's log folder."""
    return replace(
        options,
        python=sys.executable,
        torchrun=torchrun_command(sys.executable),
        cpus_here=os.cpu_count() or 1,
        log_dir=options.log_dir or TORCHRUN_LOG_DIR,
    )


def prepare(
    directory: str | Path,
    options: LaunchOptions,
    gather: Callable[[ProjectInfo, LaunchOptions], HostFacts] = gather_host,
) -> Prepared:
    """Project, host facts, spec and checklist; raises LaunchInputError for bad input."""
    try:
        project = load_project(directory)
    except ProjectError as exc:
        raise LaunchInputError(str(exc)) from None
    resume_from = None
    if options.resume:
        ckpt = latest_checkpoint(project)
        if ckpt is None:
            raise LaunchInputError(
                f"ftplan launch: --resume: no checkpoint-* folder in {project.path(project.output_dir)} "
                "(checkpoints.output_dir in train_config.toml); nothing to resume from"
            )
        resume_from = str(ckpt)
    problems = option_problems(project, options)
    if problems:  # before gather: it binds --master-port
        raise LaunchInputError(_options_message(problems))
    host = gather(project, options)
    options = replace(options, gpus_here=0 if project.is_cpu else len(host.gpus))
    try:
        spec = build_launch_spec(project, options)
    except SpecError as exc:
        raise LaunchInputError(f"ftplan launch: error: {exc}") from None
    return Prepared(project, options, spec, run_checks(project, options, host), host, resume_from)


def _options_message(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"ftplan launch: error: {problems[0]}"
    return "ftplan launch: error: the launch options do not fit:\n" + "\n".join(f"  - {p}" for p in problems)


def make_runner(
    prepared: Prepared,
    on_event: Callable[[object], None],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    process_factory: ProcessFactory = popen_process,
) -> Runner:
    """A Runner in a fresh DIR/runs/<timestamp> folder for the prepared launch."""
    p, o = prepared.project, prepared.options
    return Runner(
        prepared.spec,
        p,
        new_run_dir(p.directory, o.node_rank),
        on_event=on_event,
        process_factory=process_factory,
        grace_s=grace_s,
        max_steps=o.smoke_steps if o.smoke else None,  # train.py's --max-steps counts from step 0
        start_step=prepared.start_step,
        resume_from=prepared.resume_from,
        log_dir=p.path(o.log_dir) if o.log_dir else None,
        write_end_record=o.node_rank == 0,
    )
