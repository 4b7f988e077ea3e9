"""End-to-end: the recipe's training behaviour, from real CPU runs of exported projects.

Train on the answers (the loss falls to near zero on a set whose prompts are noise), the best
checkpoint is the result, --resume skips a checkpoint killed mid-save, --smoke writes apart,
an interrupted run ends its metrics, a ZeRO run starts after the user edits its precision, and an
offloaded optimizer runs as DeepSpeed's CPUAdam with train_config's hyperparameters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from export_support import (
    CONSTANT_LR,
    KEEP_BEST_AND_LAST,
    load_train_module,
    metrics,
    run,
    run_steps,
    set_config,
    train_env,
    write_letters_dataset,
)

from ftplan.export import export_project

pytestmark = pytest.mark.slow


def export(tiny_plan, tmp_path, name: str, data=None, **training):
    plan, text = tiny_plan(**training)
    project = tmp_path / name
    export_project(plan, text, project)
    if data is not None:
        set_config(project, "data", path=str(data))
    return project


def train_losses(project) -> list[float]:
    return [r["loss"] for r in metrics(project) if "loss" in r]


def test_answers_only_training_learns_the_answer(tiny_plan, tmp_path):
    """User turns are random letters and the answer is always "ok": trained on the answers, the
    loss falls below 1 in 20 steps (trained on every token it stays near 3, the letters' entropy)."""
    data = write_letters_dataset(tmp_path / "letters.jsonl", n=64)
    project = export(
        tiny_plan, tmp_path, "letters", data, method="full", micro_batch_size=8, gradient_accumulation_steps=1
    )
    set_config(project, "training", learning_rate=5e-3, lr_scheduler="constant", epochs=30.0, warmup_ratio=0.0)
    set_config(project, "data", packing=False, eval_fraction=0.0)
    set_config(project, "checkpoints", save_steps=1000)
    proc = run(["bash", "launch.sh", "--max-steps", "20"], project)
    assert "messages data trains on the answers: 192 of" in proc.stdout  # "ok" + end-of-turn, 64 times
    losses = train_losses(project)
    assert len(losses) == 20 and losses[-1] < 1.0, losses


def safetensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def lora_with_eval(tiny_plan, tmp_path_factory):
    """A LoRA run evaluated at every step with a learning rate high enough that the eval loss
    does not fall monotonically, so the best checkpoint is not simply the last."""
    tmp = tmp_path_factory.mktemp("best")
    data = write_letters_dataset(tmp / "letters.jsonl", n=64)
    project = export(tiny_plan, tmp, "lora", data, method="lora", micro_batch_size=8, gradient_accumulation_steps=1)
    proc = run_steps(
        project,
        steps=4,
        training=dict(learning_rate=0.3, **CONSTANT_LR),
        data=dict(eval_fraction=0.25),
        checkpoints=KEEP_BEST_AND_LAST,
    )
    return project, proc


def test_the_best_checkpoint_is_the_result(lora_with_eval):
    project, proc = lora_with_eval
    out = project / "output"
    evals = {r["step"]: r["eval_loss"] for r in metrics(project) if r.get("event") == "eval"}
    best = min(evals, key=evals.get)
    result = json.loads((out / "result.json").read_text())
    assert result["result"] == "best" and result["checkpoint"] == f"checkpoint-{best}"
    assert f"the best checkpoint by eval loss, checkpoint-{best}" in proc.stdout
    assert metrics(project)[-1]["checkpoint"] == f"checkpoint-{best}"
    saved = safetensors(out / "adapter_model.safetensors")
    in_best = safetensors(out / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert saved.keys() == in_best.keys() and all((saved[k] == in_best[k]).all() for k in saved)
    if best != max(evals):  # then output/ must differ from the last step's adapter
        last = safetensors(out / f"checkpoint-{max(evals)}" / "adapter_model.safetensors")
        assert any((saved[k] != last[k]).any() for k in saved)


def test_merge_adapter_merges_the_best(lora_with_eval):
    project, _ = lora_with_eval
    proc = run([sys.executable, "merge_adapter.py"], project)
    best = json.loads((project / "output" / "result.json").read_text())["checkpoint"]
    assert f"the best checkpoint by eval loss ({best}" in proc.stdout


def test_the_promised_checkpoints_are_kept(lora_with_eval):
    """keep_best=1, keep_last=1: the newest and the best checkpoint, nothing else."""
    project, _ = lora_with_eval
    evals = {r["step"]: r["eval_loss"] for r in metrics(project) if r.get("event") == "eval"}
    left = {int(p.name.split("-")[1]) for p in (project / "output").glob("checkpoint-*")}
    assert left == {max(evals), min(evals, key=evals.get)}, (left, evals)


def kill_mid_save(checkpoint, step: int):
    """checkpoint-{step} as a save killed half-way would leave it: the weights cut short and
    trainer_state.json (the Trainer writes it last) not there yet."""
    cut = checkpoint.parent / f"checkpoint-{step}"
    shutil.copytree(checkpoint, cut)
    (cut / "trainer_state.json").unlink()
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return cut


def test_resume_skips_a_checkpoint_killed_mid_save_and_smoke_runs_apart(lora_with_eval):
    project, _ = lora_with_eval
    out = project / "output"
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    newest = out / f"checkpoint-{steps[-1]}"  # the newest complete one
    cut = kill_mid_save(newest, steps[-1] + 1)

    smoke = run(["bash", "launch.sh", "--smoke", "--max-steps", "2"], project)
    assert (out / "smoke" / "checkpoint-2").is_dir() and (out / "smoke" / "adapter_model.safetensors").is_file()
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == steps + [steps[-1] + 1]
    assert "resuming" not in smoke.stdout

    proc = run(["bash", "launch.sh", "--max-steps", "6", "--resume"], project)
    assert f"skipping {cut.name}: incomplete" in proc.stdout
    assert re.search(rf"resuming from .*{newest.name}\b", proc.stdout)
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_an_incomplete_checkpoint_does_not_push_out_the_newest_complete(tiny_plan, tmp_path):
    """A checkpoint left incomplete by a killed save, newer than the one a resume took: pruning
    after the next save keeps the new one, the newest complete (keep_last=1 before counted the
    incomplete one as the last and deleted every complete checkpoint, the one just saved too)."""
    from types import SimpleNamespace

    project = export(tiny_plan, tmp_path, "prune", method="lora")
    train = load_train_module(project, "train_prune")
    out = tmp_path / "out"
    for step in (5, 6, 10):
        path = out / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (path / "weights.bin").write_bytes(b"x")
    (out / "checkpoint-10" / "trainer_state.json").unlink()  # killed while saving step 10
    # and the resumed run (from 5, save_steps edited) has just saved step 6
    args = SimpleNamespace(output_dir=str(out), load_best_model_at_end=False)
    state = SimpleNamespace(is_world_process_zero=True, global_step=6, log_history=[])
    train.KeepBestAndLast({"keep_best": 0, "keep_last": 1}).on_save(args, state, None)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-10", "checkpoint-6"]
    assert train.latest_checkpoint({"checkpoints": {"output_dir": str(out)}, "config_dir": "/"}) == str(
        out / "checkpoint-6"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_ends_its_metrics(tiny_plan, tmp_path, sig):
    project = export(tiny_plan, tmp_path, "stop", method="lora", micro_batch_size=2, gradient_accumulation_steps=1)
    set_config(project, "training", epochs=50.0)
    set_config(project, "checkpoints", save_steps=1000)
    proc = subprocess.Popen(
        ["bash", "launch.sh"], cwd=project, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    path = project / "output" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (path.is_file() and '"loss"' in path.read_text()):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    os.kill(proc.pid, sig)  # launch.sh execs python: this is the training process
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), output[-3000:]
    last = metrics(project)[-1]
    assert last["event"] == "end" and last["status"] == "interrupted", last
    assert last["signal"] == sig.name and last["step"] >= 1
    assert "Traceback" not in output


def export_zero(tiny_plan, tmp_path, stage: int, **training):
    """A full fine-tune of the tiny model with ZeRO ``stage`` over two CPU ranks."""
    return export(
        tiny_plan, tmp_path, f"zero{stage}", method="full", micro_batch_size=2, gradient_accumulation_steps=1,
        gpus_per_node=2, zero_stage=stage, **training,
    )  # fmt: skip


def train_two_steps_at(project, learning_rate: float, save_steps: int, **training) -> None:
    """Two steps at a constant ``learning_rate``: both run, the run ends ok, and each logs that rate."""
    run_steps(
        project,
        steps=2,
        timeout=900,
        training=dict(learning_rate=learning_rate, **CONSTANT_LR, **training),
        checkpoints=dict(save_steps=save_steps),
    )
    lines = metrics(project)
    steps = [r for r in lines if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2] and lines[-1]["status"] == "ok"
    assert all(r["lr"] == pytest.approx(learning_rate) for r in steps)


def test_zero2_starts_after_the_user_edits_precision(tiny_plan, tmp_path):
    """ds_config.json leaves precision to the Trainer: editing train_config.toml is enough."""
    project = export_zero(tiny_plan, tmp_path, stage=2)
    assert 'precision = "fp32"' in (project / "train_config.toml").read_text()  # the CPU plan's
    # Pure bf16 training, a constant schedule: DeepSpeed's own scheduler (as ds_config.json used
    # to write) would not hold the learning rate constant.
    train_two_steps_at(project, 1e-3, save_steps=1000, precision="bf16")


def base_optimizer_groups(checkpoint) -> list[dict]:
    """The param_groups of the optimizer DeepSpeed stepped, from rank 0's saved ZeRO state."""
    import torch

    (path,) = checkpoint.glob("global_step*/*zero_pp_rank_0_*optim_states.pt")
    state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
    # ZeRO-1/2 keep the wrapped optimizer's state under base_optimizer_state, ZeRO-3 under optimizer_state_dict.
    return state["base_optimizer_state" if "base_optimizer_state" in state else "optimizer_state_dict"]["param_groups"]


@pytest.mark.parametrize("stage", [2, 3])
def test_offloaded_optimizer_runs_as_deepspeed_cpu_adam(tiny_plan, tmp_path, stage):
    """Optimizer offload: train_config's AdamW runs as DeepSpeed's CPUAdam (the host step the plan
    times), with train_config's learning rate and weight decay, the Trainer's schedule driving it."""
    project = export_zero(tiny_plan, tmp_path, stage, offload="optimizer")
    ds = json.loads((project / "ds_config.json").read_text())
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["optimizer"]["type"] == "AdamW" and "zero_force_ds_cpu_optimizer" not in ds
    assert 'optimizer = "adamw_torch"' in (project / "train_config.toml").read_text()
    # Not DeepSpeed's defaults (lr 1e-3, weight decay 0.01): the values must come from train_config.
    train_two_steps_at(project, 2e-3, save_steps=2, weight_decay=0.05)
    groups = base_optimizer_groups(project / "output" / "checkpoint-2")
    for group in groups:
        # DeepSpeedCPUAdam's group keys (bias_correction); torch's AdamW has foreach/fused instead.
        assert "bias_correction" in group and "foreach" not in group and "fused" not in group, group
        assert group["lr"] == pytest.approx(2e-3) and group["weight_decay"] == pytest.approx(0.05)
        assert tuple(group["betas"]) == (0.9, 0.999) and group["eps"] == pytest.approx(1e-8)
