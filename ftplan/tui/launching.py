"""The adapter point between the launch screen and `ftplan.launch`.

`make_source(project_dir, dry_run=..., smoke=...)` returns a `RunSource` (ftplan.tui.runs).
Until `ftplan.launch` is available in this build it returns a source that explains why it
cannot run; wire the real Runner here (translate its events to Started/Output/Progress/Finished).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ftplan.tui.runs import Finished, Output, Post, RunSource


class UnavailableSource:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def run(self, post: Post) -> None:
        post(Output([self.reason]))
        post(Finished(2, self.reason))

    def stop(self) -> None:
        pass


def launcher_available() -> bool:
    return importlib.util.find_spec("ftplan.launch") is not None


def make_source(project_dir: Path, *, dry_run: bool = False, smoke: bool = False) -> RunSource:
    if not launcher_available():
        return UnavailableSource("ftplan.launch is not part of this build yet: run `bash launch.sh` in the project folder.")
    return UnavailableSource("ftplan.launch is present but not wired into the app yet (ftplan/tui/launching.py).")
