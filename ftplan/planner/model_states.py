"""Model states per GPU: weights, gradients and optimizer states as each engine keeps them.

Built from what the exported ``train.py`` really holds (transformers Trainer / TRL, peft,
bitsandbytes, DeepSpeed, FSDP2), not from a bytes-per-parameter rule of thumb: ZeRO paper
(arXiv 1910.02054) for the DeepSpeed split; pure-bf16 training keeps bf16 optimizer states
(torch AdamW's states take the parameter's dtype); FSDP2 as accelerate sets it up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplan.planner.arch import ModelArch
from ftplan.planner.device import Device
from ftplan.planner.settings import Settings

# NF4 storage: 4 bits per weight + one fp32 absmax per 64 weights, or with double quant
# an 8-bit absmax per 64 weights and one fp32 constant per 256 blocks (QLoRA paper, sec. 3).
NF4_BITS_DOUBLE_QUANT = 4 + 8 / 64 + 32 / (64 * 256)
NF4_BITS = 4 + 32 / 64


def dtype_bytes(precision: str, *, cpu: bool = False) -> int:
    """Bytes per element of weights as loaded for the given precision."""
    return 2 if precision == "bf16" else 4


# ---- trainable parameters --------------------------------------------------------------


def new_token_params(arch: ModelArch, s: Settings) -> int:
    """Parameters that train because of new tokens."""
    if not s.new_tokens:
        return 0
    matrices = 1 if arch.tied_embeddings else 2
    if s.is_peft and s.train_new_token_rows:
        return matrices * s.new_tokens * arch.hidden_size
    if s.is_peft:  # modules_to_save: whole embedding (and lm_head) copies train
        return matrices * (arch.vocab_size + s.new_tokens) * arch.hidden_size
    return 0


def trainable_params(arch: ModelArch, s: Settings) -> int:
    if s.method == "full":
        return arch.params + s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
    return arch.lora_params(s.lora_r, s.lora_target_modules) + new_token_params(arch, s)


# ---- model states ----------------------------------------------------------------------


def optimizer_bytes_per_param(optimizer: str, param_bytes: int) -> float:
    """Optimizer state bytes per trainable parameter.

    torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype; bitsandbytes' 8-bit
    Adam keeps two uint8 states plus a fp32 absmax per 256-element block (paged variants
    live in unified memory but are counted on the GPU, where they sit while training).
    """
    if optimizer in ("adamw_torch", "adamw_torch_fused"):
        return 2 * param_bytes
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return 2 + 2 * 4 / 256
    if optimizer == "paged_adamw_32bit":
        return 8
    if optimizer == "adafactor":
        return 0.05 * param_bytes  # factored second moment: rows + columns per matrix
    return 0.0  # sgd without momentum keeps no state


def _weight_bytes(arch: ModelArch, s: Settings) -> int:
    """Bytes of the model's weights as train.py loads them (before ZeRO sharding)."""
    vocab_extra = s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
    if s.method == "qlora":
        quantized = arch.quantizable_params
        rest = arch.params - quantized + vocab_extra
        # prepare_model_for_kbit_training upcasts every non-4-bit parameter to fp32; under FSDP2
        # train.py skips it (FSDP2 shards one floating dtype: the bf16 quant storage), so they stay bf16.
        return int(quantized * NF4_BITS_DOUBLE_QUANT / 8) + rest * (2 if s.uses_fsdp else 4)
    per = dtype_bytes(s.precision)
    return (arch.params + vocab_extra) * per


def _trainable_bytes(s: Settings) -> int:
    """Bytes per trainable parameter's value: LoRA adapters are fp32 (peft), QLoRA's bf16 (TRL)."""
    if s.is_peft:
        return adapter_bytes(s)
    return dtype_bytes(s.precision)


def adapter_bytes(s: Settings) -> int:
    """Bytes per element of the LoRA adapters and of the inputs peft casts to their dtype."""
    return QLORA_ADAPTER_BYTES if s.method == "qlora" else ADAPTER_BYTES


FP32 = 4
ADAPTER_BYTES = 4
"""peft keeps LoRA adapters in fp32 (autocast_adapter_dtype) and casts each adapter's input to it."""
QLORA_ADAPTER_BYTES = 2
"""TRL's SFTTrainer (what train.py runs) casts a quantized model's trainable adapters to bf16,
whatever the compute dtype (trl/trainer/sft_trainer.py, "the PEFT adapter weights are converted
to bf16", after the QLoRA paper): bf16 values, gradients and AdamW states."""
CPU_ADAMW_TEMP_TENSORS = 2
"""torch AdamW off CUDA runs the single-tensor path: two temporaries the size of the largest
trainable tensor (sqrt(exp_avg_sq) and its quotient) plus one the size of the largest layer
matrix (measured: optimizer-phase peak - end of backward = 3 x h*f without a big embedding
trainable, 2 x V*h + h*f with one)."""
FOREACH_ADAMW_TEMP = 1
"""On CUDA torch AdamW defaults to foreach: _foreach_sqrt(exp_avg_sq) materialises one
state-sized list for all trainable parameters; fused AdamW has none."""


# ---- sharding ----------------------------------------------------------------------------


def _zero_shards(s: Settings, world: int) -> tuple[int, int, int]:
    """Divisors for (weights, gradients, optimizer states) under the ZeRO stage."""
    n = max(world, 1)
    if s.zero_stage == 0:
        return 1, 1, 1
    if s.zero_stage == 1:
        return 1, 1, n
    if s.zero_stage == 2:
        return 1, n, n
    return n, n, n


# ---- FSDP2 ------------------------------------------------------------------------------
#
# What torch.distributed.fsdp.fully_shard keeps, as accelerate's fsdp2_prepare_model sets it up
# (accelerate/utils/fsdp_utils.py) for the exported train.py: one unit per decoder layer
# (transformer_layer_cls_to_wrap), the embeddings and the [final norm, lm_head] tail as their own
# units, the tail not resharded after forward. Each parameter is a DTensor sharded on dim 0 in
# its original dtype: bf16 when the model is loaded in bf16 and accelerate's mixed precision is
# "no" (precision "bf16": no fp32 master copy, bf16 AdamW states; 8 B/param, unlike DeepSpeed's
# 16), fp32 with a MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16) under *-mixed
# (accelerate upcasts trainable parameters to fp32). zero_stage 3 = reshard_after_forward=True,
# 2 = False (every unit stays gathered from its forward to its backward).

FSDP_GATHERED_UNITS = 3
"""Decoder-layer units unsharded at once: the one computing, the next one prefetched (FSDP2
issues the next all-gather before the current unit runs, in forward and in backward), and the
all-gather output of the prefetched one while it is copied out into the parameters."""
FSDP_REDUCE_UNITS = 2
"""Units whose unsharded gradients exist at once in backward: the one being reduce-scattered and
the one computing its gradients."""


def fsdp_param_bytes(s: Settings) -> tuple[int, int]:
    """(bytes of a trainable parameter as FSDP2 stores its shard, bytes as it is gathered for compute)."""
    if s.is_peft:
        value = adapter_bytes(s)
        return value, value
    if s.precision in ("bf16-mixed", "fp16-mixed"):
        return FP32, 2  # fp32 master shards, gathered in param_dtype
    stored = dtype_bytes(s.precision)
    return stored, stored


def fsdp_frozen_gather_bytes(s: Settings) -> float:
    """Bytes per parameter of a gathered decoder layer's frozen weights (LoRA/QLoRA's base)."""
    if s.method == "qlora":
        return NF4_BITS_DOUBLE_QUANT / 8  # the 4-bit weights travel in their bf16 quant storage
    return FP32 if s.precision == "fp32" else 2  # bf16 as loaded, or cast to param_dtype under *-mixed


@dataclass(frozen=True)
class Fsdp2States:
    weights: int
    """Sharded parameters + the units gathered while they compute (per GPU)."""
    gradients: int
    optimizer: int
    reduce_buffer: int
    """Unsharded gradients of the units being reduce-scattered (backward only)."""
    cpu_memory: int
    """Host RAM per node: the offloaded shards, or rank 0's full copy while loading."""


def fsdp2_states(arch: ModelArch, s: Settings, device: Device, trainable: int, weights: int) -> Fsdp2States:
    """Model states per GPU under FSDP2 at ``s.zero_stage`` 2 or 3 (``weights`` as loaded, unsharded)."""
    n = max(device.world_size, 1)
    stored, gathered = fsdp_param_bytes(s)
    frozen_gather = fsdp_frozen_gather_bytes(s)
    if s.method == "full":
        loaded = (weights // dtype_bytes(s.precision)) * stored  # *-mixed: the fp32 copy accelerate keeps
        unit = arch.largest_layer_params * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * gathered
        everything = (arch.params + s.new_tokens * arch.hidden_size) * gathered
        unit_grads = arch.layer_params
    else:
        loaded = weights + trainable * stored
        per_layer = trainable // max(arch.layers, 1)
        unit = int(arch.layer_params * frozen_gather) + per_layer * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * (FP32 if s.precision == "fp32" else 2)
        everything = int(weights) + trainable * gathered
        unit_grads = per_layer
    sharded = loaded // n
    gathered_bytes = FSDP_GATHERED_UNITS * unit + tail
    if (
        s.zero_stage < 3
    ):  # reshard_after_forward=False (stage 2; FSDP2 has no 1): the model stays gathered until backward
        gathered_bytes = everything + unit
    reduce_bytes = gathered if s.method == "full" else stored
    gradients = trainable * stored // n
    optimizer = int(trainable * optimizer_bytes_per_param(s.optimizer, stored)) // n
    reduce_buffer = FSDP_REDUCE_UNITS * unit_grads * reduce_bytes
    loading = weights  # cpu_ram_efficient_loading: rank 0 reads the checkpoint, the others wait on meta
    if s.offload != "none":  # CPUOffloadPolicy: shards, their gradients and the optimizer step live on the host
        host = (sharded + gradients + optimizer) * device.gpus_per_node
        return Fsdp2States(gathered_bytes, 0, 0, reduce_buffer, max(host, loading))
    return Fsdp2States(sharded + gathered_bytes, gradients, optimizer, reduce_buffer, loading)


def _largest_trainable_tensors(arch: ModelArch, s: Settings) -> tuple[int, int]:
    """(largest trainable tensor, largest trainable decoder-layer matrix), in elements."""
    if s.method == "full":
        layer = arch.largest_matrix
        if arch.experts:
            layer = max(layer, arch.expert_params_per_layer // arch.experts)
        embedding = arch.embedding_params + s.new_tokens * arch.hidden_size
        return max(embedding, layer), layer
    targets = arch.lora_targets(s.lora_target_modules)
    largest = max((s.lora_r * max(lin.d_in, lin.d_out) for lin in targets), default=0)
    return largest, largest


def _step_temp(arch: ModelArch, s: Settings, device: Device, trainable_bytes: int, value_bytes: int) -> int:
    """Temporaries of optimizer.step() beyond the states themselves."""
    if s.uses_deepspeed:
        # DeepSpeed's fused Adam on fp32 partitions, plus the fp32 -> 16-bit copy-back buffer.
        return 0
    if s.uses_fsdp and s.offload != "none":
        return 0  # the step runs on the host
    shards = device.world_size if s.uses_fsdp else 1
    if s.optimizer == "adamw_torch_fused" or s.optimizer not in ("adamw_torch",):
        return 0
    if device.is_cpu:
        largest, layer = _largest_trainable_tensors(arch, s)
        return (CPU_ADAMW_TEMP_TENSORS * largest + layer) * value_bytes // shards
    return FOREACH_ADAMW_TEMP * trainable_bytes  # already the sharded gradients' size under FSDP2
