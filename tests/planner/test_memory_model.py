"""Fast properties of the memory model (ftplan.planner.memory); no torch needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftplan.planner.activations import _layer_saved_per_token, activations
from ftplan.planner.arch import arch_from_config
from ftplan.planner.catalog.gpus import CPU, GPUS
from ftplan.planner.device import Device
from ftplan.planner.memory import estimate_memory, usable_memory
from ftplan.planner.models import resolve_model
from ftplan.planner.settings import Settings

A100 = GPUS["A100-80GB"]


def llama8b():
    return resolve_model("meta-llama/Llama-3.1-8B").arch


def tiny(**kw):
    cfg = {
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "vocab_size": 512,
        "tie_word_embeddings": False,
    }
    cfg.update(kw)
    return arch_from_config(cfg)


def S(**kw) -> Settings:
    base = dict(method="lora", precision="bf16", micro_batch_size=1, max_seq_len=2048, gradient_accumulation_steps=1)
    base.update(kw)
    return Settings(**base)


def model_states(m):
    return m.weights + m.gradients + m.optimizer


def test_zero3_model_states_shrink_with_world_size():
    arch = resolve_model("meta-llama/Llama-2-7b-hf").arch
    s = S(method="full", zero_stage=3, gradient_checkpointing=True, optimizer="adamw_torch_fused")
    sizes = []
    for n in (1, 2, 4, 8):
        m = estimate_memory(arch, s, Device(A100, n, 1))
        # weights, gradients and optimizer states are all sharded under ZeRO-3
        sizes.append((m.weights, m.phases["optimizer_step"]))
    assert all(a[0] > b[0] for a, b in zip(sizes, sizes[1:], strict=False))
    assert all(a[1] > b[1] for a, b in zip(sizes, sizes[1:], strict=False))


def test_offload_moves_optimizer_to_cpu_memory():
    arch = resolve_model("meta-llama/Llama-2-7b-hf").arch
    dev = Device(A100, 2, 1)
    on_gpu = estimate_memory(arch, S(method="full", zero_stage=3, offload="none"), dev)
    off = estimate_memory(arch, S(method="full", zero_stage=3, offload="optimizer"), dev)
    assert on_gpu.cpu_memory == 0
    assert on_gpu.optimizer > 0
    assert off.optimizer == 0
    assert off.cpu_memory >= on_gpu.optimizer
    assert off.total < on_gpu.total


def test_eager_costs_more_than_sdpa_at_long_sequences():
    arch = llama8b()
    for method in ("full", "lora", "qlora"):
        sdpa = estimate_memory(arch, S(method=method, max_seq_len=8192, attention="sdpa"), Device(A100))
        eager = estimate_memory(arch, S(method=method, max_seq_len=8192, attention="eager"), Device(A100))
        assert eager.total > sdpa.total * 1.2


def test_checkpointing_saves_memory():
    arch = llama8b()
    for method in ("full", "lora", "qlora"):
        on = estimate_memory(arch, S(method=method, gradient_checkpointing=True, micro_batch_size=4), Device(A100))
        off = estimate_memory(arch, S(method=method, gradient_checkpointing=False, micro_batch_size=4), Device(A100))
        assert on.total < off.total
        assert on.activations < off.activations


def test_qlora_weights_below_lora_weights():
    arch = llama8b()
    lora = estimate_memory(arch, S(method="lora"), Device(A100))
    qlora = estimate_memory(arch, S(method="qlora"), Device(A100))
    assert qlora.weights < 0.6 * lora.weights


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("seq", [128, 4096])
def test_peak_is_the_max_of_phases(method, ckpt, seq):
    arch = llama8b()
    m = estimate_memory(arch, S(method=method, gradient_checkpointing=ckpt, max_seq_len=seq), Device(A100))
    assert set(m.phases) == {"forward", "backward", "optimizer_step"}
    assert m.total - m.overhead == max(m.phases.values())
    assert m.phases[m.peak_phase] == max(m.phases.values())
    # not the sum of each component's maximum: gradients and logits are never both at their peak
    assert m.total - m.overhead < sum(m.phases.values())


def test_peak_phase_moves_to_optimizer_step_for_full_fine_tuning_at_short_sequences():
    arch = llama8b()
    m = estimate_memory(arch, S(method="full", max_seq_len=128, optimizer="adamw_torch"), Device(A100))
    assert m.peak_phase == "optimizer_step"
    assert m.activations == 0 and m.gradients > 0


def test_gradient_accumulation_keeps_gradients_through_forward():
    arch = llama8b()
    one = estimate_memory(arch, S(method="full", gradient_accumulation_steps=1), Device(A100))
    acc = estimate_memory(arch, S(method="full", gradient_accumulation_steps=4), Device(A100))
    assert acc.phases["forward"] > one.phases["forward"]


def test_cpu_device_has_no_overhead_and_gpu_does():
    arch = tiny()
    assert estimate_memory(arch, S(method="full", precision="fp32", max_seq_len=64), Device(CPU)).overhead == 0
    assert estimate_memory(arch, S(method="full", max_seq_len=64), Device(A100)).overhead > 0
    assert usable_memory(Device(A100)) < A100.memory


def test_layer_saved_tensors_match_the_measured_counts():
    """Per layer, per token (h=128, q=128, k=64, f=384, 4 heads): the counts MemTracker measured."""
    arch = tiny()
    h, q, k, f, lse = 128, 128, 64, 384, 4 * 4 + 8
    lora = 7 * 4 * 8  # lora_A outputs, r = 8, 7 adapters
    cases = {
        ("full", "fp32"): 24 * h + 8 * q + 8 * k + 16 * f + lse,
        ("full", "bf16"): 16 * h + 4 * q + 4 * k + 8 * f + lse,
        ("lora", "fp32"): 16 * h + 8 * q + 8 * k + 16 * f + lse + lora,
        ("lora", "bf16"): 28 * h + 8 * q + 4 * k + 10 * f + lse + lora,
    }
    for (method, precision), expected in cases.items():
        attn, mlp, _ = _layer_saved_per_token(arch, S(method=method, precision=precision, lora_r=8, lora_dropout=0.0))
        assert attn + mlp == expected, (method, precision)


def test_logits_dominate_with_large_vocabularies():
    small = activations(tiny(vocab_size=512), S(method="lora", max_seq_len=512), loss="hf")
    large = activations(tiny(vocab_size=32000), S(method="lora", max_seq_len=512), loss="hf")
    assert large.logits_saved > 10 * large.layers * large.layer_input
    assert large.logits_saved == 62.5 * small.logits_saved


def test_planner_imports_no_torch():
    code = "import sys, ftplan.planner.memory, ftplan.planner.plan; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_trl_fused_head_drops_the_logits_and_is_the_default():
    from ftplan.planner.activations import LOSS_IMPLEMENTATION

    arch = llama8b()
    s = S(method="lora", max_seq_len=4096, gradient_checkpointing=True)
    hf = estimate_memory(arch, s, Device(A100), loss="hf")
    fused = estimate_memory(arch, s, Device(A100), loss="trl_fused")
    assert LOSS_IMPLEMENTATION == "trl_fused"  # what the exported train.py (SFTTrainer) runs
    assert estimate_memory(arch, s, Device(A100)) == fused
    # 4096 x 128256 logits x 12 B = 6.3 GB that the tiled head never materialises
    assert hf.total - fused.total > 4 * 10**9
