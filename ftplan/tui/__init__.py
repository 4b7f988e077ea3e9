"""The Textual app. `run_app(answers_path)` is what `ftplan [--answers FILE --interactive]` calls."""

from __future__ import annotations

import sys

__all__ = ["run_app"]


def run_app(answers_path: str | None) -> int:
    """Open the app (pre-filled from `answers_path` when given); the exit code for the shell.

    A file that is valid TOML but has bad answers still opens, with the problems marked on
    their fields so they can be fixed and saved; an unreadable file exits 2 like the CLI.
    """
    raw = None
    if answers_path:
        import tomllib
        from pathlib import Path

        from ftplan.planner import AnswersError, Problem

        path = Path(answers_path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raw = {}  # a new file: the app saves to it
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            print(AnswersError([Problem("", f"cannot read: {exc}")], str(path)).render(), file=sys.stderr)
            return 2
    from ftplan.tui.app import FtplanApp

    app = FtplanApp(None, answers_path, raw=raw)
    result = app.run()
    return app.return_code if app.return_code is not None else (result or 0)
