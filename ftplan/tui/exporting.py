"""The export screen's view of `ftplan.export`: previews with per-file status, and the write.

Kept apart from the screen so the adapter is the only code that knows the exporter's API.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ftplan.planner import Plan

STATUS_TEXT = {
    "new": "new",
    "same": "unchanged",
    "update": "will be overwritten",
    "edited": "edited by hand: kept unless forced",
}


@dataclass(frozen=True)
class FilePreview:
    name: str
    text: str
    status: str
    """new | same | update | edited (see STATUS_TEXT)."""


def exporter_available() -> bool:
    return importlib.util.find_spec("ftplan.export") is not None


def _edited_by_hand(out_dir: Path) -> set[str] | None:
    """Files changed since the last export, when the exporter can say; None when it cannot."""
    try:
        from ftplan import export
    except ImportError:
        return None
    finder = getattr(export, "edited_files", None)
    if finder is None:
        return None
    try:
        return set(finder(out_dir))
    except Exception:
        return None


def preview_files(plan: Plan, answers_text: str, out_dir: Path, method: str | None) -> list[FilePreview]:
    from ftplan.export import render_project

    files = render_project(plan, answers_text, method=method)
    out_dir = Path(out_dir).expanduser()
    edited = _edited_by_hand(out_dir) if out_dir.is_dir() else set()
    previews = []
    for name in sorted(files, key=lambda n: (n != "train.py", n)):
        text = files[name]
        target = out_dir / name
        if not target.is_file():
            status = "new"
        else:
            try:
                current = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
            if current == text:
                status = "same"
            elif edited is not None and name in edited:
                status = "edited"
            else:
                status = "update"
        previews.append(FilePreview(name, text, status))
    return previews


def write_project(plan: Plan, answers_text: str, out_dir: Path, force: bool, method: str | None) -> str:
    """Write the project; returns the exporter's summary. Raises `ftplan.export.ExportError`."""
    from ftplan.export import export_project

    return export_project(plan, answers_text, Path(out_dir).expanduser(), force=force, method=method).summary()
