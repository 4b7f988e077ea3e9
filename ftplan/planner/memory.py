"""Per-GPU memory of one training step, by component, at the step's peak.

The step's phases assembled from the model states (``model_states``: weights, gradients, optimizer
states per engine) and the activations (``activations``: what a micro-batch keeps and works on,
logits and loss included), with the CUDA context and library workspaces on top.

The peak is the largest of the step's phases (end of forward, peak of backward, optimizer
step), not the sum of each component's maximum; ``components`` report each part's value
at that peak phase.
"""

from __future__ import annotations

import functools

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ftplan.planner.activations import (
    TRL_TOKEN_CHUNK,
    TRL_VOCAB_CHUNK,
    ActivationModel,
    Activations,
    traced_layer_saved,
)
from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GIB
from ftplan.planner.device import Device
from ftplan.planner.model_states import (
    FSDP_REDUCE_UNITS,
    ModelStates,
    Term,
    model_states,
    source_text,
    step_temporaries,
    trainable_value_bytes,
)
from ftplan.planner.settings import Settings

# CUDA context + cuBLAS/cuDNN workspaces + NCCL buffers outside the caching allocator.
# ~500 MiB context on Ampere/Hopper with lazy module loading, plus allocator fragmentation
# headroom is *not* included here (it is in USABLE_FRACTION).
CUDA_OVERHEAD = 1 * GIB
NCCL_OVERHEAD = 1 * GIB // 2
CUDA_SOURCE = "fixed 1 GiB: CUDA context, cuBLAS/cuDNN workspaces (outside PyTorch's allocator)"
NCCL_SOURCE = "fixed 0.5 GiB: NCCL buffers (more than one GPU)"
# Fraction of device memory a run can use before fragmentation makes allocations fail.
USABLE_FRACTION = 0.95

CHECKPOINT_RECOMPUTE_ALIVE = 1.0


class Memory(BaseModel):
    """Memory per GPU at the step's peak, by component: what the plan's JSON carries as
    ``methods.<m>.memory`` (the host RAM, the phases and the peak phase travel beside it, as
    ``cpu_memory`` and ``memory_phases``, or not at all)."""

    model_config = ConfigDict(frozen=True)

    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    cpu_memory: int = Field(0, exclude=True)
    """Host RAM per node: offloaded states, rank 0's loading copy."""
    phases: dict[str, int] = Field(default_factory=dict, exclude=True)
    """Allocated bytes at each phase of the step; the peak phase decides the components."""
    peak_phase: str = Field("", exclude=True)

    @computed_field
    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead


class MemoryTerm(BaseModel):
    """One term of a method's memory (``methods.<m>.memory_terms``): the terms of a component add
    up to its figure in ``memory`` (``cpu_memory``'s to ``cpu_memory``); a negative term takes a part
    away (the other GPUs' shards, what is offloaded to the host)."""

    model_config = ConfigDict(frozen=True)

    name: str
    bytes: int
    """Bytes per GPU (cpu_memory: per node)."""
    component: str
    """weights, gradients, optimizer, activations, overhead or cpu_memory."""
    phase: str | None = None
    """The phase of the step it is counted at (forward, backward, optimizer_step); None: every phase."""
    source: str
    """What it is computed from, e.g. "8,030,261,248 params × 2 B (bf16)"."""


CUDA_TERM = MemoryTerm(
    name="CUDA context and workspaces", bytes=CUDA_OVERHEAD, component="overhead", source=CUDA_SOURCE
)
NCCL_TERM = MemoryTerm(name="NCCL buffers", bytes=NCCL_OVERHEAD, component="overhead", source=NCCL_SOURCE)


def estimate_memory(arch: ModelArch, s: Settings, device: Device, loss: str | None = None) -> Memory:
    """Memory per GPU (host memory when the device is the CPU) at the step's peak."""
    return MemoryModel(arch, s, device, loss).estimate()


PHASES = (
    "forward_end",
    "forward_layer",
    "backward_start",
    "backward_top_layer",
    "backward_bottom_layer",
    "backward_end",
    "optimizer_step",
)
"""The points of a step the memory model checks, in the order they happen."""


class MemoryModel:
    """One method's settings on one device, as a function of the batch shape.

    Phases (what is alive at each, with set_to_none zero_grad as the Trainer does):
    forward end: weights + optimizer states + saved activations + logits (+ accumulated grads);
    backward: the largest of its start (all activations + 12 B per logit), the top layer
    (activations + first gradients + that layer's recompute and working set), the bottom layer
    (all gradients but the embedding's + one layer's activations) and its end (all gradients);
    optimizer step: gradients + states + the step's temporaries.

    The model states (weights, gradients, optimizer states, offload) do not depend on the
    micro-batch, the sequence length or accumulation, so they are worked out once here; the
    planner's searches over batch shapes then pay for one activation model per shape
    (``peak``) instead of a full estimate and a copy of the settings.
    """

    def __init__(self, arch: ModelArch, s: Settings, device: Device, loss: str | None = None):
        self.settings, self.arch = s, arch
        world = device.world_size
        states = self.states = model_states(arch, s, device)
        trainable, gradients, self.reduce_buffer = states.trainable, states.gradients, states.reduce_buffer
        # Gradients present at each point of backward (sharded like the full set). Backward runs
        # lm_head first, then the layers top-down, each MLP before its attention.
        if s.method == "full":
            head_params = arch.lm_head_params + arch.final_norm_params
            if arch.tied_embeddings:
                head_params += arch.embedding_params  # lm_head's gradient is the embedding's
            layer_params = arch.layer_params
            first_matrix = arch.largest_matrix
        else:
            head_params = 0
            layer_params = trainable // max(arch.layers, 1)
            first_matrix = layer_params // 2
        frac = gradients / max(trainable, 1)
        self.weights, self.gradients, self.optimizer, self.cpu_memory = (
            states.weights,
            gradients,
            states.optimizer,
            states.cpu_memory,
        )
        self.g_top = int((head_params + first_matrix) * frac)
        self.g_bottom = int((head_params + (arch.layers - 1) * layer_params + first_matrix) * frac)
        self.gradient_params = (
            head_params + first_matrix,
            head_params + (arch.layers - 1) * layer_params + first_matrix,
        )
        self.step_temp, self.step_temp_source = step_temporaries(arch, s, device, gradients, trainable_value_bytes(s))
        self.overhead = 0 if device.is_cpu else CUDA_OVERHEAD + (NCCL_OVERHEAD if world > 1 else 0)
        self.activations = ActivationModel(arch, s, cpu=device.is_cpu, loss=loss)

    def phases(self, act: Activations, accumulation: int) -> tuple[tuple[int, int, int], ...]:
        """(gradients, activations, step temporaries) alive at each of ``PHASES`` for a micro-batch's
        activations (``self.activations.at(batch, seq_len)``)."""
        gradients = self.gradients
        held = gradients if accumulation > 1 else 0  # grads kept across micro-batches
        stored = act.stored
        ckpt = act.checkpointing
        recompute = int(CHECKPOINT_RECOMPUTE_ALIVE * act.layer_saved) if ckpt else 0
        # Forward: the end (logits, their fp32 copy, log-softmax) or, with checkpointing, one
        # layer's transient forward on top of the stored layer inputs.
        if ckpt:
            recomputed = max(recompute + act.layer_work, act.recompute_forward)
            top_acts = stored - act.logits_saved - act.final_norm_input + recomputed
            bottom_acts = act.layer_input + recomputed + act.shared_saved
        else:
            top_acts = stored - act.logits_saved - act.final_norm_input + act.layer_work
            bottom_acts = act.layer_saved + act.layer_work + act.shared_saved
        return (
            (held, stored + act.logits_forward_extra, 0),
            (held, self._forward_layer(act), 0),
            (held, stored + act.logits_backward_extra, 0),
            (max(held, self.g_top) + self.reduce_buffer, top_acts, 0),
            (max(held, self.g_bottom) + self.reduce_buffer, bottom_acts, 0),
            (gradients, act.layer_input, 0),  # the gradient flowing down the residual stream
            (gradients, 0, self.step_temp),
        )

    @staticmethod
    def _forward_layer(act: Activations) -> int:
        """Activations while the top layer runs forward: with checkpointing, the stored layer inputs and one
        layer's transient forward; without, the layers below's saved tensors and the most the top layer's
        forward holds at once (traced; 0 untraced, where the end of forward is taken to hold more)."""
        if act.checkpointing:
            return act.stored - act.logits_saved + act.forward_work
        if not act.layer_forward_peak:
            return 0
        return (
            act.stored
            - act.logits_saved
            - (act.head_saved - act.shared_saved)
            - act.layer_saved
            + act.layer_forward_peak
        )

    def peak(self, batch: int, seq_len: int, accumulation: int) -> int:
        """Total bytes at the step's peak for this batch shape (``estimate().total``)."""
        base = self.weights + self.optimizer + self.overhead
        return base + max([g + a + t for g, a, t in self.phases(self.activations.at(batch, seq_len), accumulation)])

    def _shape(self, batch: int | None, seq_len: int | None, accumulation: int | None) -> tuple[int, int, int]:
        s = self.settings
        return (
            s.micro_batch_size if batch is None else batch,
            s.max_seq_len if seq_len is None else seq_len,
            s.gradient_accumulation_steps if accumulation is None else accumulation,
        )

    def _peak_phase(self, act: Activations, accumulation: int) -> tuple[dict, dict, str]:
        """(gradients, activations, temporaries) at each point, the total at each, the peak's point."""
        detail = dict(zip(PHASES, self.phases(act, accumulation), strict=True))
        base = self.weights + self.optimizer
        totals = {k: base + g + a + t for k, (g, a, t) in detail.items()}
        return detail, totals, max(totals, key=totals.get)

    def estimate(self, batch: int | None = None, seq_len: int | None = None, accumulation: int | None = None):
        """The estimate by component at the peak phase (the settings' own shape by default)."""
        batch, seq_len, accumulation = self._shape(batch, seq_len, accumulation)
        return self._memory(*self._peak_phase(self.activations.at(batch, seq_len), accumulation))

    def itemise(self) -> tuple[Memory, list[MemoryTerm]]:
        """``estimate()`` and every term of it at the peak point, named, with its source (the terms of a
        component add up to its figure), at the settings' own shape: the phases worked out once."""
        batch, seq_len, accumulation = self._shape(None, None, None)
        act = self.activations.at(batch, seq_len)
        detail, totals, peak_key = self._peak_phase(act, accumulation)
        return self._memory(detail, totals, peak_key), self.phase_terms(peak_key, batch, seq_len, accumulation, act)

    def _memory(self, detail: dict, totals: dict, peak_key: str) -> Memory:
        phases = {
            "forward": max(totals["forward_end"], totals["forward_layer"]),
            "backward": max(v for k, v in totals.items() if k.startswith("backward")),
            "optimizer_step": totals["optimizer_step"],
        }
        g, a, t = detail[peak_key]
        return Memory(
            weights=int(self.weights),
            gradients=int(g),
            optimizer=int(self.optimizer + t),
            activations=int(a),
            overhead=self.overhead,
            cpu_memory=int(self.cpu_memory),
            phases={k: int(v) for k, v in phases.items()},
            peak_phase=coarse_phase(peak_key),
        )

    def phase_terms(
        self, point: str, batch: int, seq_len: int, accumulation: int, act: Activations | None = None
    ) -> list[MemoryTerm]:
        """The terms alive at one point of ``PHASES`` (what ``itemise`` lists for the peak's)."""
        phase = coarse_phase(point)
        states = self.states
        found = [*_itemised(states, "weights", None), *_itemised(states, "optimizer", None)]
        if point == "optimizer_step" and self.step_temp:
            temp = ("optimizer", "optimizer step temporaries", self.step_temp, self.step_temp_source, ())
            found.append(_term(temp, phase))
        found += self._gradient_terms(point, accumulation)
        act = act or self.activations.at(batch, seq_len)
        found += [_term(t, phase) for t in self._activation_parts(act, point, batch * seq_len) if t[2]]
        if self.overhead:
            found.append(CUDA_TERM)
        if self.overhead > CUDA_OVERHEAD:
            found.append(NCCL_TERM)
        found += _itemised(states, "cpu_memory", None)
        return [term for term in found if term.bytes]

    def _gradient_terms(self, point: str, accumulation: int) -> list[MemoryTerm]:
        """Gradients alive at ``point``: all of them, none, or (mid-backward) those computed so far."""
        phase = coarse_phase(point)
        every = _itemised(self.states, "gradients", phase)
        held = accumulation > 1
        if point in ("backward_end", "optimizer_step"):
            return every
        if not point.startswith("backward_") or point == "backward_start":
            return every if held else []
        every = list(every)  # the memoised list stays as it is
        top = point == "backward_top_layer"
        so_far = self.g_top if top else self.g_bottom
        found = every
        if not held or so_far > self.gradients:
            where = (
                "lm_head and the top layer's first matrix" if top else "every layer but the bottom one's last matrices"
            )
            source = "{}: {:,} params' gradients, sharded like the rest"
            found = [
                _term(("gradients", "gradients so far", so_far, source, (where, self.gradient_params[not top])), phase)
            ]
        if self.reduce_buffer:
            source = "FSDP2: {} units' unsharded gradients being reduce-scattered"
            found.append(
                _term(("gradients", "reduce-scatter buffers", self.reduce_buffer, source, (FSDP_REDUCE_UNITS,)), phase)
            )
        return found

    def _activation_parts(self, act: Activations, point: str, tokens: int) -> list[Term]:
        """The activations alive at ``point``, part by part (they add up to ``phases``' figure)."""
        model = self.activations
        layers = model.layers
        ckpt = act.checkpointing
        e, h = model.e, model.h
        residual = "{:,} tokens × {:,} hidden × {} B"
        if ckpt:
            stack = (
                "activations",
                "checkpointed layer inputs",
                layers * act.layer_input,
                "{} layers × " + residual,
                (layers, tokens, h, e),
            )
        else:
            traced = traced_layer_saved(self.arch, self.settings) is not None
            kind = "traced layer" if traced else "Llama formula"
            kind += " + LoRA inputs" if self.settings.is_peft else ""
            scores = " + eager attention's s² scores" if model.eager else ""
            source = "{}: {:,.0f} B saved per token × {:,} tokens × {} layers{}"
            stack = (
                "activations",
                "decoder layers' saved tensors",
                layers * act.layer_saved,
                source,
                (kind, model.layer_saved, tokens, layers, scores),
            )
        head = (
            "activations",
            "final norm, rotary tables, input ids, labels",
            act.head_saved,
            "{:,} tokens: the final norm's input and output, cos/sin, int64 ids and labels",
            (tokens,),
        )
        shared = (
            "activations",
            "rotary tables, input ids, labels",
            act.shared_saved,
            "{:,} tokens: cos/sin, int64 ids and labels",
            (tokens,),
        )
        head_less_norm = (
            "activations",
            "rotary tables, input ids, labels, final norm's output",
            act.head_saved - act.final_norm_input,
            "{:,} tokens (the final norm's fp32 input is freed)",
            (tokens,),
        )
        fused = model.fused_loss
        if fused:
            tile = "TRL fused LM head: a [{:,}, {:,}] logits tile"
            loss_kept = (
                "activations",
                "loss: kept for backward",
                act.logits_saved,
                "TRL fused LM head: {:,} tokens × (hidden {:,} × {} B + log-z, entropy, target)",
                (tokens, h, model.logit_bytes),
            )
            loss_fwd = (
                "activations",
                "loss: logits tile",
                act.logits_forward_extra,
                tile,
                (min(tokens, TRL_TOKEN_CHUNK), TRL_VOCAB_CHUNK),
            )
            loss_bwd = (
                "activations",
                "loss backward: tile and fp32 gradients",
                act.logits_backward_extra,
                tile + " + fp32 hidden (and lm_head) gradients",
                (min(tokens, TRL_TOKEN_CHUNK), TRL_VOCAB_CHUNK),
            )
        else:
            logits = "{:,} tokens × {:,} vocab × {} B per logit"
            loss_kept = ("activations", "loss: fp32 log-softmax", act.logits_saved, logits, (tokens, model.vocab, 4))
            loss_fwd = (
                "activations",
                "logits and their fp32 copy",
                act.logits_forward_extra,
                "{:,} tokens × {:,} vocab in {} B + fp32",
                (tokens, model.vocab, model.logit_bytes),
            )
            loss_bwd = (
                "activations",
                "loss backward: fp32 gradients",
                act.logits_backward_extra,
                logits,
                (tokens, model.vocab, 8),
            )
        recompute = int(CHECKPOINT_RECOMPUTE_ALIVE * act.layer_saved) if ckpt else 0
        recomputed = (
            "activations",
            "top layer recomputed",
            recompute,
            "checkpointing: one layer's saved tensors again",
            (),
        )
        work = (
            "activations",
            "one layer's backward working set",
            act.layer_work,
            "gradients in flight through an MLP or attention",
            (),
        )
        if ckpt and act.recompute_forward > recompute + act.layer_work:
            # the recomputed forward holds more than the layer's saved tensors and backward working set
            recomputed = (
                "activations",
                "top layer's recomputed forward",
                act.recompute_forward,
                "checkpointing: the most a layer's forward holds (traced) + the gradient from above",
                (),
            )
            work = None
        if point == "forward_end":
            return [stack, head, loss_kept, loss_fwd]
        if point == "forward_layer":
            forward = (
                "activations",
                "one layer's forward working set",
                act.forward_work,
                "transient tensors of a layer's forward",
                (),
            )
            if ckpt:
                return [stack, head, forward]
            if not act.layer_forward_peak:
                return []
            below = (
                "activations",
                "layers below's saved tensors",
                (layers - 1) * act.layer_saved,
                "{} layers × {:,.0f} B saved per token × {:,} tokens",
                (layers - 1, model.layer_saved, tokens),
            )
            top = (
                "activations",
                "top layer's forward",
                act.layer_forward_peak,
                "the most a layer's forward holds at once (traced: saved tensors and temporaries)",
                (),
            )
            return [below, shared, top]
        if point == "backward_start":
            return [stack, head, loss_kept, loss_bwd]
        if point == "backward_top_layer":
            return [x for x in (stack, head_less_norm, recomputed, work) if x]
        if point == "backward_bottom_layer":
            if ckpt:
                bottom = ("activations", "bottom layer's input", act.layer_input, residual, (tokens, h, e))
            else:
                bottom = (
                    "activations",
                    "bottom layer's saved tensors",
                    act.layer_saved,
                    "one layer's saved bytes × {:,} tokens",
                    (tokens,),
                )
            return [x for x in (bottom, recomputed, work, shared) if x]
        if point == "backward_end":
            return [("activations", "gradient down the residual stream", act.layer_input, residual, (tokens, h, e))]
        return []


def coarse_phase(point: str) -> str:
    """The phase of the step a point of ``PHASES`` belongs to: forward, backward or optimizer_step."""
    return point if point == "optimizer_step" else point.split("_")[0]


def _itemised(states: ModelStates, component: str, phase: str | None) -> list[MemoryTerm]:
    """The states' terms of one component as the plan lists them: built once per memoised states
    (the app replans the same states on every keystroke)."""
    key = (component, phase)
    found = states.itemised.get(key)
    if found is None:
        found = states.itemised[key] = [_term(t, phase) for t in states.terms if t[0] == component]
    return found


@functools.lru_cache(maxsize=4096)
def _term(term: Term, phase: str | None) -> MemoryTerm:
    """The plan's entry for a term (memoised: the app replans the same terms on every keystroke)."""
    component, name, nbytes, _, _ = term
    return MemoryTerm(name=name, component=component, bytes=int(nbytes), phase=phase, source=source_text(term))


def usable_memory(device: Device) -> int:
    return int(device.gpu.memory * USABLE_FRACTION)
