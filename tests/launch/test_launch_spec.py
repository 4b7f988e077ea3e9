"""build_launch_spec by value: one GPU, eight GPUs, two nodes, CPU plans and CPU smoke runs."""

from __future__ import annotations

import pytest

from ftplan.launch import LaunchOptions, SpecError, build_launch_spec, load_project

from .conftest import answers_text, make_project

TRAIN = ["train.py", "--config", "train_config.toml"]
GPU_ENV = {
    "PYTHONUNBUFFERED": "1",
    "FTPLAN_DIST_BACKEND": "nccl",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
}
CPU_ENV = {
    "PYTHONUNBUFFERED": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "DS_ACCELERATOR": "cpu",
    "FTPLAN_DIST_BACKEND": "gloo",
}


def project(tmp_path, **kw):
    return load_project(make_project(tmp_path / "p", answers_text(**kw)))


def test_one_gpu_is_plain_python(tmp_path):
    p = project(tmp_path, gpu="A100-80GB")
    spec = build_launch_spec(p, LaunchOptions(python="py", gpus_here=1))
    assert spec.argv == ["py", *TRAIN]
    assert spec.env == GPU_ENV
    assert spec.cwd == p.directory
    assert (spec.nproc, spec.nnodes, spec.on_cpu) == (1, 1, False)


def test_eight_gpus_use_torchrun_standalone(tmp_path):
    p = project(tmp_path, gpu="H100-SXM", gpus=8)
    spec = build_launch_spec(
        p, LaunchOptions(python="py", torchrun=("torchrun",), gpus_here=8, log_dir="runs/torchrun")
    )
    assert spec.argv == ["torchrun", "--standalone", "--nproc_per_node", "8", "--log-dir", "runs/torchrun", *TRAIN]
    assert spec.env == GPU_ENV


def test_two_nodes_use_static_rendezvous(tmp_path):
    p = project(tmp_path, gpu="H100-SXM", gpus=8, nodes=2)
    opts = LaunchOptions(torchrun=("torchrun",), node_rank=1, master_addr="10.0.0.1", master_port=29555, gpus_here=8)
    spec = build_launch_spec(p, opts)
    assert spec.argv == [
        "torchrun", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29555",
        "--nproc_per_node", "8", *TRAIN,
    ]  # fmt: skip
    assert spec.nnodes == 2


def test_two_node_plan_without_master_is_an_error(tmp_path):
    p = project(tmp_path, gpu="H100-SXM", gpus=8, nodes=2)
    with pytest.raises(SpecError, match="--master-addr"):
        build_launch_spec(p, LaunchOptions())
    with pytest.raises(SpecError, match="--node-rank 2"):
        build_launch_spec(p, LaunchOptions(node_rank=2, master_addr="h"))


def test_gpu_plan_smoke_without_gpu_runs_on_cpu(tmp_path):
    p = project(tmp_path, gpu="A100-80GB")
    spec = build_launch_spec(p, LaunchOptions(python="py", smoke=True, smoke_steps=3, gpus_here=0, cpus_here=4))
    assert spec.argv == ["py", *TRAIN, "--smoke", "--max-steps", "3"]
    assert spec.env == {**CPU_ENV, "OMP_NUM_THREADS": "4"}
    assert spec.on_cpu


def test_gpu_plan_smoke_with_gpu_stays_on_gpu(tmp_path):
    p = project(tmp_path, gpu="A100-80GB")
    spec = build_launch_spec(p, LaunchOptions(python="py", smoke=True, gpus_here=1))
    assert spec.argv == ["py", *TRAIN, "--smoke", "--max-steps", "5"]
    assert spec.env == GPU_ENV


def test_cpu_plan_two_processes_use_gloo_and_split_threads(tmp_path):
    p = project(tmp_path, gpu="cpu", gpus=2)
    spec = build_launch_spec(p, LaunchOptions(torchrun=("torchrun",), resume=True, cpus_here=2, extra_args=("--foo",)))
    assert spec.argv == ["torchrun", "--standalone", "--nproc_per_node", "2", *TRAIN, "--resume", "--foo"]
    assert spec.env == {**CPU_ENV, "OMP_NUM_THREADS": "1"}


def test_nnodes_option_overrides_plan(tmp_path):
    p = project(tmp_path, gpu="cpu")
    spec = build_launch_spec(
        p, LaunchOptions(torchrun=("tr",), nnodes=2, node_rank=0, master_addr="127.0.0.1", master_port=1234)
    )
    assert spec.argv[:9] == [
        "tr",
        "--nnodes",
        "2",
        "--node_rank",
        "0",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        "1234",
    ]


def test_shell_line_quotes_the_environment(tmp_path):
    p = project(tmp_path, gpu="cpu")
    spec = build_launch_spec(p, LaunchOptions(python="py", cpus_here=1))
    assert spec.shell() == (
        f"cd {p.directory} && CUDA_VISIBLE_DEVICES='' DS_ACCELERATOR=cpu "
        "FTPLAN_DIST_BACKEND=gloo OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 py train.py --config train_config.toml"
    )


def test_deepspeed_single_process_still_uses_torchrun(tmp_path):
    p = load_project(make_project(tmp_path / "p", answers_text(gpu="A100-80GB"), deepspeed=True))
    spec = build_launch_spec(p, LaunchOptions(python="py", torchrun=("torchrun",), gpus_here=1))
    assert spec.argv == ["torchrun", "--standalone", "--nproc_per_node", "1", *TRAIN]


def test_cpu_runs_do_not_force_accelerate_to_cpu(tmp_path):
    """ACCELERATE_USE_CPU takes DeepSpeed out of accelerate's hands: ZeRO-3 on CPU processes breaks."""
    p = project(tmp_path, gpu="cpu", gpus=2)
    assert "ACCELERATE_USE_CPU" not in build_launch_spec(p, LaunchOptions()).env
