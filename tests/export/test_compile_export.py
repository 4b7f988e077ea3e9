"""training.compile in the exported project: train.py trains the model under torch.compile."""

from __future__ import annotations

import pytest
from export_support import load_train_module, metrics, run, set_config

from ftplan.export import export_project

pytestmark = pytest.mark.slow


def test_a_compiled_fsdp2_lora_project_trains_and_saves_an_adapter_peft_loads(tiny_plan, tmp_path):
    """Two CPU processes under FSDP2 (DeepSpeed ZeRO-3 fails under compile: the planner refuses it).
    aot_eager runs dynamo's graph capture and AOTAutograd's forward/backward split, everything of
    compile but the generated kernels (inductor builds C++ ones on the CPU: ~90 s for 2 steps of one
    process here)."""
    pytest.importorskip("trl")
    plan, text = tiny_plan(
        method="lora",
        compile=True,
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        sharding="fsdp2",
        zero_stage=3,
        gpus_per_node=2,
    )
    settings = plan.methods["lora"].settings
    assert settings.compile and settings.uses_fsdp
    project = tmp_path / "project"
    export_project(plan, text, project, method="lora")
    set_config(project, "training", compile_backend="aot_eager")
    train = load_train_module(project, "train_compiled")
    args = train.training_arguments(train.load_config(project / "train_config.toml"), max_steps=2)
    assert args.torch_compile and args.torch_compile_backend == "aot_eager"
    out = run(["bash", "launch.sh", "--max-steps", "2"], project).stdout
    graphs = next(line for line in out.splitlines() if line.startswith("[train] torch.compile (aot_eager):"))
    assert int(graphs.split(": ")[1].split()[0]) >= 1, graphs
    lines = [r for r in metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] > 0 for r in lines)
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(project / "output")).peft_type.value == "LORA"


def test_compile_off_passes_nothing_to_the_trainer(tiny_plan, tmp_path):
    plan, text = tiny_plan(method="lora")
    project = tmp_path / "project"
    export_project(plan, text, project, method="lora")
    train = load_train_module(project, "train_eager")
    cfg = train.load_config(project / "train_config.toml")
    assert cfg["training"]["compile"] is False and train.compile_arguments(cfg["training"]) == {}
    assert not train.training_arguments(cfg, max_steps=1).torch_compile
