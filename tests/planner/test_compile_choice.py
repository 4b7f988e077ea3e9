"""training.compile: the time model's compiled efficiency, memory planned as eager, the JSON and the export."""

from __future__ import annotations

import json

import pytest

from ftplan.cli import main
from ftplan.planner import make_plan, read_answers_text
from ftplan.planner.timecost import (
    BASE_EFFICIENCY,
    COMPILED_EFFICIENCY,
    LOSS_BYTES_PER_LOGIT,
    loss_bytes_per_token,
)

BASE = """
[model]
name = "meta-llama/Llama-3.2-3B"
[data]
examples = 10000
avg_tokens = 4096
max_seq_len = 4096
[hardware]
gpu = "A100-80GB"
[training]
method = "full"
precision = "bf16"
zero_stage = 0
micro_batch_size = 2
gradient_accumulation_steps = 1
gradient_checkpointing = false
loss = "full_logits"
"""


def plan(extra: str = "", base: str = BASE):
    return make_plan(read_answers_text(base + extra, "answers.toml"))


def test_compile_speeds_up_the_plan_and_leaves_memory_as_eager():
    eager, compiled = plan().methods["full"], plan("compile = true\n").methods["full"]
    assert compiled.settings.compile and not eager.settings.compile
    assert compiled.memory == eager.memory  # planned as eager (compiled kernels usually keep less)
    speedup = compiled.time.tokens_per_second / eager.time.tokens_per_second
    # torchtune's pair, 7,075 -> 8,998 tokens/s (+27 %), is where COMPILED_EFFICIENCY comes from: the plan
    # gains about the efficiency ratio on the matmuls plus the fused loss.
    assert 1.2 < speedup < COMPILED_EFFICIENCY / BASE_EFFICIENCY + 0.05, speedup
    assert compiled.time.flops == eager.time.flops  # the same work, done faster


def test_a_compiled_models_own_loss_moves_as_few_bytes_as_a_fused_one():
    eager, compiled = plan().methods["full"], plan("compile = true\n").methods["full"]
    from ftplan.planner.models import resolve_model

    arch = resolve_model("meta-llama/Llama-3.2-3B").arch
    assert loss_bytes_per_token(arch, compiled.settings) == LOSS_BYTES_PER_LOGIT["chunked"] * arch.vocab_size
    assert loss_bytes_per_token(arch, eager.settings) == LOSS_BYTES_PER_LOGIT["full_logits"] * arch.vocab_size


def test_the_json_records_compile_only_when_on():
    default = json.loads(plan().to_json())
    assert "compile" not in default["methods"]["full"]["settings"]  # plans made before the option read the same
    assert default["answers"]["training"]["compile"] is None
    on = json.loads(plan("compile = true\n").to_json())
    assert on["methods"]["full"]["settings"]["compile"] is True
    assert any("torch.compile" in w for w in on["methods"]["full"]["warnings"])


SHARDED = BASE.replace('gpu = "A100-80GB"', 'gpu = "A100-80GB"\ngpus_per_node = 2').replace("zero_stage = 0\n", "")


def test_compile_shards_with_fsdp2_where_zero3_would_be_chosen(tmp_path, capsys):
    """DeepSpeed ZeRO-3 + torch.compile fails on the first backward ("one of the variables needed for
    gradient computation has been modified by an inplace operation", a 2-process CPU run of an exported
    project); ZeRO-2 and FSDP2 train under compile."""
    chosen = plan("compile = true\nzero_stage = 3\n", SHARDED).methods["full"]
    assert chosen.settings.sharding == "fsdp2" and chosen.settings.zero_stage == 3
    assert "sharding: FSDP2 chosen because torch.compile fails under DeepSpeed ZeRO-3" in chosen.warnings
    assert any("torch.compile with FSDP2" in w for w in chosen.warnings)
    big = (
        SHARDED.replace("meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.1-70B")
        .replace("gpus_per_node = 2", "gpus_per_node = 8")
        .replace("gradient_checkpointing = false\n", "")
    )
    eager, compiled = plan("", big).methods["full"].settings, plan("compile = true\n", big).methods["full"].settings
    assert eager.uses_deepspeed and eager.zero_stage == 3  # what the planner picks without compile
    assert compiled.uses_fsdp and compiled.zero_stage == 3, compiled  # FSDP2's offload: ZeRO-3's is out
    assert plan("compile = true\n", big).methods["full"].fits
    answers = tmp_path / "answers.toml"
    text = SHARDED + 'compile = true\nsharding = "deepspeed"\nzero_stage = 3\n'
    answers.write_text(text)
    assert main(["--answers", str(answers), "--json"]) == 2
    line = text.splitlines().index("compile = true") + 1
    assert (
        f"answers.toml:{line}: training.compile: torch.compile fails under DeepSpeed ZeRO-3" in capsys.readouterr().err
    )
    # parameter offload is ZeRO-3's: under compile the planner offloads with FSDP2, or refuses DeepSpeed
    offloaded = plan('compile = true\noffload = "optimizer+params"\n', SHARDED).methods["full"].settings
    assert offloaded.uses_fsdp and offloaded.zero_stage == 3 and offloaded.offload == "optimizer+params"
    answers.write_text(SHARDED + 'compile = true\nsharding = "deepspeed"\noffload = "optimizer+params"\n')
    assert main(["--answers", str(answers), "--json"]) == 2
    assert "training.compile: torch.compile fails under DeepSpeed ZeRO-3" in capsys.readouterr().err


def test_fsdp2_with_a_chosen_offload_shards_at_stage_3():
    """FSDP2's CPUOffloadPolicy offloads sharded parameters: never at zero_stage 0 (plain DDP), which
    the ladder picked before when offload was set and zero_stage left out."""
    s = plan('sharding = "fsdp2"\noffload = "optimizer+params"\n', SHARDED).methods["full"].settings
    assert s.uses_fsdp and s.zero_stage == 3 and s.offload == "optimizer+params"


def test_the_export_writes_the_choice():
    from ftplan.export import render_project

    assert "compile = false" in render_project(plan(), BASE)["train_config.toml"]
    text = render_project(plan("compile = true\n"), BASE + "compile = true\n")["train_config.toml"]
    assert "compile = true" in text and 'compile_backend = "inductor"' in text


@pytest.mark.parametrize("value", ['"fast"', "1.5"])
def test_a_bad_compile_value_names_the_field_and_line(tmp_path, capsys, value):
    answers = tmp_path / "answers.toml"
    answers.write_text(BASE + f"compile = {value}\n")
    assert main(["--answers", str(answers), "--json"]) == 2
    err = capsys.readouterr().err
    line = (BASE + f"compile = {value}\n").splitlines().index(f"compile = {value}") + 1
    assert f"answers.toml:{line}: training.compile:" in err, err
