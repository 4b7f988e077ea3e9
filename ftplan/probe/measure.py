"""Measure the memory of real training steps, by component and by phase.

One training step here is what the Hugging Face Trainer does for one micro-batch with
``gradient_accumulation_steps = 1``: forward with labels (the model computes the loss) ->
``loss.backward()`` -> gradient clipping -> ``optimizer.step()`` -> ``zero_grad(set_to_none=True)``.
The first steps run untracked (optimizer states are created lazily at the first ``step()``;
a long run's peak has them), then one steady-state step is measured:

* on the CPU with PyTorch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``), which
  follows every tensor storage made by an aten op and labels it PARAM, BUFFER, GRAD, ACT,
  TEMP (made during backward), OPT or OTH (the input batch);
* on a GPU with ``torch.cuda.max_memory_allocated`` / ``reset_peak_memory_stats`` per phase.

Phases: ``forward`` (to the loss), ``backward``, ``optimizer_step`` (clipping, step and
zero_grad). ``StepMemory.phases[p]`` is the peak allocated bytes within phase ``p``;
``StepMemory.peak`` the largest of them. torch is imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ftplan.planner.units import size

PHASES = ("forward", "backward", "optimizer_step")

# How MemTracker's categories map onto the planner's components.
COMPONENT_OF = {
    "Parameter": "weights",
    "Buffer": "weights",
    "Gradient": "gradients",
    "Optstate": "optimizer",
    "Activation": "activations",
    "Temp": "activations",
    "Other": "activations",  # the input batch (input_ids, labels)
}
COMPONENTS = ("weights", "gradients", "optimizer", "activations")


@dataclass
class StepMemory:
    """Peak memory of one steady-state training step."""

    device: str
    peak: int
    phases: dict[str, int]
    """Peak allocated bytes within each phase."""
    peak_phase: str
    by_category: dict[str, int]
    """Bytes by MemTracker category at the step's peak (on a GPU: derived, see ``components``)."""
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    """Bytes by category at each phase's own peak."""
    after: dict[str, int] = field(default_factory=dict)
    """Allocated bytes at the end of each phase."""
    seconds: float = 0.0
    tokens: int = 0

    @property
    def components(self) -> dict[str, int]:
        """The peak split into the planner's components (weights, gradients, optimizer, activations)."""
        out = dict.fromkeys(COMPONENTS, 0)
        for cat, value in self.by_category.items():
            out[COMPONENT_OF.get(cat, "activations")] += value
        return out

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["components"] = self.components
        d["tokens_per_second"] = self.tokens_per_second
        return d


# ---- building models -------------------------------------------------------------------


def tiny_llama_config(
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    vocab: int = 512,
    tied: bool = False,
    model_type: str = "llama",
    max_positions: int = 4096,
) -> dict:
    """A config.json-style dict for a small Llama-style decoder (random weights)."""
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": intermediate or (8 * hidden // 3 + 63) // 64 * 64,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }


def build_model(
    config: dict,
    *,
    method: str = "full",
    precision: str = "fp32",
    attention: str = "sdpa",
    gradient_checkpointing: bool = False,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    seed: int = 0,
    device: str = "cpu",
    loss: str = "hf",
):
    """A randomly initialised causal LM set up for training the way the exported train.py does.

    ``loss``: "hf" (the model's own cross-entropy, as the HF Trainer computes it) or "trl"
    (TRL SFTTrainer's fused LM head, ``model(..., fused_lm_head=True)``).

    ``precision="bf16"`` loads the model in bf16 (pure bf16 training); LoRA adapters stay fp32
    (peft's ``autocast_adapter_dtype``); QLoRA quantizes every decoder Linear to NF4 with double
    quantization and runs ``prepare_model_for_kbit_training`` (non-4-bit parameters to fp32),
    and its adapters are bf16 (TRL's SFTTrainer casts them).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    hf_config._attn_implementation = attention
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            del model
            quant = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_quant_storage=torch.uint8,
            )
            model = AutoModelForCausalLM.from_pretrained(
                tmp, quantization_config=quant, dtype=dtype, attn_implementation=attention, device_map=device
            )
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        with torch.device(device):  # initialise on the device (a 3B model's CPU init takes minutes)
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attention)
    model.config.use_cache = False
    if loss == "trl":
        # TRL's SFTTrainer (what the exported train.py runs, TRL >= 1.x) computes the loss with a
        # fused, tiled LM head that never materialises the (batch, seq, vocab) logits; "hf" is the
        # model's own loss (HF Trainer: logits upcast to fp32 + cross-entropy).
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    if gradient_checkpointing:
        # transformers' default: non-reentrant torch.utils.checkpoint around each decoder layer.
        model.gradient_checkpointing_enable()
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        if method == "qlora":
            # What TRL's SFTTrainer (train.py) does to a quantized model's adapters.
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        if gradient_checkpointing:
            model.enable_input_require_grads()
    model.train()
    model._ftplan_loss = loss
    return model


def make_optimizer(model, optimizer: str = "adamw_torch", lr: float = 1e-4, weight_decay: float = 0.0):
    """The optimizer the HF Trainer makes for ``optim=optimizer`` (trainable parameters only)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw_torch":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw_torch_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        import bitsandbytes as bnb

        cls = {
            "adamw_8bit": bnb.optim.AdamW8bit,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
            "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
        }[optimizer]
        return cls(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def make_batch(vocab_size: int, micro_batch_size: int, seq_len: int, device: str = "cpu", seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (micro_batch_size, seq_len), generator=g).to(device)
    return {"input_ids": ids, "labels": ids.clone()}


# ---- the step --------------------------------------------------------------------------


def _clip(model, max_grad_norm: float) -> None:
    import torch

    if max_grad_norm and max_grad_norm > 0:
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)


def _forward(model, batch, forward=None):
    if forward is not None:  # e.g. the project's trainer.compute_loss
        return forward(model, batch)
    if getattr(model, "_ftplan_loss", "hf") == "trl":
        return model(**batch, fused_lm_head=True).loss
    return model(**batch).loss


def _make_tracker():
    """MemTracker that installs gradient hooks only on trainable parameters.

    The stock tracker registers a gradient hook on every parameter of every module it sees,
    which raises for frozen (``requires_grad=False``) LoRA/QLoRA base weights.
    """
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    class _Tracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            out = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if install_grad_hooks:
                for p in module.parameters():
                    if not p.requires_grad or self._param_to_grad_hook_handles.get(p, None) is not None:
                        continue

                    def hook(grad, _self=self):
                        _self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

                    self._param_to_grad_hook_handles[p] = (
                        p.register_hook(hook),
                        p.register_post_accumulate_grad_hook(lambda q, _h=hook: _h(q.grad)),
                    )
            return out

        def _update_peak_stats(self, peak_state) -> None:
            # Only the global peak is needed; the stock method also walks every tracked
            # module's statistics on every op, which dominates the run time.
            for dev, dev_snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap["Total"]:
                    self._peak_mem[dev] = dev_snap["Total"]
                    self._peak_mem_snap[dev] = dict(dev_snap)

        # -- per-phase peaks: restart the running peak at the current total --
        def begin_phase(self) -> None:
            from copy import deepcopy

            self._peak_mem_snap = deepcopy(self._curr_mem_snap)
            self._peak_mem = {dev: snap.get("Total", 0) for dev, snap in self._curr_mem_snap.items()}

        def total_now(self) -> int:
            return sum(snap.get("Total", 0) for snap in self._curr_mem_snap.values())

        def phase_peak(self) -> tuple[int, dict[str, int]]:
            snap = self.get_tracker_snapshot("peak")
            cats: dict[str, int] = {}
            total = 0
            for dev_snap in snap.values():
                for key, value in dev_snap.items():
                    name = getattr(key, "value", str(key))
                    if name == "Total":
                        total += value
                    else:
                        cats[name] = cats.get(name, 0) + value
            return total, cats

    return _Tracker()


def _step(model, optimizer, batch, max_grad_norm: float, accumulation: int = 1, forward=None) -> None:
    for _ in range(accumulation):
        loss = _forward(model, batch, forward)
        if accumulation > 1:
            loss = loss / accumulation
        loss.backward()
        del loss
    _clip(model, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _keep_max(phases: dict, cats: dict, name: str, value: tuple[int, dict]) -> None:
    if value[0] >= phases.get(name, -1):
        phases[name], cats[name] = value


def measure_training_step(
    model,
    optimizer,
    batch: dict,
    *,
    warmup_steps: int = 1,
    max_grad_norm: float = 1.0,
    accumulation: int = 1,
    forward=None,
) -> StepMemory:
    """Run ``warmup_steps`` untracked steps, then measure one steady-state step where the model lives.

    With ``accumulation > 1`` the step runs that many forward/backward passes before the
    optimizer step (gradients are kept between them); each phase's peak is the largest over them.
    ``forward(model, batch)`` returns the loss (default: the model's own).
    """
    for _ in range(warmup_steps):
        _step(model, optimizer, batch, max_grad_norm, accumulation, forward)
    on_cuda = next(model.parameters()).device.type == "cuda"
    measure = _measure_cuda_step if on_cuda else _measure_cpu_step
    return measure(model, optimizer, batch, max_grad_norm, accumulation, forward)


def _measure_cpu_step(model, optimizer, batch: dict, max_grad_norm: float, accumulation: int, forward) -> StepMemory:
    """One step under MemTracker on the CPU."""
    import gc
    import time

    gc.collect()
    tracker = _make_tracker()
    import torch

    tracker.track_external(model, optimizer, *[v for v in batch.values() if torch.is_tensor(v)])
    phases: dict[str, int] = {}
    cats: dict[str, dict[str, int]] = {}
    after: dict[str, int] = {}
    t0 = time.perf_counter()
    with tracker:
        for i in range(accumulation):
            if i:
                tracker.reset_mod_stats()  # MemTracker refuses a second call of the root module otherwise
            tracker.begin_phase()
            loss = _forward(model, batch, forward)
            if accumulation > 1:
                loss = loss / accumulation
            _keep_max(phases, cats, "forward", tracker.phase_peak())
            after["forward"] = tracker.total_now()
            tracker.begin_phase()
            loss.backward()
            del loss
            _keep_max(phases, cats, "backward", tracker.phase_peak())
            after["backward"] = tracker.total_now()
        tracker.begin_phase()
        _clip(model, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases["optimizer_step"], cats["optimizer_step"] = tracker.phase_peak()
        after["optimizer_step"] = tracker.total_now()
    seconds = time.perf_counter() - t0
    peak_phase = max(phases, key=phases.get)
    tokens = int(batch["input_ids"].numel()) * accumulation if "input_ids" in batch else 0
    return StepMemory("cpu", phases[peak_phase], phases, peak_phase, cats[peak_phase], cats, after, seconds, tokens)


def _bytes_of(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def _split_peak(peak: int, weights: int, opt: int, grads: int, rest: str = "Activation") -> dict[str, int]:
    """A CUDA peak split like MemTracker's categories: what is not a model state is ``rest``."""
    return {"Parameter": weights, "Optstate": opt, "Gradient": grads, rest: max(peak - weights - opt - grads, 0)}


def _measure_cuda_step(model, optimizer, batch: dict, max_grad_norm: float, accumulation: int, forward) -> StepMemory:
    """One step on a CUDA device with the caching allocator's counters."""
    import time

    import torch

    torch.cuda.synchronize()
    weights = _bytes_of(list(model.parameters()) + list(model.buffers()))
    opt = _bytes_of(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    phases: dict[str, int] = {"forward": 0, "backward": 0}
    after: dict[str, int] = {}
    cats: dict[str, dict[str, int]] = {}
    grads = 0
    t0 = time.perf_counter()
    for _ in range(accumulation):
        held = _bytes_of(p.grad for p in model.parameters())
        torch.cuda.reset_peak_memory_stats()
        loss = _forward(model, batch, forward)
        if accumulation > 1:
            loss = loss / accumulation
        torch.cuda.synchronize()
        if torch.cuda.max_memory_allocated() >= phases["forward"]:
            phases["forward"] = torch.cuda.max_memory_allocated()
            cats["forward"] = _split_peak(phases["forward"], weights, opt, held)
        after["forward"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        del loss
        torch.cuda.synchronize()
        grads = _bytes_of(p.grad for p in model.parameters())
        if torch.cuda.max_memory_allocated() >= phases["backward"]:
            phases["backward"] = torch.cuda.max_memory_allocated()
            cats["backward"] = _split_peak(phases["backward"], weights, opt, grads)
        after["backward"] = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    _clip(model, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    phases["optimizer_step"] = torch.cuda.max_memory_allocated()
    after["optimizer_step"] = torch.cuda.memory_allocated()
    seconds = time.perf_counter() - t0
    cats["optimizer_step"] = _split_peak(phases["optimizer_step"], weights, opt, grads, rest="Temp")
    peak_phase = max(phases, key=phases.get)
    tokens = int(batch["input_ids"].numel()) * accumulation if "input_ids" in batch else 0
    return StepMemory("cuda", phases[peak_phase], phases, peak_phase, cats[peak_phase], cats, after, seconds, tokens)


def measure_step(
    model,
    *,
    micro_batch_size: int,
    seq_len: int,
    optimizer: str = "adamw_torch",
    warmup_steps: int = 1,
    max_grad_norm: float = 1.0,
    lr: float = 1e-4,
    batch: dict | None = None,
    accumulation: int = 1,
) -> StepMemory:
    """Run ``warmup_steps`` untracked steps, then measure one step of ``model``.

    ``model`` is a built, trainable HF causal LM (peft-wrapped for LoRA/QLoRA, checkpointing
    already enabled if wanted). Runs where the model's parameters live (CPU or CUDA).
    """
    device = next(model.parameters()).device
    if batch is None:
        vocab = model.get_input_embeddings().num_embeddings
        batch = make_batch(vocab, micro_batch_size, seq_len, device=str(device))
    opt = make_optimizer(model, optimizer, lr=lr)
    return measure_training_step(
        model, opt, batch, warmup_steps=warmup_steps, max_grad_norm=max_grad_norm, accumulation=accumulation
    )


def measure_config(
    config: dict,
    *,
    micro_batch_size: int = 1,
    seq_len: int = 128,
    optimizer: str = "adamw_torch",
    warmup_steps: int = 1,
    accumulation: int = 1,
    lora_r: int = 8,
    **model_setup,
) -> StepMemory:
    """Build a random model from ``config`` and measure one steady-state step.

    ``model_setup`` is what :func:`build_model` takes (method, precision, attention, ...);
    LoRA's alpha is twice its rank, as the planner's recipes set it.
    """
    model = build_model(config, lora_r=lora_r, lora_alpha=2.0 * lora_r, **model_setup)
    return measure_step(
        model,
        micro_batch_size=micro_batch_size,
        seq_len=seq_len,
        optimizer=optimizer,
        warmup_steps=warmup_steps,
        accumulation=accumulation,
    )


def fmt_bytes(n: float) -> str:
    return size(n, digits=2)
