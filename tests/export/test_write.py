"""Fast checks of writing a project: manifest, user edits, --force, bad folders, git, ruff, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftplan.export import ExportError, export_project
from ftplan.export.write import MANIFEST, sha256

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lora_plan(tiny_plan):
    return tiny_plan(method="lora", micro_batch_size=2, gradient_accumulation_steps=1)


def test_export_writes_project_and_manifest(lora_plan, tmp_path):
    plan, text = lora_plan
    out = tmp_path / "proj"
    result = export_project(plan, text, out)
    assert result.method == "lora"
    for name in ("train.py", "train_config.toml", "accelerate_config.yaml", "launch.sh", "merge_adapter.py",
                 "requirements.txt", "README.md", "answers.toml", "plan.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "answers.toml").read_text() == text
    assert json.loads((out / "plan.json").read_text())["recommendation"]["method"] == "lora"
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    for name, digest in manifest.items():
        assert sha256((out / name).read_bytes()) == digest
    assert (out / "launch.sh").stat().st_mode & 0o111
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert "git add" not in result.summary()
    # Re-exporting the same plan changes nothing.
    again = export_project(plan, text, out)
    assert again.written == [] and not again.kept and not again.removed
    assert (out / ".gitignore").is_file()


def test_reexport_keeps_user_edits_unless_forced(lora_plan, tmp_path):
    plan, text = lora_plan
    out = tmp_path / "proj"
    export_project(plan, text, out)
    edited = (out / "train_config.toml").read_text().replace("learning_rate = 0.0002", "learning_rate = 0.001")
    (out / "train_config.toml").write_text(edited)
    (out / "README.md").unlink()  # a deleted file is simply written again

    # Everything but the edit is written; the summary warns, naming the kept file.
    result = export_project(plan, text, out)
    assert result.kept == ["train_config.toml"] and "README.md" in result.written
    warning = next(line for line in result.summary().splitlines() if line.startswith("Warning:"))
    assert "train_config.toml" in warning and "--force" in warning
    assert (out / "train_config.toml").read_text() == edited
    assert (out / "README.md").is_file()

    again = export_project(plan, text, out)  # still edited: still kept
    assert again.kept == ["train_config.toml"] and again.written == []
    assert (out / "train_config.toml").read_text() == edited

    forced = export_project(plan, text, out, force=True)
    assert "train_config.toml" in forced.written
    assert "learning_rate = 0.0002" in (out / "train_config.toml").read_text()


def test_files_the_plan_no_longer_needs_are_removed_unless_edited(tiny_plan, tmp_path):
    out = tmp_path / "proj"
    plan, text = tiny_plan(method="lora")
    export_project(plan, text, out)
    plan2, text2 = tiny_plan(method="full")
    result = export_project(plan2, text2, out)
    assert "merge_adapter.py" in result.removed and not (out / "merge_adapter.py").exists()


def test_out_path_that_is_a_file_is_refused(lora_plan, tmp_path):
    plan, text = lora_plan
    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_project(plan, text, target)
    with pytest.raises(ExportError, match="is a file"):
        export_project(plan, text, target / "sub")


def test_git_work_tree_gets_a_git_add_hint(lora_plan, tmp_path, monkeypatch):
    plan, text = lora_plan
    repo = tmp_path / "repo"
    repo.mkdir()
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    else:
        (repo / ".git").mkdir()
    monkeypatch.chdir(repo)
    result = export_project(plan, text, repo / "finetune")
    summary = result.summary()
    assert "git add" in summary and "finetune/train.py" in summary and f"finetune/{MANIFEST}" in summary
    assert "output/" in (repo / "finetune" / ".gitignore").read_text()
    # A .gitignore of the user's own is left alone.
    (repo / "other").mkdir()
    (repo / "other" / ".gitignore").write_text("mine\n")
    export_project(plan, text, repo / "other")
    export_project(plan, text, repo / "other")
    assert (repo / "other" / ".gitignore").read_text() == "mine\n"
    if shutil.which("git"):  # nothing was committed or staged
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True)
        assert all(line.startswith("??") for line in status.stdout.splitlines())


def test_exported_python_passes_ruff(tiny_plan, tmp_path):
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    plan, text = tiny_plan(method="qlora")
    out = tmp_path / "proj"
    export_project(plan, text, out)
    proc = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length", "120",
         "--target-version", "py310", "train.py", "merge_adapter.py"],
        cwd=out, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_out_and_force(tiny_model, tiny_data, tmp_path):
    import export_support as tiny

    answers = tmp_path / "answers.toml"
    answers.write_text(tiny.answers_text(tiny_model, tiny_data, method="lora"))
    out = tmp_path / "proj"
    cmd = [sys.executable, "-m", "ftplan", "--answers", str(answers), "--out", str(out)]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Exported the lora project" in first.stderr
    (out / "launch.sh").write_text((out / "launch.sh").read_text() + "# my change\n")
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert second.returncode == 0 and "Warning: not overwritten" in second.stderr and "launch.sh" in second.stderr
    assert (out / "launch.sh").read_text().endswith("# my change\n")
    third = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert not (out / "launch.sh").read_text().endswith("# my change\n")


def test_rendering_imports_no_training_stack():
    code = (
        "import sys, ftplan.export, ftplan.export.write\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'deepspeed', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr


def test_multi_node_plans_get_a_slurm_script(tmp_path):
    from ftplan.export import render_project
    from ftplan.planner import make_plan, read_answers_text

    text = (
        '[model]\nname = "Qwen/Qwen2.5-32B"\n[hardware]\ngpu = "H100-SXM"\ngpus_per_node = 8\nnodes = 2\n'
        '[training]\nmethod = "full"\nzero_stage = 3\n'
    )
    files = render_project(make_plan(read_answers_text(text)), text)
    sbatch = files["slurm.sbatch"]
    assert "#SBATCH --nodes=2" in sbatch and "#SBATCH --gpus-per-node=8" in sbatch
    assert "--nproc_per_node 8" in sbatch and "train.py --config train_config.toml" in sbatch
    single = '[model]\nname = "Qwen/Qwen2.5-0.5B"\n[hardware]\ngpu = "L4"\n'
    assert "slurm.sbatch" not in render_project(make_plan(read_answers_text(single)), single)
