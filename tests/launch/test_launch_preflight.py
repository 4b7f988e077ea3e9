"""Preflight checks with injected host facts: no GPU, nvidia-smi, disk or environment needed."""

from __future__ import annotations

import hashlib
import json

from ftplan.launch import HostFacts, LaunchOptions, load_project, run_checks
from ftplan.launch.preflight import (
    FAIL,
    OK,
    WARN,
    GpuFacts,
    check_capability,
    check_dataset,
    check_disk,
    check_gpus,
    check_hf_token,
    check_manifest,
    check_memory,
    check_packages,
    render_checklist,
)

from .conftest import answers_text, make_project

GIB = 2**30


def gpu_project(tmp_path, gpu="A100-80GB", gpus=1, extra="", model="meta-llama/Llama-3.1-8B"):
    text = answers_text(gpu=gpu, gpus=gpus, model=model, extra=extra)
    return load_project(make_project(tmp_path / "p", text))


def a100(i=0, free=80 * GIB, cc=(8, 0), procs=()):
    return GpuFacts(i, "NVIDIA A100-SXM4-80GB", 80 * GIB, free, cc, procs)


def test_gpus(tmp_path):
    p = gpu_project(tmp_path, gpus=2)
    assert check_gpus(p, LaunchOptions(), HostFacts()).status == FAIL
    assert check_gpus(p, LaunchOptions(smoke=True), HostFacts()).status == WARN
    assert "needs 2 per node" in check_gpus(p, LaunchOptions(), HostFacts(gpus=(a100(),))).detail
    assert check_gpus(p, LaunchOptions(), HostFacts(gpus=(a100(0), a100(1)))).status == OK
    busy = check_gpus(p, LaunchOptions(), HostFacts(gpus=(a100(0), a100(1, procs=((4242, 3 * GIB),)))))
    assert busy.status == WARN and "pid 4242 (3.0 GiB)" in busy.detail
    other = check_gpus(p, LaunchOptions(), HostFacts(gpus=(GpuFacts(0, "NVIDIA L4", 24 * GIB, 24 * GIB),) * 2))
    assert other.status == WARN and "made for A100-80GB" in other.detail


def test_cpu_plan_needs_no_gpu(project):
    p = load_project(project)
    assert check_gpus(p, LaunchOptions(), HostFacts()).status == OK
    assert check_capability(p, LaunchOptions(), HostFacts()).status == OK


def test_capability_bf16_and_flash_attention(tmp_path):
    p = gpu_project(tmp_path, extra='attention = "flash_attention_2"\nprecision = "bf16"\n')
    v100 = GpuFacts(0, "Tesla V100-SXM2-32GB", 32 * GIB, 32 * GIB, (7, 0))
    c = check_capability(p, LaunchOptions(), HostFacts(gpus=(v100,)))
    assert c.status == FAIL and "bf16 needs 8.0+" in c.detail and "flash_attention_2 needs 8.0+" in c.detail
    assert check_capability(p, LaunchOptions(), HostFacts(gpus=(a100(),))).status == OK


def test_memory_fit_and_advice(tmp_path):
    p = gpu_project(tmp_path, extra="gradient_checkpointing = false\n")
    ok = check_memory(p, LaunchOptions(), HostFacts(gpus=(a100(),)))
    assert ok.status == OK, ok.detail
    short = check_memory(p, LaunchOptions(), HostFacts(gpus=(a100(free=p.memory_total // 2),)))
    assert short.status == FAIL
    assert "training.gradient_checkpointing = true" in short.detail


def test_plan_that_does_not_fit_says_what_would(tmp_path):
    p = gpu_project(tmp_path, gpu="L4", model="meta-llama/Llama-3.1-70B", extra='method = "full"\n')
    assert not p.fits
    c = check_memory(p, LaunchOptions(), HostFacts(gpus=(GpuFacts(0, "NVIDIA L4", 24 * GIB, 24 * GIB, (8, 9)),)))
    assert c.status == FAIL and "the plan itself does not fit" in c.detail and "next step" in c.detail


def test_cpu_memory_against_host(project):
    p = load_project(project)
    assert check_memory(p, LaunchOptions(), HostFacts(host_memory_available=p.memory_total * 2)).status == OK
    assert check_memory(p, LaunchOptions(), HostFacts(host_memory_available=p.memory_total // 2)).status == FAIL


def test_disk(project):
    p = load_project(project)
    need = p.checkpoint_bytes * p.checkpoints_kept
    assert need > 0
    assert check_disk(p, HostFacts(disk_free=need * 10)).status == OK
    assert check_disk(p, HostFacts(disk_free=int(need * 1.1))).status == WARN
    assert check_disk(p, HostFacts(disk_free=need // 2)).status == FAIL


def test_packages_from_plan_and_requirements(project):
    p = load_project(project)
    host = HostFacts(
        packages={"torch": "2.5.0", "transformers": "4.56.0", "accelerate": "1.0", "datasets": "3.0", "peft": None}
    )
    c = check_packages(p, host)
    assert c.status == FAIL and "missing: peft" in c.detail and "torch 2.5.0" in c.detail
    (project / "requirements.txt").write_text(
        "# training\ntorch>=2.4\ntrl[extra]==0.20 ; python_version>'3'\ntomli>=2.0; python_version < '3'\n-e .\n"
    )
    ok = check_packages(p, HostFacts(packages={"torch": "2.5.0", "trl": "0.20"}))
    assert ok.status == OK and ok.detail == "torch 2.5.0, trl 0.20"
    old = check_packages(p, HostFacts(packages={"torch": "2.3.1", "trl": "0.20"}))
    assert old.status == FAIL and "too old: torch>=2.4 (found 2.3.1)" in old.detail


def test_dataset(project):
    p = load_project(project)
    assert check_dataset(p).status == OK
    assert check_dataset(p, exists=lambda path: False).status == FAIL
    hub = p.__class__(**{**p.__dict__, "data_path": "tatsu-lab/alpaca"})
    assert "hub dataset" in check_dataset(hub, exists=lambda path: False).detail


def test_hf_token_for_gated_models(tmp_path):
    p = gpu_project(tmp_path)
    assert check_hf_token(p, HostFacts()).status == FAIL
    assert check_hf_token(p, HostFacts(env={"HF_TOKEN": "x"})).status == OK
    assert check_hf_token(p, HostFacts(hf_token_file=True)).status == OK
    assert check_hf_token(p, HostFacts(cached_models=(p.model_name,))).status == OK
    open_model = p.__class__(**{**p.__dict__, "model_name": "Qwen/Qwen2.5-0.5B"})
    assert check_hf_token(open_model, HostFacts()).status == OK


def test_manifest(project):
    p = load_project(project)
    assert check_manifest(p).status == OK
    (project / "train.py").write_text("# edited\n")
    c = check_manifest(p)
    assert c.status == WARN and "edited since export: train.py" in c.detail
    (project / ".ftplan-manifest.json").unlink()
    assert "no .ftplan-manifest.json" in check_manifest(p).detail


def test_a_project_from_another_ftplan_version_is_warned_about(project):
    plan = json.loads((project / "plan.json").read_text())
    plan["ftplan_version"] = "0.0.1"
    (project / "plan.json").write_text(json.dumps(plan))
    c = check_manifest(load_project(project))
    assert c.status == WARN and "written by ftplan 0.0.1" in c.detail


def test_manifest_flat_form_and_prefixed_hashes(project):
    digest = hashlib.sha256((project / "plan.json").read_bytes()).hexdigest()
    (project / ".ftplan-manifest.json").write_text(json.dumps({"plan.json": f"sha256:{digest}"}))
    assert check_manifest(load_project(project)).status == OK


def test_run_checks_and_render(project):
    p = load_project(project)
    checks = run_checks(p, LaunchOptions(), HostFacts(disk_free=10**12, host_memory_available=10**12))
    assert [c.name for c in checks] == [
        "GPUs", "Compute capability", "Memory", "Disk", "Packages", "Dataset", "HF token", "Project files",
    ]  # fmt: skip
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_checklist(checks))
    assert "✓  GPUs" in console.export_text()


def test_rendezvous_only_for_multi_node(project):
    p = load_project(project)
    assert "Rendezvous" not in [c.name for c in run_checks(p, LaunchOptions(), HostFacts())]
    opts = LaunchOptions(nnodes=2, master_addr="10.0.0.1", master_port=29500)
    (first, *_) = run_checks(p, opts, HostFacts(port_free=False))
    assert first.name == "Rendezvous" and first.status == FAIL and "--master-port" in first.detail
    assert run_checks(p, opts, HostFacts(port_free=True))[0].status == OK
    other = run_checks(p, LaunchOptions(nnodes=2, node_rank=1, master_addr="10.0.0.1"), HostFacts(port_free=False))[0]
    assert other.status == OK and "joins node 0 at 10.0.0.1:29500" in other.detail


def test_oom_patterns():
    from ftplan.failures import is_oom

    assert is_oom("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_oom("RuntimeError: CUDA error: out of memory")
    assert not is_oom("loss 0.5 memory fine")


def test_dataset_that_cannot_train_fails_the_preflight(project):
    """A file that is there but broken fails before the model loads: the line, the column, empty."""
    p = load_project(project)
    data = project / "data" / "train.jsonl"
    cases = {
        '{"text": "a"}\n{"text": "b"}\n{"text": \n': "line 3 is not valid JSON",
        "": "is empty",
        '{"text": "a"}\n{"body": "b"}\n': "line 2 has no 'text' column",
        '{"body": "b"}\n': "cannot tell the data format",
    }
    for content, expected in cases.items():
        data.write_text(content)
        c = check_dataset(p)
        assert c.status == FAIL and "data.path" in c.detail and expected in c.detail, (content, c.detail)
        assert FAIL in {check.status for check in run_checks(p, LaunchOptions(smoke=True), HostFacts())}
    data.unlink()
    data.mkdir()
    assert check_dataset(p).status == FAIL and "is a folder" in check_dataset(p).detail
    data.rmdir()
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    ok = check_dataset(p)
    assert ok.status == OK and "2 examples" in ok.detail


def test_trl_outside_the_modelled_range_warns(tmp_path):
    from ftplan.launch.preflight import check_trl_loss

    p = gpu_project(tmp_path)
    assert check_trl_loss(p, HostFacts(packages={"trl": "1.16.0"})).status == OK
    old = check_trl_loss(p, HostFacts(packages={"trl": "1.4.0"}))
    assert old.status == WARN and 'training.loss = "full_logits"' in old.detail
    assert "chunked_nll" in check_trl_loss(p, HostFacts(packages={"trl": "1.10.0"})).detail
    assert check_trl_loss(p, HostFacts(packages={"trl": "2.1.0"})).status == WARN
    full = gpu_project(tmp_path / "full", extra='loss = "full_logits"\n')
    assert check_trl_loss(full, HostFacts(packages={"trl": "1.4.0"})).status == OK
    (tmp_path / "p" / "requirements.txt").write_text("trl>=1.15,<2\n")
    packages = check_packages(p, HostFacts(packages={"trl": "1.4.0"}))
    assert packages.status == WARN and "TRL 1.4.0 is outside" in packages.detail  # a warning, not a failure


def test_a_compiled_plan_checks_for_a_compiler(tmp_path):
    from ftplan.launch.preflight import check_compiler

    compiled = gpu_project(tmp_path / "compiled", extra="compile = true\n")
    names = [c.name for c in run_checks(compiled, LaunchOptions(), HostFacts(c_compiler="/usr/bin/g++"))]
    assert "torch.compile" in names
    assert check_compiler(compiled, HostFacts(c_compiler="/usr/bin/g++")).status == OK
    missing = check_compiler(compiled, HostFacts())
    assert missing.status == WARN and "compile = false" in missing.detail
    eager = gpu_project(tmp_path / "eager")
    assert "torch.compile" not in [c.name for c in run_checks(eager, LaunchOptions(), HostFacts())]
