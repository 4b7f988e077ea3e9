"""The command line: `ftplan`, `ftplan --answers FILE [--json] [--out DIR]`, `launch`, `probe`.

A thin shell: it reads answers, asks the planner, prints. Bad input exits 2 with one message
that lists every problem; nothing here lets a traceback reach the user for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (argparse's own convention)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _plan_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ftplan",
        description="Plan LLM fine-tuning: full, LoRA or QLoRA, with exact memory, time and cost.",
        epilog="Subcommands: `ftplan launch DIR` runs an exported project; `ftplan probe DIR` checks the plan on "
        "real steps; `ftplan schema` prints the answers file's JSON Schema.",
    )
    p.add_argument("--answers", metavar="FILE", help="answers TOML file; without it the app opens")
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout, nothing else")
    p.add_argument("--out", metavar="DIR", help="write the training project into DIR")
    p.add_argument("--force", action="store_true", help="overwrite files edited since the last export")
    p.add_argument("--interactive", action="store_true", help="open the app pre-filled from --answers")
    p.add_argument("--version", action="store_true", help="print the version")
    return p


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def plan_from_file(path: str, detect: bool = True):
    """Load answers and plan them; raises AnswersError for bad input."""
    from ftplan.context import build_context
    from ftplan.planner import load_answers, make_plan

    answers = load_answers(path)
    return answers, make_plan(answers, build_context(answers, detect=detect))


def run_plan(args: argparse.Namespace) -> int:
    from ftplan.planner import AnswersError

    try:
        answers, plan = plan_from_file(args.answers)
    except AnswersError as exc:
        _err(exc.render())
        return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(plan.to_json() + "\n")
    else:
        from rich.console import Console

        from ftplan.render import plan_renderable

        Console().print(plan_renderable(plan))
    if args.out:
        from ftplan.export import ExportError, export_project

        try:
            result = export_project(
                plan, Path(args.answers).read_text(encoding="utf-8"), Path(args.out), force=args.force
            )
        except ExportError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
        _err(result.summary())
    return EXIT_OK


def run_schema(argv: list[str]) -> int:
    """`ftplan schema`: the answers file's JSON Schema on stdout, for editors and other tools."""
    _Parser(prog="ftplan schema", description="Print the answers file's JSON Schema.").parse_args(argv)
    import json

    from ftplan.reference import answers_schema

    sys.stdout.write(json.dumps(answers_schema(), indent=2) + "\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "launch":
            from ftplan.launch.cli import main as launch_main

            return launch_main(argv[1:])
        if argv and argv[0] == "schema":
            return run_schema(argv[1:])
        if argv and argv[0] == "probe":
            from ftplan.probe.cli import main as probe_main

            return probe_main(argv[1:])
        args = _plan_parser().parse_args(argv)
        if args.version:
            from ftplan import __version__

            print(__version__)
            return EXIT_OK
        if args.answers and not args.interactive:
            return run_plan(args)
        if args.json or args.out:
            _err("ftplan: error: --json and --out need --answers FILE")
            return EXIT_BAD_INPUT
        from ftplan.tui import run_app

        return run_app(args.answers)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
