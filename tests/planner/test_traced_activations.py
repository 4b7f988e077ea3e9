"""The card's traced saved-activation figures against real CPU steps and against the Llama formula.

The card traces one layer of each kind on meta tensors (``ftplan.derive.trace``). Here the same
tiny models are built with random weights on the CPU and run for real, whole, at two depths; a
layer's real share is the difference of the two whole-model counts divided by the extra layers,
so nothing of the trace's per-layer bookkeeping (which inputs are shared, what is a parameter) is
reused. Eager attention is the real kernel on both sides (its s x s probabilities included); the
flash figure is held to torch's own CPU flash kernel op by op.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import card_support  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BATCH, SEQ = 2, 96


def _card(model_type):
    from ftplan.derive.meta import derive_card

    return derive_card(card_support.tiny_config(model_type))


def _real_model(model_type, layers, dtype, full):
    config = dict(card_support.tiny_config(model_type), num_hidden_layers=layers)
    config.pop("layer_types", None)  # let the config rebuild it for the new depth
    hf = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    hf._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf).to(dtype)
    model.requires_grad_(full)
    if not full:
        model.enable_input_require_grads()
    return model.train()


def _real_saved(model) -> int:
    """Bytes of all distinct non-parameter storages autograd keeps in one real forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, use_cache=False)
    del out
    return sum(seen.values())


def _real_per_layer(model_type, dtype, full) -> float:
    low = _real_saved(_real_model(model_type, 2, dtype, full))
    high = _real_saved(_real_model(model_type, 4, dtype, full))
    return (high - low) / 2


@pytest.mark.parametrize(
    "model_type", ["llama", "qwen3", "qwen3_moe", "gemma3_text", "olmo2", "phi3", "gpt_oss", "mixtral"]
)
@pytest.mark.parametrize("mode", ["full", "frozen"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_traced_layer_bytes_match_a_real_cpu_step(model_type, mode, dtype):
    card = _card(model_type)
    per_token, per_score = card.traced_saved(mode, dtype, "eager")
    traced = per_token * BATCH * SEQ + per_score * BATCH * SEQ * SEQ
    real = _real_per_layer(model_type, torch.bfloat16 if dtype == "bf16" else torch.float32, mode == "full")
    print(f"{model_type} {mode} {dtype}: traced {traced:,.0f} B/layer, real {real:,.0f} B/layer")
    assert traced == pytest.approx(real, rel=0.03)


def test_flash_figure_keeps_what_torchs_flash_kernel_keeps():
    """The trace's flash stand-in keeps the same tensors as torch's CPU flash kernel (q, k, v, out, lse)."""
    from ftplan.derive.trace import _flash_function

    def saved(fn):
        torch.manual_seed(0)
        q = torch.randn(2, 8, 64, 16, requires_grad=True)
        k = torch.randn(2, 2, 64, 16, requires_grad=True)
        v = torch.randn(2, 2, 64, 16, requires_grad=True)
        sizes = {}

        def pack(t):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(q, k, v)
        out.sum().backward()
        return sorted(sizes.values()), out

    kernel, ref = saved(
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    )
    module = torch.nn.Module()
    module.is_causal = True
    flash = _flash_function()
    ours, out = saved(lambda q, k, v: flash(module, q, k, v, None)[0].transpose(1, 2))
    assert ours == kernel
    torch.testing.assert_close(out, ref)


def test_qwen3_saves_more_than_the_llama_shaped_formula():
    """Qwen3's q_norm / k_norm (fp32 copies of q and k) are in the traced figure."""
    llama, qwen3 = _card("llama"), _card("qwen3")
    assert qwen3.traced_saved("full", "bf16", "flash")[0] > llama.traced_saved("full", "bf16", "flash")[0]


def _real_lora_per_layer(model_type, dtype, r) -> float:
    import peft

    def saved(layers):
        model = _real_model(model_type, layers, dtype, full=False)
        model = peft.get_peft_model(
            model, peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear")
        )
        return _real_saved(model.train())

    return (saved(4) - saved(2)) / 2


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_planned_lora_layer_matches_a_real_peft_step(model_type, precision):
    """The planner's LoRA layer (traced frozen base + peft's adapter inputs) against a real peft step."""
    pytest.importorskip("peft")
    from ftplan.planner.activations import ActivationModel
    from ftplan.planner.arch import arch_from_card
    from ftplan.planner.settings import Settings

    arch = arch_from_card(_card(model_type))
    s = Settings(method="lora", precision=precision, attention="eager", lora_r=8, lora_dropout=0.0)
    planned = ActivationModel(arch, s, cpu=True).at(BATCH, SEQ).layer_saved
    real = _real_lora_per_layer(model_type, torch.bfloat16 if precision == "bf16" else torch.float32, 8)
    print(f"{model_type} lora {precision}: planned {planned:,} B/layer, real {real:,.0f} B/layer")
    assert planned == pytest.approx(real, rel=0.03)


@pytest.mark.parametrize("model_type", ["llama", "gpt_oss"])
def test_forward_peak_and_post_attention_share_on_meta_equal_real_tensors(model_type):
    """What the card traces on meta (the MoE on the patched grouped_mm) is what the same forward holds
    on real CPU tensors: the most a layer's forward holds at once, and what it saves after its attention."""
    from ftplan.derive.trace import _patched_for_meta, attention_of, saved_bytes

    values = card_support.tiny_config(model_type)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    config._attn_implementation = "eager"
    real = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.device("meta"):
        meta = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for full in (True, False):
        traces = []
        for model in (real, meta):
            layers = list(model.get_decoder().layers)
            with _patched_for_meta():
                traces.append(saved_bytes(model, layers, SEQ, full, BATCH, split_at=[attention_of(x) for x in layers]))
        assert traces[0] == traces[1]
        for t in traces[0]:
            assert 0 < t.after_attention < t.saved < t.forward_peak


def test_a_moe_trace_is_the_same_every_time():
    """DeepSeek-V3's routing drops graphs during the forward; their freed storages' addresses were taken
    by new saved tensors and miscounted, so its card's figures changed from run to run (up to 35 %)."""
    from ftplan.derive.meta import derive_card

    config = card_support.tiny_config("deepseek_v3")
    first, second = derive_card(config), derive_card(config)
    assert first.saved_bytes_per_token and first.forward_peak_bytes_per_token
    assert first.saved_bytes_per_token == second.saved_bytes_per_token
    assert first.saved_bytes_per_score == second.saved_bytes_per_score
    assert first.forward_peak_bytes_per_token == second.forward_peak_bytes_per_token
