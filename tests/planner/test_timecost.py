"""Time and cost: FLOPs accounting, throughput shape, dollars and the hidden costs."""

import pytest

from ftplan.planner import make_plan, read_answers_text
from ftplan.planner.catalog.gpus import GPUS
from ftplan.planner.device import Device
from ftplan.planner.models import resolve_model
from ftplan.planner.settings import Settings
from ftplan.planner.timecost import DataShape, estimate_time, flops_per_token, matmul_params, tokens_per_epoch

ARCH = resolve_model("meta-llama/Llama-3.1-8B").arch
A100 = Device(GPUS["A100-80GB"])


def test_flops_per_token_follow_6p_4p_and_recompute():
    p = matmul_params(ARCH)
    attention = 12 * ARCH.layers * 2048 * ARCH.heads * ARCH.head_dim
    full = Settings(method="full", gradient_checkpointing=False, max_seq_len=2048)
    assert flops_per_token(ARCH, full, 2048) == pytest.approx(6 * p + attention)
    lora = Settings(method="lora", gradient_checkpointing=False)
    assert flops_per_token(ARCH, lora, 2048) == pytest.approx(4 * p + attention + 6 * 41_943_040)
    ckpt = Settings(method="full", gradient_checkpointing=True)
    assert flops_per_token(ARCH, ckpt, 2048) == pytest.approx(8 * p + attention * 4 / 3)


def test_packing_processes_only_real_tokens():
    data = DataShape(1000, 300)
    packed = Settings(method="lora", packing=True, micro_batch_size=8)
    padded = Settings(method="lora", packing=False, micro_batch_size=8)
    assert tokens_per_epoch(data, packed) == 950 * 300  # the 950 left after the 50-example eval split
    assert tokens_per_epoch(data, padded) > tokens_per_epoch(data, packed)


def test_published_throughput_without_compile_is_matched_within_15_percent():
    # torchtune: Llama-3.2-3B full, bf16, b2, s4096, no checkpointing, 1x A100: 7,075 tokens/s.
    arch = resolve_model("meta-llama/Llama-3.2-3B").arch
    s = Settings(method="full", micro_batch_size=2, max_seq_len=4096, gradient_checkpointing=False, epochs=1)
    predicted = estimate_time(arch, s, A100, DataShape(10_000, 4096)).tokens_per_second
    assert predicted == pytest.approx(7075, rel=0.15)


def test_offload_and_multinode_zero3_cost_time():
    data = DataShape(10_000, 1000)
    base = Settings(method="full", zero_stage=3, micro_batch_size=4, gradient_accumulation_steps=1)
    one_node = Device(GPUS["H100-SXM"], 8, 1)
    two_nodes = Device(GPUS["H100-SXM"], 8, 2)
    plain = estimate_time(ARCH, base, one_node, data)
    offloaded = estimate_time(ARCH, base.model_copy(update={"offload": "optimizer"}), one_node, data)
    assert offloaded.hours > plain.hours
    # twice the GPUs is less than twice as fast across a network
    assert estimate_time(ARCH, base, two_nodes, data).hours > plain.hours / 2


def test_cost_is_gpu_hours_times_price_and_the_price_can_be_overridden():
    text = '[model]\nname = "meta-llama/Llama-3.1-8B"\n[hardware]\ngpu = "H100-SXM"\ngpus_per_node = 8\n'
    plan = make_plan(read_answers_text(text))
    for mp in plan.methods.values():
        assert mp.cost.usd == pytest.approx(mp.time.gpu_hours * GPUS["H100-SXM"].usd_per_hour)
        assert mp.time.gpu_hours == pytest.approx(8 * mp.time.hours)
    cheap = make_plan(read_answers_text(text + "[budget]\ngpu_hour_usd = 1.5\n"))
    assert cheap.methods["lora"].cost.usd == pytest.approx(cheap.methods["lora"].time.gpu_hours * 1.5)
    assert cheap.hardware.usd_per_gpu_hour == 1.5


def test_hidden_costs_for_variants_and_checkpoints():
    text = '[model]\nname = "meta-llama/Llama-3.1-8B"\n[hardware]\ngpu = "H100-SXM"\n[objective]\nvariants = 10\n'
    plan = make_plan(read_answers_text(text))
    full, lora = plan.methods["full"].cost, plan.methods["lora"].cost
    assert full.serving_storage_gb == pytest.approx(10 * 2 * ARCH.params / 1e9)
    assert lora.serving_storage_gb == pytest.approx(2 * ARCH.params / 1e9 + 10 * lora.artifact_gb)
    assert full.serving_gpus == 10 * lora.serving_gpus
    assert full.checkpoint_gb > 50 * lora.checkpoint_gb
    assert full.checkpoint_storage_usd_month > lora.checkpoint_storage_usd_month
    assert full.experiments_usd == pytest.approx(full.experiment_runs * full.usd)
