"""Fast checks (no training): every exported config is accepted by the tool that reads it."""

from __future__ import annotations

import json
import tomllib
from types import SimpleNamespace

import pytest
from export_support import load_train_module

from ftplan.export import ExportError, render_project
from ftplan.planner import make_plan, read_answers_text

MODEL = "meta-llama/Llama-3.1-8B"

# (gpus_per_node, nodes, method, precision, optimizer, zero_stage, offload)
MATRIX = [
    (1, 1, "lora", "bf16", None, 0, "none"),
    (1, 1, "qlora", "bf16", None, 0, "none"),
    (1, 1, "full", "bf16", None, 3, "optimizer"),
    (1, 1, "full", "bf16-mixed", None, 3, "optimizer+params"),
    (8, 1, "full", "bf16", None, 0, "none"),
    (8, 1, "full", "bf16", None, 1, "none"),
    (8, 1, "full", "bf16-mixed", None, 2, "none"),
    (8, 1, "full", "fp16-mixed", "adamw_torch", 2, "optimizer"),
    (8, 1, "full", "bf16", None, 3, "none"),
    (8, 1, "full", "bf16", "adafactor", 3, "optimizer+params"),
    (8, 1, "lora", "bf16", "paged_adamw_8bit", 2, "optimizer"),
    (8, 2, "full", "bf16", None, 3, "optimizer"),
    (8, 2, "full", "bf16-mixed", None, 2, "none"),
    (8, 2, "qlora", "bf16", None, 3, "none"),
    (8, 1, "full", "bf16-mixed", "paged_adamw_32bit", 3, "optimizer"),
]


# The fp32 AdamW optimizers DeepSpeed's CPUAdam computes exactly (paged_adamw_32bit's paging has
# nothing to page with the states on the host); 8-bit, Adafactor and SGD run as themselves.
CPU_ADAM = ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")


def answers_for(gpus, nodes, method, precision, optimizer, stage, offload) -> str:
    opt = f'optimizer = "{optimizer}"\n' if optimizer else ""
    return (
        f'[model]\nname = "{MODEL}"\n\n[data]\nexamples = 20000\navg_tokens = 500\n\n'
        f'[hardware]\ngpu = "H100-SXM"\ngpus_per_node = {gpus}\nnodes = {nodes}\n\n'
        f'[training]\nmethod = "{method}"\nprecision = "{precision}"\n{opt}'
        f'zero_stage = {stage}\noffload = "{offload}"\n'
    )


def render(case):
    text = answers_for(*case)
    plan = make_plan(read_answers_text(text))
    return plan, render_project(plan, text)


def trainer_args(cfg: dict, world_size: int) -> SimpleNamespace:
    """The TrainingArguments fields HF's DeepSpeed integration reads, as train.py sets them."""
    t = cfg["training"]
    return SimpleNamespace(
        world_size=world_size,
        per_device_train_batch_size=t["micro_batch_size"],
        gradient_accumulation_steps=t["gradient_accumulation_steps"],
        max_grad_norm=t["max_grad_norm"],
        learning_rate=t["learning_rate"],
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=t["weight_decay"],
        save_on_each_node=False,
        bf16=t["precision"] in ("bf16", "bf16-mixed"),
        bf16_full_eval=False,
        fp16=t["precision"] == "fp16-mixed",
        fp16_full_eval=False,
        get_warmup_steps=lambda steps: int(steps * t["warmup_ratio"]),
    )


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: "-".join(map(str, c)))
def test_ds_config_is_accepted_by_deepspeed(case, monkeypatch):
    from deepspeed.runtime import config as ds_runtime_config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    plan, files = render(case)
    cfg = tomllib.loads(files["train_config.toml"])
    stage, offload = case[5], case[6]
    if stage == 0:
        assert "ds_config.json" not in files and cfg["training"]["deepspeed"] == ""
        return
    assert cfg["training"]["deepspeed"] == "ds_config.json"
    ds = json.loads(files["ds_config.json"])
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == (offload != "none")
    assert ("offload_param" in zero) == (offload == "optimizer+params")
    if offload != "none":
        assert zero["offload_optimizer"]["device"] == "cpu"
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds[key] == "auto"
    # Precision is the Trainer's to fill in; optimizer and scheduler are train_config.toml's. With
    # the optimizer offloaded, train_config's fp32 AdamW runs as DeepSpeed's CPUAdam (the host
    # step the plan counts), its hyperparameters filled in by the Trainer; others as torch's.
    assert ds["bf16"]["enabled"] == ds["fp16"]["enabled"] == "auto"
    assert "scheduler" not in ds
    cpu_adam = offload != "none" and cfg["training"]["optimizer"] in CPU_ADAM
    if cpu_adam:
        assert ds["optimizer"] == {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    else:
        assert "optimizer" not in ds
    assert ds.get("zero_force_ds_cpu_optimizer", True) == (offload == "none" or cpu_adam)
    # standard DeepSpeed mixed precision (fp32 master + moments), as the planner counts it
    assert "bf16_optimizer_states" not in ds["bf16"]
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True

    # Fill the "auto" keys exactly as the Trainer does, then let DeepSpeed parse the result.
    world = plan.hardware.world_size
    hf = HfTrainerDeepSpeedConfig(ds)
    hf.trainer_config_process(trainer_args(cfg, world))
    hf.trainer_config_finalize(
        trainer_args(cfg, world), SimpleNamespace(config=SimpleNamespace(hidden_size=plan.model.hidden_size)), 1000
    )
    monkeypatch.setattr(ds_runtime_config.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(ds_runtime_config.dist, "get_world_size", lambda *a, **k: world)
    parsed = ds_runtime_config.DeepSpeedConfig(hf.config)
    assert parsed.zero_optimization_stage == stage
    assert parsed.world_size == world
    assert (
        parsed.train_batch_size
        == cfg["training"]["micro_batch_size"] * cfg["training"]["gradient_accumulation_steps"] * world
    )
    assert parsed.bfloat16_config.enabled == (case[3] in ("bf16", "bf16-mixed"))
    assert parsed.float16_config.enabled == (case[3] == "fp16-mixed")
    assert parsed.optimizer_name == ("adamw" if cpu_adam else None) and parsed.scheduler_name is None
    if cpu_adam:  # the Trainer's values, not DeepSpeed's defaults
        assert parsed.optimizer_params == {
            "lr": cfg["training"]["learning_rate"],
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": cfg["training"]["weight_decay"],
        }


@pytest.mark.parametrize("edited", ["fp16-mixed", "fp32", "bf16-mixed"])
def test_ds_config_follows_precision_edited_in_train_config(edited, monkeypatch):
    """A user who edits training.precision in train_config.toml changes nothing else: DeepSpeed's
    own parser, given the filled-in config, runs the precision the edit names."""
    from deepspeed.runtime import config as ds_runtime_config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    plan, files = render((8, 1, "full", "bf16", None, 2, "none"))
    cfg = tomllib.loads(files["train_config.toml"])
    cfg["training"]["precision"] = edited
    hf = HfTrainerDeepSpeedConfig(json.loads(files["ds_config.json"]))
    hf.trainer_config_process(trainer_args(cfg, 8))
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=plan.model.hidden_size))
    hf.trainer_config_finalize(trainer_args(cfg, 8), model, 1000)  # raises on a mismatch with a fixed value
    monkeypatch.setattr(ds_runtime_config.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(ds_runtime_config.dist, "get_world_size", lambda *a, **k: 8)
    parsed = ds_runtime_config.DeepSpeedConfig(hf.config)
    assert parsed.bfloat16_config.enabled == (edited == "bf16-mixed")
    assert parsed.float16_config.enabled == (edited == "fp16-mixed")


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: "-".join(map(str, c)))
def test_accelerate_config_is_accepted_by_accelerate(case, tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    plan, files = render(case)
    path = tmp_path / "accelerate_config.yaml"
    path.write_text(files["accelerate_config.yaml"])
    config = load_config_from_file(str(path))
    gpus, nodes, stage = case[0], case[1], case[5]
    assert config.num_processes == gpus * nodes
    assert config.num_machines == nodes
    expected = "DEEPSPEED" if stage else ("MULTI_GPU" if gpus * nodes > 1 else "NO")
    assert (
        str(config.distributed_type.value if hasattr(config.distributed_type, "value") else config.distributed_type)
        == expected
    )
    if stage:
        assert config.deepspeed_config["deepspeed_config_file"] == "ds_config.json"
        assert config.mixed_precision is None  # accelerate refuses it beside a DeepSpeed file
    else:
        precision = case[3]
        assert config.mixed_precision == {"bf16-mixed": "bf16", "fp16-mixed": "fp16"}.get(precision, "no")


@pytest.mark.parametrize("case", [c for c in MATRIX if c[2] == "qlora"], ids=lambda c: "-".join(map(str, c)))
def test_bnb_config_loads(case):
    from transformers import BitsAndBytesConfig

    _, files = render(case)
    data = json.loads(files["bnb_config.json"])
    bnb = BitsAndBytesConfig.from_dict(data)
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert str(bnb.bnb_4bit_compute_dtype) == "torch.bfloat16"
    assert (data.get("bnb_4bit_quant_storage") == "bfloat16") == (case[5] == 3)


def test_train_py_refuses_an_optimizer_deepspeed_would_ignore(tiny_plan, tmp_path):
    """With ds_config.json's optimizer block (CPUAdam under offload) the Trainer does not build
    training.optimizer: train.py stops on an optimizer edit that would go unheeded, and accepts it
    once the block is removed as its message says."""
    from pathlib import Path

    import ftplan.export
    from ftplan.export import configs, export_project

    template = load_train_module(Path(ftplan.export.__file__).parent / "templates", "train_template")
    assert template.DS_CPU_ADAM_OPTIMIZERS == configs.DS_CPU_ADAM_OPTIMIZERS == CPU_ADAM  # train.py's own copy
    plan, text = tiny_plan(method="full", gpus_per_node=2, zero_stage=2, offload="optimizer")
    project = tmp_path / "project"
    export_project(plan, text, project)
    assert "runs as DeepSpeed's CPUAdam" in (project / "README.md").read_text()
    train = load_train_module(project)
    cfg = train.load_config(project / "train_config.toml")
    assert cfg["training"]["optimizer"] == "adamw_torch"
    for name in CPU_ADAM:
        cfg["training"]["optimizer"] = name
        train.check_ds_optimizer(cfg)
    for name in ("adafactor", "sgd", "adamw_8bit"):
        cfg["training"]["optimizer"] = name
        with pytest.raises(SystemExit, match=f"training.optimizer = '{name}'.*runs its own AdamW"):
            train.check_ds_optimizer(cfg)
    ds_path = project / "ds_config.json"
    ds = json.loads(ds_path.read_text())
    del ds["optimizer"]
    ds["zero_force_ds_cpu_optimizer"] = False
    ds_path.write_text(json.dumps(ds))
    train.check_ds_optimizer(cfg)  # torch's Adafactor on the host, as the user asked


def test_cpu_qlora_computes_in_float32(tiny_plan):
    plan, text = tiny_plan(method="qlora")
    files = render_project(plan, text)
    assert json.loads(files["bnb_config.json"])["bnb_4bit_compute_dtype"] == "float32"


def test_train_config_has_every_documented_key():
    _, files = render(MATRIX[0])
    cfg = tomllib.loads(files["train_config.toml"])
    documented = {
        "model": {"name_or_path", "trust_remote_code", "attention", "new_tokens"},
        "method": {"kind"},
        "lora": {"r", "alpha", "dropout", "target_modules", "train_new_token_rows"},
        "data": {"path", "format", "max_seq_len", "packing", "eval_fraction", "general_path", "general_ratio"},
        "training": {
            "precision", "optimizer", "micro_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
            "epochs", "learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm", "seed",
            "deepspeed",
        },
        "checkpoints": {"output_dir", "save_steps", "keep_best", "keep_last"},
        "logging": {"logging_steps", "metrics_file", "report_to", "lora_spectrum_steps"},
        "plan": {"weights", "gradients", "optimizer", "activations", "overhead", "total", "tokens_per_second", "device"},
    }  # fmt: skip
    for section, keys in documented.items():
        assert keys <= set(cfg[section]), (section, keys - set(cfg[section]))
    # Every key is commented in the file.
    for line in files["train_config.toml"].splitlines():
        if "=" in line and not line.startswith("#") and line.split("=")[0].strip() not in {
            "weights", "gradients", "optimizer", "activations", "total", "seconds_per_token"
        }:  # fmt: skip
            assert "#" in line, line


def test_launch_sh_per_plan():
    _, one = render(MATRIX[0])
    assert 'exec "$PYTHON" train.py "$@"' in one["launch.sh"] and "NPROC_PER_NODE:-1}" in one["launch.sh"]
    _, eight = render(MATRIX[5])
    assert "NPROC_PER_NODE:-8}" in eight["launch.sh"] and "torch.distributed.run" in eight["launch.sh"]
    _, nodes = render(MATRIX[11])
    sh = nodes["launch.sh"]
    for var in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NODEID", "SLURM_NNODES"):
        assert var in sh
    assert "NNODES:-${SLURM_NNODES:-2}}" in sh


def test_unknown_method_is_an_export_error():
    plan, files = render(MATRIX[0])
    with pytest.raises(ExportError, match="unknown method"):
        render_project(plan, "", method="dora")


def test_files_per_method():
    _, lora = render(MATRIX[0])
    assert {"train.py", "train_config.toml", "accelerate_config.yaml", "launch.sh", "merge_adapter.py",
            "requirements.txt", "README.md", "answers.toml", "plan.json"} == set(lora)  # fmt: skip
    _, full = render(MATRIX[8])
    assert "merge_adapter.py" not in full and "ds_config.json" in full and "bnb_config.json" not in full
    assert "deepspeed" in full["requirements.txt"]
    _, qlora = render(MATRIX[1])
    assert "bnb_config.json" in qlora and "bitsandbytes" in qlora["requirements.txt"]


def _launch(files: dict, tmp_path, **env) -> list[str]:
    """Run launch.sh with a stub interpreter that records its arguments and environment."""
    import os
    import subprocess

    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / "launch.sh").write_text(files["launch.sh"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "stub-python"
    stub.write_text(
        '#!/bin/sh\necho "ARGS $*"\necho "ENV CUDA=${CUDA_VISIBLE_DEVICES-unset} DS=${DS_ACCELERATOR-unset}"\n'
    )
    scontrol = bin_dir / "scontrol"
    scontrol.write_text("#!/bin/sh\necho node007\necho node008\n")
    for exe in (stub, scontrol):
        exe.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "NNODES", "NODE_RANK"))}
    base.update(PATH=f"{bin_dir}:{base['PATH']}", PYTHON=str(stub), **env)
    proc = subprocess.run(
        ["bash", "launch.sh", "--max-steps", "2"], cwd=project, env=base, capture_output=True, text=True, check=True
    )
    return proc.stdout.splitlines()


def test_launch_sh_commands(tmp_path, tiny_plan):
    _, one = render(MATRIX[0])
    assert _launch(one, tmp_path / "a")[0] == "ARGS train.py --max-steps 2"

    _, eight = render(MATRIX[5])
    out = _launch(eight, tmp_path / "b")
    assert out[0] == "ARGS -m torch.distributed.run --standalone --nproc_per_node 8 train.py --max-steps 2"

    _, nodes = render(MATRIX[11])
    explicit = _launch(nodes, tmp_path / "c", NODE_RANK="1", MASTER_ADDR="10.0.0.1", MASTER_PORT="1234")
    assert explicit[0] == (
        "ARGS -m torch.distributed.run --nnodes 2 --node_rank 1 --nproc_per_node 8 "
        "--master_addr 10.0.0.1 --master_port 1234 train.py --max-steps 2"
    )
    slurm = _launch(nodes, tmp_path / "d", SLURM_NNODES="2", SLURM_NODEID="1", SLURM_JOB_NODELIST="node[007-008]")
    assert slurm[0] == (
        "ARGS -m torch.distributed.run --nnodes 2 --node_rank 1 --nproc_per_node 8 "
        "--master_addr node007 --master_port 29500 train.py --max-steps 2"
    )
    assert slurm[1] == "ENV CUDA=unset DS=unset"

    plan, text = tiny_plan(method="full", gpus_per_node=2, zero_stage=3)
    cpu = _launch(render_project(plan, text), tmp_path / "e")
    assert cpu == [
        "ARGS -m torch.distributed.run --standalone --nproc_per_node 2 train.py --max-steps 2",
        "ENV CUDA= DS=cpu",
    ]


@pytest.mark.parametrize(("stage", "expected"), [(0, "MULTI_CPU"), (3, "DEEPSPEED")])
def test_cpu_plans_accelerate_config(tiny_plan, tmp_path, stage, expected):
    from accelerate.commands.config.config_args import load_config_from_file

    plan, text = tiny_plan(method="full", gpus_per_node=2, zero_stage=stage)
    path = tmp_path / "accelerate_config.yaml"
    path.write_text(render_project(plan, text)["accelerate_config.yaml"])
    config = load_config_from_file(str(path))
    assert config.use_cpu is True and config.num_processes == 2
    assert getattr(config.distributed_type, "value", config.distributed_type) == expected
