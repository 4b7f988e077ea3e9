"""The export screen's view of `ftplan.export`: previews with per-file status, and the write.

Kept apart from the screen so the adapter is the only code that knows the exporter's API.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftplan.planner.plan import Plan


STATUS_TEXT = {
    "new": "new",
    "same": "unchanged",
    "update": "will be overwritten",
    "edited": "edited by hand: kept",
}


@dataclass(frozen=True)
class FilePreview:
    name: str
    text: str
    status: str
    """new | same | update | edited (see STATUS_TEXT)."""


def exporter_available() -> bool:
    return importlib.util.find_spec("ftplan.export") is not None


def preview_files(plan: Plan, answers_text: str, out_dir: Path, method: str | None) -> list[FilePreview]:
    """Every file the export would write, with what writing would do to the folder's copy.

    Uses the exporter's manifest (the sha256 of each file as last exported) the way
    `export_project` does: a file that differs from both the new text and its last export was
    edited by hand (or was never ftplan's) and is kept unless forced.
    """
    from ftplan.export import render_project
    from ftplan.export.write import read_manifest, sha256

    out = Path(out_dir).expanduser().absolute()
    files = render_project(plan, answers_text, method, out_dir=out)
    recorded = read_manifest(out) if out.is_dir() else {}
    previews = []
    for name in sorted(files, key=lambda n: (n != "train.py", n)):
        text = files[name]
        target = out / name
        if not target.is_file():
            status = "new"
        else:
            try:
                current = sha256(target.read_bytes())
            except OSError:
                current = ""
            if current == sha256(text):
                status = "same"
            elif current == recorded.get(name):
                status = "update"
            else:
                status = "edited"
        previews.append(FilePreview(name, text, status))
    return previews


def write_project(plan: Plan, answers_text: str, out_dir: Path, force: bool, method: str | None) -> str:
    """Write the project; returns the exporter's summary. Raises `ftplan.export.ExportError`."""
    from ftplan.export import export_project

    return export_project(plan, answers_text, Path(out_dir).expanduser(), force=force, method=method).summary()
