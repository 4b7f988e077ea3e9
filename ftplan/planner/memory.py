"""Per-GPU memory of one training step, by component, at the step's peak.

The step's phases assembled from the model states (``model_states``: weights, gradients, optimizer
states per engine) and the activations (``activations``: what a micro-batch keeps and works on,
logits and loss included), with the CUDA context and library workspaces on top.

The peak is the largest of the step's phases (end of forward, peak of backward, optimizer
step), not the sum of each component's maximum; ``components`` report each part's value
at that peak phase.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ftplan.planner.activations import ActivationModel
from ftplan.planner.arch import ModelArch
from ftplan.planner.catalog.gpus import GIB
from ftplan.planner.device import Device
from ftplan.planner.model_states import (
    _step_temp,
    _trainable_bytes,
    _weight_bytes,
    _zero_shards,
    fsdp2_states,
    optimizer_bytes_per_param,
    trainable_params,
)
from ftplan.planner.settings import Settings

# CUDA context + cuBLAS/cuDNN workspaces + NCCL buffers outside the caching allocator.
# ~500 MiB context on Ampere/Hopper with lazy module loading, plus allocator fragmentation
# headroom is *not* included here (it is in USABLE_FRACTION).
CUDA_OVERHEAD = 1 * GIB
NCCL_OVERHEAD = 1 * GIB // 2
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
        self.settings = s
        world = device.world_size
        trainable = trainable_params(arch, s)
        weights = _weight_bytes(arch, s)
        deepspeed = s.uses_deepspeed
        value_bytes = _trainable_bytes(s)
        if deepspeed:
            # DeepSpeed bf16/fp16: 16-bit params and grads, fp32 master + Adam moments (12 B);
            # LoRA's fp32 adapters need no master copy, QLoRA's bf16 ones do.
            sixteen_bit = s.method in ("full", "qlora")
            grad_bytes_pp = 2 if sixteen_bit else 4
            opt_pp = optimizer_bytes_per_param(s.optimizer, 4) + (4 if sixteen_bit else 0)
        else:
            grad_bytes_pp = value_bytes
            opt_pp = optimizer_bytes_per_param(s.optimizer, value_bytes)
        w_div, g_div, o_div = _zero_shards(s, world)
        if s.method == "full":
            weights_gpu = weights // w_div
        else:
            # Adapters are added on top of the (frozen) base weights.
            weights_gpu = (weights + trainable * value_bytes) // w_div
        if s.zero_stage == 3:
            # The largest module is gathered whole (in 16 bits) while it runs; prefetch keeps ~2.
            weights_gpu += 2 * arch.largest_layer_params * 2
        gradients = int(trainable * grad_bytes_pp) // g_div
        optimizer = int(trainable * opt_pp) // o_div

        cpu_memory = 0
        if s.offload in ("optimizer", "optimizer+params") and deepspeed:
            cpu_memory += optimizer * device.gpus_per_node + int(trainable * 4 // o_div) * device.gpus_per_node
            optimizer = 0
        if s.offload == "optimizer+params" and s.zero_stage == 3 and deepspeed:
            cpu_memory += weights_gpu * device.gpus_per_node
            weights_gpu = 4 * arch.largest_layer_params * 2
        self.reduce_buffer = 0
        if s.uses_fsdp:
            fsdp = fsdp2_states(arch, s, device, trainable, weights)
            weights_gpu, gradients, optimizer = fsdp.weights, fsdp.gradients, fsdp.optimizer
            cpu_memory, self.reduce_buffer = fsdp.cpu_memory, fsdp.reduce_buffer

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
        self.weights, self.gradients, self.optimizer, self.cpu_memory = weights_gpu, gradients, optimizer, cpu_memory
        self.g_top = int((head_params + first_matrix) * frac)
        self.g_bottom = int((head_params + (arch.layers - 1) * layer_params + first_matrix) * frac)
        self.step_temp = _step_temp(arch, s, device, gradients, value_bytes)
        self.overhead = 0 if device.is_cpu else CUDA_OVERHEAD + (NCCL_OVERHEAD if world > 1 else 0)
        self.activations = ActivationModel(arch, s, cpu=device.is_cpu, loss=loss)

    def _phases(self, batch: int, seq_len: int, accumulation: int) -> tuple[tuple[int, int, int], ...]:
        """(gradients, activations, step temporaries) alive at each of ``PHASES``."""
        act = self.activations.at(batch, seq_len)
        gradients = self.gradients
        held = gradients if accumulation > 1 else 0  # grads kept across micro-batches
        stored = act.stored
        ckpt = act.checkpointing
        recompute = int(CHECKPOINT_RECOMPUTE_ALIVE * act.layer_saved) if ckpt else 0
        # Forward: the end (logits, their fp32 copy, log-softmax) or, with checkpointing, one
        # layer's transient forward on top of the stored layer inputs.
        if ckpt:
            top_acts = stored - act.logits_saved - act.final_norm_input + recompute + act.layer_work
            bottom_acts = act.layer_input + recompute + act.layer_work + act.shared_saved
        else:
            top_acts = stored - act.logits_saved - act.final_norm_input + act.layer_work
            bottom_acts = act.layer_saved + act.layer_work + act.shared_saved
        return (
            (held, stored + act.logits_forward_extra, 0),
            (held, stored - act.logits_saved + act.forward_work if ckpt else 0, 0),
            (held, stored + act.logits_backward_extra, 0),
            (max(held, self.g_top) + self.reduce_buffer, top_acts, 0),
            (max(held, self.g_bottom) + self.reduce_buffer, bottom_acts, 0),
            (gradients, act.layer_input, 0),  # the gradient flowing down the residual stream
            (gradients, 0, self.step_temp),
        )

    def peak(self, batch: int, seq_len: int, accumulation: int) -> int:
        """Total bytes at the step's peak for this batch shape (``estimate().total``)."""
        base = self.weights + self.optimizer + self.overhead
        return base + max([g + a + t for g, a, t in self._phases(batch, seq_len, accumulation)])

    def estimate(self, batch: int | None = None, seq_len: int | None = None, accumulation: int | None = None):
        """The estimate by component at the peak phase (the settings' own shape by default)."""
        s = self.settings
        shape = (
            s.micro_batch_size if batch is None else batch,
            s.max_seq_len if seq_len is None else seq_len,
            s.gradient_accumulation_steps if accumulation is None else accumulation,
        )
        detail = dict(zip(PHASES, self._phases(*shape), strict=True))
        base = self.weights + self.optimizer
        totals = {k: base + g + a + t for k, (g, a, t) in detail.items()}
        phases = {
            "forward": max(totals["forward_end"], totals["forward_layer"]),
            "backward": max(v for k, v in totals.items() if k.startswith("backward")),
            "optimizer_step": totals["optimizer_step"],
        }
        peak_key = max(totals, key=totals.get)
        g, a, t = detail[peak_key]
        return Memory(
            weights=int(self.weights),
            gradients=int(g),
            optimizer=int(self.optimizer + t),
            activations=int(a),
            overhead=self.overhead,
            cpu_memory=int(self.cpu_memory),
            phases={k: int(v) for k, v in phases.items()},
            peak_phase=peak_key.split("_")[0] if peak_key != "optimizer_step" else peak_key,
        )


def usable_memory(device: Device) -> int:
    return int(device.gpu.memory * USABLE_FRACTION)
