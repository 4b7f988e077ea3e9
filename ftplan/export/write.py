"""Write a rendered project into a folder: atomically, and never over the user's own edits.

`.ftplan-manifest.json` records the sha256 of every file as ftplan last wrote it. On a re-export
a file whose bytes differ from both the record and the new text was edited by the user (or was
never ftplan's): it is kept unless `force`; every other file is written, and the summary warns with
the kept files' names (exit code 0). The manifest keeps the kept files' old digests, so they count
as edited on the next re-export too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ftplan import __version__
from ftplan.export.project import ExportError, pick_method, render_project
from ftplan.planner import Plan
from ftplan.project import MANIFEST

EXECUTABLE = {"launch.sh", "train.py", "merge_adapter.py"}
GITIGNORE = "# Written by ftplan: training outputs stay out of git.\noutput/\noutput-merged/\n"


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


@dataclass
class ExportResult:
    out_dir: Path
    method: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Files the user edited since the last export, left as they are."""
    removed: list[str] = field(default_factory=list)
    """Files of an earlier export this plan no longer needs (unedited ones only)."""
    git_root: Path | None = None

    @property
    def files(self) -> list[str]:
        return sorted({*self.written, *self.unchanged, *self.kept})

    def git_add_command(self) -> str:
        names = [*self.files, MANIFEST]
        try:
            base = os.path.relpath(self.out_dir, Path.cwd())
        except ValueError:  # another drive on Windows
            base = str(self.out_dir)
        return "git add " + " ".join(shlex.quote(os.path.join(base, n) if base != "." else n) for n in names)

    def summary(self) -> str:
        lines = [f"Exported the {self.method} project to {self.out_dir}"]
        if self.written:
            lines.append(f"  written:   {', '.join(self.written)}")
        if self.unchanged:
            lines.append(f"  unchanged: {', '.join(self.unchanged)}")
        if self.removed:
            lines.append(f"  removed (no longer part of the plan): {', '.join(self.removed)}")
        if self.kept:
            lines.append(f"  kept your edits: {', '.join(self.kept)} (re-export with --force to overwrite them)")
            lines.append(self.kept_warning())
        if self.git_root is not None:
            lines.append(f"Inside the git work tree {self.git_root}; to commit the project:")
            lines.append(f"  {self.git_add_command()}")
        lines.append(f"Next: {self.next_command()}   (a smoke test)")
        return "\n".join(lines)

    def next_command(self) -> str:
        """The smoke-test command, shell-quoted so that pasting it runs nothing but bash."""
        return shlex.join(["bash", str(self.out_dir / "launch.sh"), "--max-steps", "5"])

    def kept_warning(self) -> str:
        return (
            f"Warning: not overwritten, edited since the last export: {', '.join(self.kept)}; they may not match "
            "the new plan. Re-run with --force to replace them (your edits would be lost)."
        )


def git_root(path: Path) -> Path | None:
    """The work tree that contains `path` (a `.git` folder or file above it), if any."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def atomic_write(path: Path, text: str, executable: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755 if executable else 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def prepare_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file, not a folder; choose another --out (a new or existing folder)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"{out}: cannot create it, because {parent} is a file")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the folder: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise ExportError(f"{out}: not writable")


def export_project(
    plan: Plan, answers_text: str, out_dir: Path, force: bool = False, method: str | None = None
) -> ExportResult:
    """Write the project for `method` (default: the recommendation) into `out_dir`.

    Files the user changed since the last export are kept unless `force`; the rest is written and
    `ExportResult.kept` names them (the summary warns). ExportError only for a folder it cannot use.
    """
    out = Path(out_dir).expanduser().absolute()
    method = pick_method(plan, method)
    prepare_folder(out)
    files = render_project(plan, answers_text, method, out_dir=out)
    recorded = read_manifest(out)
    if not (out / ".gitignore").exists() or ".gitignore" in recorded:  # never touch the user's own
        files[".gitignore"] = GITIGNORE
    result = ExportResult(out, method, git_root=git_root(out))
    manifest: dict[str, str] = {}
    blocked = [name for name in files if (out / name).is_dir()]
    if blocked:  # before writing anything: a refused export leaves the folder as it was
        raise ExportError(
            "; ".join(f"{out / name}: is a folder where the project needs its file {name}" for name in blocked)
            + "; move it away"
        )
    for name, text in files.items():
        path = out / name
        new = sha256(text)
        if path.exists():
            current = sha256(path.read_bytes())
            if current == new:
                result.unchanged.append(name)
                manifest[name] = new
                continue
            if current != recorded.get(name) and not force:
                result.kept.append(name)
                if name in recorded:
                    manifest[name] = recorded[name]
                continue
        try:
            atomic_write(path, text, executable=name in EXECUTABLE)
        except OSError as exc:
            raise ExportError(f"{path}: cannot write: {exc.strerror or exc}") from None
        result.written.append(name)
        manifest[name] = new
    for name, digest in recorded.items():
        path = out / name
        if name in files or not path.is_file():
            continue
        if sha256(path.read_bytes()) == digest or force:
            path.unlink()
            result.removed.append(name)
        else:
            result.kept.append(name)
            manifest[name] = digest
    atomic_write(
        out / MANIFEST,
        json.dumps({"ftplan_version": __version__, "method": method, "files": manifest}, indent=2, sort_keys=True)
        + "\n",
    )
    return result
