"""Exported projects of current architectures planned from derived cards: tiny Qwen3-MoE, Gemma-3 (text)
and Gemma-3 with its SigLIP vision tower train on the CPU through launch.sh, save an adapter peft loads,
and `ftplan probe` measures them within 15 % of the plan. The vision model trains its language model
only (tower and projector frozen, as the plan counts); the MoE's loss carries the router's aux loss."""

from __future__ import annotations

import json
import math
import time

import export_support as tiny
import pytest

from ftplan.context import build_context
from ftplan.export import export_project
from ftplan.planner import make_plan, read_answers_text

pytestmark = pytest.mark.slow
pytest.importorskip("trl")
pytest.importorskip("bitsandbytes")

PROBE_TOLERANCE = 0.15
VISION_PARTS = ("vision_tower", "multi_modal_projector")


@pytest.fixture(scope="module")
def any_model(tmp_path_factory):
    """kind -> the tiny model's folder, built once per module."""
    built: dict = {}

    def get(kind: str):
        if kind not in built:
            built[kind] = tiny.build_any_model(tmp_path_factory.mktemp(kind) / "model", kind)
        return built[kind]

    return get


@pytest.fixture
def offline(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")


def export(model_dir, data, out, method: str, **training):
    text = tiny.answers_text(model_dir, data, method=method, **training)
    answers = read_answers_text(text)
    plan = make_plan(answers, build_context(answers, detect=False))
    export_project(plan, text, out, method=method)
    return plan


def loaded_adapter(project):
    """The saved adapter put on its base by peft as a user would (the Auto class train.py used):
    its LoRA tensors, which must equal the saved file's."""
    import tomllib

    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file

    out = project / "output"
    auto = tomllib.loads((project / "train_config.toml").read_text())["model"]["auto_class"]
    base_path = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(getattr(transformers, auto).from_pretrained(base_path), out)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    saved = load_file(out / "adapter_model.safetensors")
    assert len(saved) == len(loaded) > 0
    for name, tensor in saved.items():
        match = [p for n, p in loaded.items() if n.replace(".default", "").endswith(name.removeprefix("base_model"))]
        assert len(match) == 1 and match[0].float().equal(tensor.float()), name
    return loaded


CASES = [(kind, method) for kind in tiny.ANY_MODELS for method in ("lora", "qlora")]


@pytest.mark.parametrize("kind,method", CASES)
def test_exported_project_trains_loads_and_probes_within_15_percent(
    kind, method, any_model, tiny_data, tmp_path, capsys, offline
):
    from ftplan.probe.cli import main as probe

    started = time.perf_counter()
    project = tmp_path / "project"
    plan = export(any_model(kind), tiny_data, project, method)
    assert plan.model.name == str(any_model(kind))
    proc = tiny.run(["bash", "launch.sh", "--max-steps", "2"], project)
    said = proc.stdout + proc.stderr
    lines = [r for r in tiny.metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2] and all(math.isfinite(r["loss"]) for r in lines)
    assert tiny.metrics(project)[-1]["status"] == "ok"
    if kind == "gemma3_vision":
        assert "[train] vision model: the language model trains on text; frozen: model.vision_tower (" in said
    if kind == "qwen3_moe":
        assert "[train] MoE: the loss includes 0.001 x the router load-balancing loss" in said
        assert all(r["aux_loss"] > 0 for r in lines)
    adapters = loaded_adapter(project)
    assert not any(part in name for name in adapters for part in VISION_PARTS)
    assert any(p.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n)  # step 2 trained them
    trained = time.perf_counter() - started

    capsys.readouterr()
    assert probe([str(project), "--steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    predicted, measured = out["predicted"], out["measured"]
    with capsys.disabled():
        parts = ", ".join(
            f"{c} {predicted[c]:,}/{measured[c]:,}" for c in ("weights", "gradients", "optimizer", "activations")
        )
        print(
            f"\n{kind} {method}: trained {len(lines)} steps; probe predicted/measured total "
            f"{predicted['total']:,}/{measured['total']:,} ({out['error']:+.1%}; {parts}); "
            f"train {trained:.0f} s, probe {time.perf_counter() - started - trained:.0f} s"
        )
    assert abs(out["error"]) <= PROBE_TOLERANCE, out


def build_stages(project):
    """The project's own train.py stages up to the model: (module, config, tokenizer, model)."""
    train = tiny.load_train_module(project, f"train_{project.parent.name}")
    cfg = train.load_config(project / "train_config.toml")
    tokenizer = train.build_tokenizer(cfg)
    return train, cfg, tokenizer, train.build_model(cfg, tokenizer)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_vision_model_trains_what_the_plan_counts_and_never_the_tower(method, any_model, tiny_data, tmp_path, offline):
    """train.py freezes the tower and the projector for every method; peft puts no adapter on them; the
    plan's trainable count is exactly what requires grad."""
    project = tmp_path / "project"
    plan = export(any_model("gemma3_vision"), tiny_data, project, method)
    _, cfg, _, model = build_stages(project)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == plan.methods[method].trainable_params
    assert not any(part in name for name in trainable for part in VISION_PARTS)
    tower = [p for n, p in model.named_parameters() if "vision_tower" in n]
    assert tower and not any(p.requires_grad for p in tower)
    if method == "full":  # the language model trains whole
        total = sum(p.numel() for p in model.parameters())
        assert sum(trainable.values()) == total - sum(
            p.numel() for n, p in model.named_parameters() if "vision" in n or "multi_modal" in n
        )


def test_vision_lora_trains_under_zero3_on_two_processes(any_model, tiny_data, tmp_path, offline):
    """Under ZeRO-3 each rank holds empty placeholders: the frozen tower is reported at its full size
    (ds_numel), once, and the LoRA spectrum skips adapters it cannot see whole (it failed on
    torch.linalg.qr of a placeholder). The saved adapter has nothing on the tower."""
    project = tmp_path / "project"
    plan = export(
        any_model("gemma3_vision"), tiny_data, project, "lora", sharding="deepspeed", zero_stage=3, gpus_per_node=2
    )
    assert plan.methods["lora"].settings.uses_deepspeed and plan.methods["lora"].settings.zero_stage == 3
    said = tiny.run(["bash", "launch.sh", "--max-steps", "2"], project).stdout
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(any_model("gemma3_vision"))  # whole, unsharded
    sizes = {
        part: sum(p.numel() for n, p in model.named_parameters() if n.startswith(f"model.{part}."))
        for part in VISION_PARTS
    }
    frozen = [line for line in said.splitlines() if line.startswith("[train] vision model:")]
    assert frozen == [
        "[train] vision model: the language model trains on text; frozen: "
        + ", ".join(f"model.{part} ({size:,} parameters)" for part, size in sizes.items())
    ], frozen
    lines = [r for r in tiny.metrics(project) if "event" not in r]
    assert [r["step"] for r in lines] == [1, 2]
    adapter = loaded_adapter(project)
    assert adapter and not any(part in name for name in adapter for part in VISION_PARTS)


def test_moe_loss_includes_the_router_aux_loss_and_lora_adapts_the_experts(any_model, tiny_data, tmp_path, offline):
    """Qwen3-MoE: train_config.toml carries the config's router_aux_loss_coef; the trainer's loss is the
    LM loss plus coef x the model's aux_loss; LoRA on the fused experts (no dropout: peft's ParamWrapper)
    trains exactly the plan's count."""
    import torch

    project = tmp_path / "project"
    plan = export(any_model("qwen3_moe"), tiny_data, project, "lora", micro_batch_size=2)
    assert plan.methods["lora"].settings.lora_dropout == 0.0
    train, cfg, tokenizer, model = build_stages(project)
    assert cfg["training"]["router_aux_loss_coef"] == 0.001
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == plan.methods["lora"].trainable_params
    assert any("experts" in n for n in trainable)
    data, evaluation = train.build_datasets(cfg, tokenizer)
    trainer = train.build_trainer(cfg, model, tokenizer, data, evaluation, max_steps=1)
    assert trainer.aux_loss_enabled and trainer.router_aux_loss_coef == 0.001
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        with_aux, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
        trainer.aux_loss_enabled = False
        model.config.get_text_config().output_router_logits = False
        without = trainer.compute_loss(model, dict(inputs))
    assert outputs.aux_loss > 0
    assert with_aux.item() == pytest.approx(without.item() + 0.001 * outputs.aux_loss.item(), rel=1e-6)
