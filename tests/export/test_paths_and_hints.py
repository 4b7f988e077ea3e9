"""Paths stay as the user wrote them; re-exports never leave a half-updated folder; printed
commands are shell-quoted (pasting them runs no substitution)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib

import pytest

from ftplan.export import ExportError, export_project
from ftplan.export.write import MANIFEST


def _config(project):
    return tomllib.loads((project / "train_config.toml").read_text())


def test_absolute_paths_stay_absolute_and_a_copied_project_finds_them(tiny_plan, tiny_model, tiny_data, tmp_path):
    plan, text = tiny_plan(method="lora")
    out = tmp_path / "proj"
    export_project(plan, text, out)
    cfg = _config(out)
    assert cfg["model"]["name_or_path"] == str(tiny_model)
    assert cfg["data"]["path"] == str(tiny_data)
    copy = tmp_path / "elsewhere" / "deeper" / "proj"
    shutil.copytree(out, copy)
    copied = _config(copy)
    assert os.path.isdir(copied["model"]["name_or_path"]) and os.path.isfile(copied["data"]["path"])


def test_relative_paths_stay_relative_to_the_project(tiny_model, tiny_data, tmp_path, monkeypatch):
    """A relative data.path (relative to where ftplan ran) is written relative to the project, so
    project and data can move together."""
    import export_support as tiny

    from ftplan.context import build_context
    from ftplan.planner import make_plan, read_answers_text

    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    shutil.copy(tiny_data, data)
    monkeypatch.chdir(tmp_path)
    text = tiny.answers_text(tiny_model, "data/train.jsonl", method="lora")
    answers = read_answers_text(text)
    plan = make_plan(answers, build_context(answers, detect=False))
    out = tmp_path / "runs" / "proj"
    export_project(plan, text, out)
    path = _config(out)["data"]["path"]
    assert path == os.path.join("..", "..", "data", "train.jsonl") and (out / path).resolve() == data.resolve()


def test_a_blocked_file_name_writes_nothing(tiny_plan, tmp_path):
    plan, text = tiny_plan(method="lora")
    out = tmp_path / "proj"
    (out / "README.md").mkdir(parents=True)
    with pytest.raises(ExportError, match="README.md"):
        export_project(plan, text, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"] and not (out / MANIFEST).exists()


def test_reexport_keeping_an_edit_writes_the_rest(tiny_plan, tmp_path):
    plan, text = tiny_plan(method="lora")
    out = tmp_path / "proj"
    export_project(plan, text, out)
    (out / "launch.sh").write_text((out / "launch.sh").read_text() + "# mine\n")
    newer, newer_text = tiny_plan(method="lora", learning_rate=0.001)
    result = export_project(newer, newer_text, out)
    assert result.kept == ["launch.sh"]
    assert {"train_config.toml", "plan.json", "answers.toml", "README.md"} <= set(result.written)
    assert "learning_rate = 0.001" in (out / "train_config.toml").read_text()
    assert (out / "launch.sh").read_text().endswith("# mine\n")
    assert any(line.startswith("Warning:") and "launch.sh" in line for line in result.summary().splitlines())


def test_pasted_next_and_git_add_commands_run_no_substitution(tiny_plan, tmp_path, monkeypatch):
    """A folder named `proj $(touch X)`: the printed commands, pasted into bash, run no `touch`."""
    plan, text = tiny_plan(method="lora")
    work = tmp_path / "repo"
    work.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    monkeypatch.chdir(work)
    out = work / "proj $(touch X)"
    result = export_project(plan, text, out)
    # Stand in for the real launch.sh: record the arguments it got (running the smoke test is not the point).
    (out / "launch.sh").write_text('printf "%s\\n" "$@" > "$(dirname "$0")/args"\n')
    lines = result.summary().splitlines()
    next_line = next(line for line in lines if line.startswith("Next: "))
    command = next_line.removeprefix("Next: ").split("   (")[0]
    git_add = next(line.strip() for line in lines if line.strip().startswith("git add "))
    subprocess.run(["bash", "-c", command], cwd=work, check=True)
    assert not (work / "X").exists() and not (tmp_path / "X").exists()
    assert (out / "args").read_text().split() == ["--max-steps", "5"]
    proc = subprocess.run(["bash", "-c", git_add], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (work / "X").exists()
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=work, capture_output=True, text=True).stdout
    assert "proj $(touch X)/train.py" in staged
