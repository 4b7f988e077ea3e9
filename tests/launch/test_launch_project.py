"""Reading an exported project: every problem in one message, exit 2 from the CLI."""

from __future__ import annotations

import json

import pytest

from ftplan.launch import ProjectError, latest_checkpoint, load_project
from ftplan.launch.cli import main


def test_reads_plan_and_config(project):
    p = load_project(project)
    assert p.method == "lora" and p.is_cpu and p.gpus_per_node == 1
    assert p.output_dir == "output" and p.metrics_path == project / "output" / "metrics.jsonl"
    assert p.memory_total > 0 and p.settings.micro_batch_size == 1


def test_missing_files_listed_together(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ProjectError) as exc:
        load_project(tmp_path / "d")
    text = str(exc.value)
    for name in ("train.py is missing", "train_config.toml is missing", "plan.json is missing"):
        assert name in text


def test_corrupt_files_name_the_file(project):
    (project / "plan.json").write_text("{not json")
    (project / "train_config.toml").write_text("[model\n")
    with pytest.raises(ProjectError) as exc:
        load_project(project)
    assert "plan.json: cannot be read as JSON" in str(exc.value)
    assert "train_config.toml: cannot be read as TOML" in str(exc.value)


def test_bad_fields_name_the_field(project):
    plan = json.loads((project / "plan.json").read_text())
    plan["hardware"]["gpus_per_node"] = "two"
    del plan["methods"]["lora"]["memory"]
    (project / "plan.json").write_text(json.dumps(plan))
    cfg = (
        (project / "train_config.toml")
        .read_text()
        .replace('kind = "lora"', 'kind = "lora"\n')
        .replace('deepspeed = ""', 'deepspeed = "ds_config.json"')
    )
    (project / "train_config.toml").write_text(cfg)
    with pytest.raises(ProjectError) as exc:
        load_project(project)
    text = str(exc.value)
    assert "`hardware.gpus_per_node`: input should be a valid integer" in text and "'two'" in text
    assert "`methods.lora.memory` is missing" in text
    assert "ds_config.json is missing" in text


def test_a_plan_from_another_ftplan_says_which_wrote_it(project):
    """plan.json is read through the planner's own Plan: a field it lacks is named, and the version
    that wrote it too, with the way out."""
    plan = json.loads((project / "plan.json").read_text())
    plan["ftplan_version"] = "0.0.1"
    del plan["methods"]["lora"]["max_seq_len_that_fits"]
    (project / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ProjectError) as exc:
        load_project(project)
    text = str(exc.value)
    assert "`methods.lora.max_seq_len_that_fits` is missing" in text
    assert "written by ftplan 0.0.1; this is ftplan" in text and "re-export" in text


def test_the_exporter_and_the_launcher_share_one_contract(project):
    """The names, port and environment the exporter writes are the ones the launcher reads."""
    from ftplan.export import slurm
    from ftplan.launch import spec
    from ftplan.project import MASTER_PORT, run_environment

    assert spec.LaunchOptions().master_port == MASTER_PORT
    assert f"MASTER_PORT={MASTER_PORT}" in slurm.render_sbatch(load_project(project))
    launch = spec.build_launch_spec(load_project(project), spec.LaunchOptions())
    assert run_environment(on_cpu=True).items() <= launch.env.items()


def test_cli_bad_project_exits_2_with_one_message(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "Traceback" not in err


def test_cli_bad_arguments_exit_2(project, capsys):
    assert main([str(project), "--nnodes", "0"]) == 2  # checked with the other options, one message
    assert "--nnodes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(project), "--bogus"])
    assert exc.value.code == 2
    assert main([str(project), "--node-rank", "3", "--dry-run"]) == 2
    assert "--node-rank 3 is outside" in capsys.readouterr().err


def test_resume_without_checkpoint_exits_2(project, capsys):
    assert main([str(project), "--resume", "--dry-run"]) == 2
    assert "nothing to resume from" in capsys.readouterr().err


def test_latest_checkpoint_by_step_number(project):
    for n in (2, 10, 9):
        (project / "output" / f"checkpoint-{n}").mkdir(parents=True)
    (project / "output" / "checkpoint-final").mkdir()
    assert latest_checkpoint(load_project(project)).name == "checkpoint-10"


def test_importing_launch_is_light():
    """The TUI and the CLI import ftplan.launch at start-up: no torch, transformers or textual."""
    import subprocess
    import sys

    code = "import sys, ftplan.launch; print(sorted(m for m in ('torch', 'transformers', 'peft', 'textual') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
