"""prepare() + make_runner(): the path the TUI takes, with injected host facts and process."""

from __future__ import annotations

import pytest

from ftplan.launch import HostFacts, LaunchOptions, RunFinished
from ftplan.launch.session import LaunchInputError, make_runner, prepare

from .conftest import answers_text, make_project


def no_gpu_host(project, options):
    return HostFacts(disk_free=10**12, host_memory_available=10**12, packages={})


def test_prepare_gpu_plan_smoke_on_a_machine_without_gpu(tmp_path):
    d = make_project(tmp_path / "p", answers_text(gpu="A100-80GB"))
    prepared = prepare(d, LaunchOptions(python="py", smoke=True), gather=no_gpu_host)
    assert prepared.options.gpus_here == 0 and prepared.spec.on_cpu
    assert prepared.spec.argv[-3:] == ["--smoke", "--max-steps", "5"]
    assert [c.name for c in prepared.failed] == ["Packages"]


def test_prepare_reports_bad_input(tmp_path):
    with pytest.raises(LaunchInputError, match="not a folder"):
        prepare(tmp_path / "missing", LaunchOptions(), gather=no_gpu_host)
    d = make_project(tmp_path / "p")
    with pytest.raises(LaunchInputError, match="nothing to resume from"):
        prepare(d, LaunchOptions(resume=True), gather=no_gpu_host)


def test_make_runner_with_injected_process(tmp_path):
    from .test_launch_runner_unit import FakeProcess

    d = make_project(tmp_path / "p")
    (d / "output" / "checkpoint-4").mkdir(parents=True)
    prepared = prepare(d, LaunchOptions(python="py", resume=True), gather=no_gpu_host)
    assert prepared.start_step == 4 and prepared.spec.argv[-1] == "--resume"
    events = []
    runner = make_runner(prepared, events.append, process_factory=lambda a, e, c: FakeProcess(["ok"]))
    result = runner.run()
    assert result.exit_code == 0 and isinstance(events[-1], RunFinished)
    assert events[0].resume_from.endswith("checkpoint-4")
    assert result.run_dir.startswith(str(d / "runs"))
