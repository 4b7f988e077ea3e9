"""Bytes each decoder layer saves for backward, read off one training step of the model's own code.

The hand formulas in ``ftplan.planner.activations`` describe a Llama block tensor by tensor; every
newer block (Qwen3's q/k norms, Gemma-3's four norms and sliding layers, MoE routers and experts,
MLA's low-rank projections) would need its own. Here the model's code answers instead: one
forward of the meta-device model, its decoder stack cut down to one layer of each distinct kind,
runs under ``torch.autograd.graph.saved_tensors_hooks``, and every tensor autograd keeps while a
layer runs is counted once (by storage), unless it is a parameter or a tensor handed in from
outside the layer (rotary tables and masks, shared by all layers: the planner counts them once).

Two training modes are traced, because they save different things:

* ``full``: every weight requires grad, so each linear keeps its input;
* ``frozen``: weights frozen, the embedding's output requires grad (what peft's LoRA and
  ``enable_input_require_grads`` make of a model): the base layer keeps only what the input
  gradient needs. The LoRA adapters' own inputs are added by the planner from the card's LoRA
  units (they depend on the target list and the rank the user picks).

Attention, as the GPU run will do it:

* ``flash``: on meta tensors SDPA takes the math path and keeps the s x s probabilities, which
  no GPU kernel does. The trace runs with an attention function registered for it
  (``_flash_like``) that keeps exactly what flash-attention 2 / SDPA's flash and efficient
  kernels keep: q, k, v (k, v at their own kv-head count), the output (laid out (b, s, h, d) as
  the CUDA kernels return it, so the ``transpose(1, 2).contiguous()`` after it is a view) and a
  fp32 log-sum-exp per head and token.
* ``eager``: the model's own eager attention, s x s scores and all.

Each figure is traced at three sequence lengths and fitted exactly as ``a*s + c*s^2 (+ d)`` per
sequence: ``a`` is the per-token figure the card keeps, ``c`` the per-sequence s^2 term (eager's
probabilities, all heads), ``d`` (layer constants, e.g. expert offsets) is dropped.

The same forward records the most bytes a layer's forward holds at once (what it saves and its
temporaries, e.g. an MoE block's gathered rows and per-row expert biases): a checkpointed layer
runs that forward again in backward, on top of the stored layer inputs and the incoming gradient.

It also counts what each layer saves after its attention block returns (the
post-attention norms, the MLP or MoE block, the residual adds): backward frees all of it before the
attention runs backward, so the attention's working set (eager's s x s gradients) comes on top of
the rest only. A frozen MoE block keeps much more than a Llama MLP (gpt-oss: its MoE block 3,400 B
per token of the layer's 6,392, where a Llama-shaped share said 1,450).

MoE: routing on meta tensors means nothing (no values), so the experts run transformers'
``grouped_mm`` path (its default), which works on tokens x top-k rows sorted by expert whatever
the routing: the saved bytes are those of ``tokens x k / experts`` tokens at every expert, the
expected load. ``tests/planner/test_traced_activations.py`` holds the figures to real CPU steps.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass, field

SEQS = (64, 128, 256)
"""Sequence lengths of the three traced steps (batch 1): enough for an exact quadratic fit."""
MODES = ("full", "frozen")
DTYPES = ("bf16", "fp32")
ATTENTIONS = ("flash", "eager")
FLASH_NAME = "ftplan_flash_like"
FLASH_QUADRATIC_LIMIT = 0.05
"""A flash trace whose s^2 term is over 5 % of its linear part at the longest traced length ran some
other attention (a class that does not call transformers' attention interface): it is dropped.
(Before saved storages were followed with weak references, a freed address taken by a new tensor
made MoE figures drift from run to run: DeepSeek-V3's by up to 35 %.)"""


FIGURES = {
    "saved_bytes_per_token": ("saved", 0),
    "saved_bytes_per_score": ("saved", 1),
    "forward_peak_bytes_per_token": ("forward_peak", 0),
    "forward_peak_bytes_per_score": ("forward_peak", 1),
    "post_attention_saved_bytes_per_token": ("after_attention", 0),
}
"""The card's traced tables: (``LayerTrace`` field, 0 for the fit's per-token term, 1 for its per-score term)."""


def figure_key(mode: str, dtype: str, attention: str) -> str:
    """The card's key of one traced figure, e.g. ``full/bf16/flash``."""
    return f"{mode}/{dtype}/{attention}"


# ---- attention that saves what flash-attention saves ------------------------------------


def _flash_function():
    import torch

    class FlashLike(torch.autograd.Function):
        """q, k, v -> attention output, keeping q, k, v, the output and a fp32 log-sum-exp."""

        @staticmethod
        def forward(ctx, q, k, v, scale, causal):
            b, h, s, _ = q.shape
            dv = v.shape[-1]
            if q.is_meta:
                out = q.new_empty((b, s, h, dv)).transpose(1, 2)
            else:  # real tensors: the values too (math path, GQA by repeating kv)
                rep = h // k.shape[1]
                kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
                out = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, is_causal=causal, scale=scale)
                out = out.transpose(1, 2).contiguous().transpose(1, 2)
            lse = q.new_empty((b, h, s), dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.scale, ctx.causal = scale, causal
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, _, _ = ctx.saved_tensors
            with torch.enable_grad():
                q2, k2, v2 = (t.detach().requires_grad_(True) for t in (q, k, v))
                rep = q.shape[1] // k.shape[1]
                out = torch.nn.functional.scaled_dot_product_attention(
                    q2,
                    k2.repeat_interleave(rep, 1),
                    v2.repeat_interleave(rep, 1),
                    is_causal=ctx.causal,
                    scale=ctx.scale,
                )
                gq, gk, gv = torch.autograd.grad(out, (q2, k2, v2), grad)
            return gq, gk, gv, None, None

    def flash_like(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        """An ``AttentionInterface`` function with flash_attention_2's contract: (b, s, h, d) out."""
        causal = getattr(module, "is_causal", True) and query.shape[2] > 1
        out = FlashLike.apply(query, key, value, scaling, causal)
        return out.transpose(1, 2), None

    return flash_like


# ---- layer kinds ------------------------------------------------------------------------

_SKIP_ATTRS = ("training", "layer_idx", "layer_id", "idx")


def _signature(layer) -> tuple:
    """What makes two decoder layers run different code: module classes, their plain settings, shapes."""
    parts = []
    for name, module in layer.named_modules():
        plain = tuple(
            sorted(
                (k, v)
                for k, v in vars(module).items()
                if not k.startswith("_")
                and k not in _SKIP_ATTRS
                and (v is None or isinstance(v, (bool, int, float, str)))
            )
        )
        parts.append((name, type(module).__name__, plain))
    parts.extend((name, tuple(p.shape)) for name, p in layer.named_parameters())
    return tuple(parts)


def _label(layer) -> str:
    """A readable kind name: the layer's attention type (or sliding when it has a window) and dense / moe."""
    kinds = [m.attention_type for m in layer.modules() if isinstance(getattr(m, "attention_type", None), str)]
    if not kinds and any(isinstance(getattr(m, "sliding_window", None), int) for m in layer.modules()):
        kinds = ["sliding_attention"]
    moe = any(p.dim() == 3 for p in layer.parameters())
    return "/".join([*kinds[:1], "moe" if moe else "dense"])


def layer_kinds(layers) -> tuple[tuple[str, ...], dict[str, int]]:
    """(kind of each layer, the first layer of each kind): layers with one signature share a kind."""
    first: dict[tuple, str] = {}
    reps: dict[str, int] = {}
    out = []
    for i, layer in enumerate(layers):
        sig = _signature(layer)
        if sig not in first:
            label = _label(layer)
            if label in reps:
                label = f"{label}#{i}"
            first[sig] = label
            reps[label] = i
        out.append(first[sig])
    return tuple(out), reps


# ---- the trace --------------------------------------------------------------------------


def _storage(t):
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


def _tensors_in(values):
    import torch

    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (tuple, list)):
            yield from _tensors_in(v)


def _grouped_mm_function():
    import torch

    class GroupedMM(torch.autograd.Function):
        """torch's grouped_mm as autograd sees it (saves the input only if the weight trains, and the
        weight only if the input needs a gradient), for dtypes its meta kernel refuses (fp32)."""

        @staticmethod
        def forward(ctx, input, weight, offs):
            ctx.save_for_backward(input if weight.requires_grad else None, weight if input.requires_grad else None)
            return input.new_empty((input.shape[0], weight.shape[-1]))

        @staticmethod
        def backward(ctx, grad):  # pragma: no cover - meta traces never run backward
            raise NotImplementedError

    def grouped_mm(input, weight, offs):
        if weight.is_meta and weight.dtype != torch.bfloat16:
            return GroupedMM.apply(input.to(weight.dtype), weight, offs)
        return torch.nn.functional.grouped_mm(input.to(weight.dtype), weight, offs=offs)

    return grouped_mm


@contextlib.contextmanager
def _patched_for_meta():
    """What a meta forward needs: no packed-sequence probe (it reads values); MoE experts on grouped_mm
    (transformers' default on GPUs and recent CPUs) in every dtype, though its meta kernel takes bf16 only."""
    import transformers.masking_utils as masking
    from transformers.integrations import moe

    saved = masking.find_packed_sequence_indices, moe._grouped_mm
    masking.find_packed_sequence_indices = lambda position_ids: None  # no packing: one sequence per row
    moe._grouped_mm = _grouped_mm_function()
    try:
        yield
    finally:
        masking.find_packed_sequence_indices, moe._grouped_mm = saved


def _set_attention(model, name: str) -> None:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            for sub in [config] + [getattr(config, k, None) for k in ("text_config", "vision_config")]:
                if sub is not None:
                    with contextlib.suppress(AttributeError, ValueError):
                        sub._attn_implementation = name


ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
"""Attribute names of a decoder layer's attention block across transformers' model classes."""


def attention_of(layer):
    """The layer's attention block, or None when the class names it otherwise."""
    import torch

    return next((m for n in ATTENTION_NAMES if isinstance(m := getattr(layer, n, None), torch.nn.Module)), None)


@dataclass(frozen=True)
class LayerTrace:
    """What one decoder layer's forward showed (bytes, for the traced batch and length)."""

    saved: int
    """Kept for backward (each storage once; no parameters, nothing handed in but the hidden states)."""
    after_attention: int
    """The part of ``saved`` first saved after the layer's attention block returned."""
    forward_peak: int
    """Most bytes alive at once of the storages the layer's forward made (saved ones included)."""


@dataclass
class _Running:
    """One layer's bookkeeping while its forward runs."""

    outside: set
    saved: dict = field(default_factory=dict)  # storage -> (bytes, saved after the attention returned)
    after_attention: bool = False
    live: int = 0
    peak: int = 0


def saved_bytes(model, layers, seq: int, full: bool, batch: int = 1, split_at=()) -> list[LayerTrace]:
    """What each module of ``layers`` saves for backward, and holds at once, in one forward of
    ``model`` (``batch`` x ``seq`` tokens); ``split_at`` (a submodule of each layer, e.g. its attention)
    marks where ``after_attention`` starts. Works on meta and on real tensors alike.

    A saved tensor whose storage dies before its layer returns (a graph the forward dropped, e.g.
    a routing branch) was never kept for backward and is not counted; storages are followed with
    weak references, so a freed address taken by a new tensor is a new storage.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    device = next(model.parameters()).device
    params = {_storage(p)[0] for p in model.parameters()}
    found: dict = {}
    running: dict = {}  # layer -> _Running
    made: dict = {}  # storage made in a layer's forward -> (bytes, the layers running then)
    watched: set = set()  # saved storages followed until they die
    owner = dict(zip(split_at, layers, strict=False))

    def pre(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        outside = {_storage(t)[0] for t in _tensors_in(list(args) + list(kwargs.values())) if t is not hidden}
        running[module] = _Running(outside)

    def post(module, args, kwargs, output):
        state = running.pop(module)
        sizes = state.saved.values()
        found[module] = LayerTrace(sum(s for s, _ in sizes), sum(s for s, after in sizes if after), state.peak)

    def split(module, args, kwargs, output):
        if owner[module] in running:
            running[owner[module]].after_attention = True

    def unsaved(key):
        watched.discard(key)
        for state in running.values():
            state.saved.pop(key, None)

    def pack(t):
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in params:
            for state in running.values():
                if key not in state.outside and key not in state.saved:
                    state.saved[key] = (storage.nbytes(), state.after_attention)
            if running and key not in watched:
                watched.add(key)
                weakref.finalize(storage, unsaved, key)
        return t

    def freed(key):
        size, layers_then = made.pop(key)
        for layer in layers_then:
            if layer in running:
                running[layer].live -= size

    class Made(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor) or not running:
                    continue
                storage = t.untyped_storage()
                key, size = storage._cdata, storage.nbytes()
                if key in made or key in params or not size:
                    continue
                made[key] = (size, tuple(running))
                weakref.finalize(storage, freed, key)
                for state in running.values():
                    state.live += size
                    state.peak = max(state.peak, state.live)
            return out

    grads = {p: p.requires_grad for p in model.parameters()}
    handles = []
    try:
        for p in model.parameters():
            p.requires_grad_(full)
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(layer.register_forward_hook(post, with_kwargs=True))
        for module in split_at:
            handles.append(module.register_forward_hook(split, with_kwargs=True))
        if not full:  # LoRA: frozen weights, a graph from the embeddings up (enable_input_require_grads)
            handles.append(model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True)))
        model.train()
        ids = torch.zeros(batch, seq, dtype=torch.long, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), Made():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        for p, g in grads.items():
            p.requires_grad_(g)
    return [found[layer] for layer in layers]


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Exact fit of B(s) = d + a*s + c*s^2 through three points: (a, c)."""
    (s1, b1), (s2, b2), (s3, b3) = points
    m12 = (b2 - b1) / (s2 - s1)
    m23 = (b3 - b2) / (s3 - s2)
    c = (m23 - m12) / (s3 - s1)
    a = m12 - c * (s1 + s2)
    return a, c


def trace_card_activations(model, attention: tuple[str, ...]) -> dict:
    """The card's traced figures: ``layer_kinds``, ``saved_bytes_per_token``, ``saved_bytes_per_score``
    ``forward_peak_bytes_per_token`` / ``_per_score`` and, where each layer's attention block has a known
    name, ``post_attention_saved_bytes_per_token``.

    ``attention``: the kernels the class accepts (the card's list); ``flash`` is traced when it
    takes sdpa or flash-attention. Returns {} when the model's forward cannot run on meta (the
    planner then keeps its hand formulas).
    """
    import torch
    from transformers import AttentionInterface

    decoder = model.get_decoder()
    stack_name = next(
        (n for n in ("layers", "h", "blocks") if isinstance(getattr(decoder, n, None), torch.nn.ModuleList)), None
    )
    if stack_name is None:
        return {}
    full_stack = getattr(decoder, stack_name)
    kinds, reps = layer_kinds(full_stack)
    rep_layers = [full_stack[i] for i in reps.values()]
    AttentionInterface.register(FLASH_NAME, _flash_function())
    attentions = [a for a in ATTENTIONS if a == "eager" or any(k != "eager" for k in attention)]
    tables: dict = {name: {k: {} for k in reps} for name in FIGURES}
    attentions_of = [attention_of(layer) for layer in rep_layers]
    attentions_of = attentions_of if all(m is not None for m in attentions_of) else []
    original_dtype = next(model.parameters()).dtype
    original_impl = getattr(model.config, "_attn_implementation", None)
    setattr(decoder, stack_name, torch.nn.ModuleList(rep_layers))
    try:
        with _patched_for_meta(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for dtype in DTYPES:
                model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
                for att in attentions:
                    _set_attention(model, FLASH_NAME if att == "flash" else "eager")
                    try:
                        rows = {
                            mode: [
                                saved_bytes(model, rep_layers, s, mode == "full", split_at=attentions_of) for s in SEQS
                            ]
                            for mode in MODES
                        }
                    except Exception:  # noqa: BLE001 - a forward that needs values (or a mask) here
                        continue
                    for mode, by_seq in rows.items():
                        for j, kind in enumerate(reps):
                            fits = {
                                name: _fit([(s, getattr(row[j], name)) for s, row in zip(SEQS, by_seq, strict=True)])
                                for name in LayerTrace.__dataclass_fields__
                            }
                            a, c = fits["saved"]
                            if att == "flash" and abs(c) * SEQS[-1] > FLASH_QUADRATIC_LIMIT * max(a, 1.0):
                                continue  # the class does not call the attention interface: no flash figure
                            key = figure_key(mode, dtype, att)
                            for table, (name, per_score) in FIGURES.items():
                                tables[table][kind][key] = round(fits[name][per_score], 6 if per_score else 3)
    finally:
        setattr(decoder, stack_name, full_stack)
        model.to(original_dtype)
        if original_impl:
            _set_attention(model, original_impl)
    if not any(tables["saved_bytes_per_token"].values()):
        return {}
    if not attentions_of:
        del tables["post_attention_saved_bytes_per_token"]
    return {"layer_kinds": kinds, **tables}
