"""`ftplan launch DIR`: preflight checklist, the exact command, then the run with progress.

Exit codes: 0 the run (or --dry-run) succeeded; 1 the run failed (crash, OOM, a worker died) or
preflight failed; 2 bad arguments or a broken project folder; 130 the run was interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from ftplan.launch.runner import DEFAULT_GRACE_S, EXIT_FAILED, EXIT_OK
from ftplan.launch.session import LaunchInputError, host_options, make_runner, prepare
from ftplan.launch.spec import DEFAULT_SMOKE_STEPS, LaunchOptions
from ftplan.project import MASTER_PORT

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _integer(text: str) -> int:
    """An argparse type: any integer; the ranges are checked together with the project
    (``spec.option_problems``), so that every bad option is named in one message."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("should be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ftplan launch",
        description="Run an exported training project on this machine: preflight checks, then train.py "
        "(python, or torchrun for several GPUs or nodes) with live progress.",
        epilog="Arguments after `--` go to train.py.",
    )
    p.add_argument("dir", metavar="DIR", help="the exported project folder")
    p.add_argument("--dry-run", action="store_true", help="print the checklist and the exact command, run nothing")
    p.add_argument(
        "--smoke", action="store_true", help="run a few steps only (--max-steps); on the CPU when there is no GPU"
    )
    p.add_argument("--smoke-steps", type=_integer, default=DEFAULT_SMOKE_STEPS, metavar="N",
                   help=f"steps of a --smoke run (default {DEFAULT_SMOKE_STEPS})")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint-* in the output dir")
    p.add_argument("--nnodes", type=_integer, metavar="N", help="machines in the run (default: the plan's)")
    p.add_argument("--node-rank", type=_integer, default=0, metavar="R", help="this machine's rank (0 = master)")
    p.add_argument("--master-addr", metavar="A", help="address of node 0 (multi-node runs)")
    p.add_argument("--master-port", type=_integer, default=MASTER_PORT, metavar="P",
                   help=f"rendezvous port on node 0 (default {MASTER_PORT})")  # fmt: skip
    p.add_argument("--grace", type=_seconds, default=DEFAULT_GRACE_S, metavar="SECONDS",
                   help=f"after SIGTERM, wait this long before SIGKILL (default {DEFAULT_GRACE_S:g}, more than torchrun's 30)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="launch even when a preflight check fails")
    p.add_argument("--quiet", action="store_true", help="do not echo the run's output (it is still logged)")
    p.add_argument(
        "--probe",
        action="store_true",
        help="run `ftplan probe` for a few real steps first; refuse to start a run that would not fit",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    from rich.console import Console

    # soft_wrap: paths and commands stay on one line, copy-pasteable, whatever the terminal width.
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    options = host_options(
        LaunchOptions(
            dry_run=args.dry_run,
            smoke=args.smoke,
            resume=args.resume,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            master_addr=args.master_addr,
            master_port=args.master_port,
            smoke_steps=args.smoke_steps,
            extra_args=tuple(extra),
        )
    )
    try:
        prepared = prepare(args.dir, options)
    except LaunchInputError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    from ftplan.launch.preflight import render_checklist

    spec, project, options = prepared.spec, prepared.project, prepared.options
    console.print(render_checklist(prepared.checks))
    where = "on the CPU" if spec.on_cpu else f"on {spec.nproc} GPU{'s' if spec.nproc > 1 else ''}"
    nodes = f", node {options.node_rank} of {spec.nnodes}" if spec.nnodes > 1 else ""
    resuming = f"; resuming from {prepared.resume_from}" if prepared.resume_from else ""
    kind = f"{options.smoke_steps}-step smoke run" if options.smoke else "run"
    planned = f" (plan: {project.gpus_per_node}× {project.gpu})" if spec.on_cpu and not project.is_cpu else ""
    console.print(f"\n[bold]{project.method}[/] {kind} {where}{planned}{nodes}{resuming}")
    console.print("[bold]Environment[/] (added to yours):")
    for k, v in sorted(spec.env.items()):
        console.print(f"  {k}={shlex.quote(v)}", markup=False)
    console.print("[bold]Command[/]:")
    console.print(f"  cd {shlex.quote(spec.cwd)}", markup=False)
    console.print(f"  {shlex.join(spec.argv)}", markup=False)
    if args.dry_run:
        return EXIT_OK
    bad = prepared.failed
    if bad and not args.force:
        err.print(
            f"ftplan launch: preflight failed ({', '.join(c.name for c in bad)}); fix the ✗ items or pass --force"
        )
        return EXIT_FAILED
    if args.probe:
        from ftplan.launch.probe_gate import gate

        go, message = gate(args.dir)
        (console if go else err).print(message, markup=False)
        if not go and not args.force:
            return EXIT_FAILED
    from ftplan.launch.display import ConsoleDisplay

    runner = make_runner(prepared, ConsoleDisplay(console, show_output=not args.quiet), grace_s=args.grace)

    def on_signal(signum, frame):
        runner.stop("interrupted" if signum == signal.SIGINT else "terminated")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = runner.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    (console if result.exit_code == EXIT_OK else err).print(result.message, markup=False)
    return result.exit_code
