"""Model states per GPU: weights, gradients and optimizer states as each engine keeps them.

Built from what the exported ``train.py`` really holds (transformers Trainer / TRL, peft,
bitsandbytes, DeepSpeed, FSDP2), not from a bytes-per-parameter rule of thumb: ZeRO paper
(arXiv 1910.02054) for the DeepSpeed split; pure-bf16 training keeps bf16 optimizer states
(torch AdamW's states take the parameter's dtype); FSDP2 as accelerate sets it up.
"""

from __future__ import annotations

from ftplan.planner.arch import ModelArch
from ftplan.planner.device import Device
from ftplan.planner.settings import Settings

COMPONENTS = ("weights", "gradients", "optimizer", "activations", "overhead", "cpu_memory")
"""The plan's memory components (``methods.<m>.memory`` and ``cpu_memory``) a term belongs to."""

Term = tuple[str, str, int, str, tuple]
"""One memory term: (component, name, bytes per GPU, source template, its arguments). The source is
written only when a plan asks for it (``source_text``): the settings search builds states by the dozen."""


def source_text(term: Term) -> str:
    """What a term is computed from, e.g. "8,030,261,248 params × 2 B (bf16)"."""
    return term[3].format(*term[4])


class ModelStates:
    """Weights, gradients and optimizer states per GPU (and host RAM per node) as named terms; each
    component's figure is the sum of its terms, so the plan can show where every byte comes from."""

    __slots__ = ("cpu_memory", "gradients", "itemised", "optimizer", "reduce_buffer", "terms", "trainable", "weights")

    def __init__(self, trainable: int):
        self.trainable = trainable
        self.terms: list[Term] = []
        self.itemised: dict = {}
        """The plan's entries for these terms, by (component, phase) (``memory._itemised``)."""
        self.reduce_buffer = 0
        """Unsharded gradients of the units FSDP2 is reduce-scattering (backward only; not a state)."""

    def add(self, component: str, name: str, nbytes: int, source: str, *args: object) -> None:
        if nbytes:
            self.terms.append((component, name, nbytes, source, args))

    def shard(self, component: str, unsharded: int, divisor: int, engine: str) -> int:
        """``unsharded // divisor``, written as a term that takes the other GPUs' part away."""
        if divisor == 1:
            return unsharded
        sharded = unsharded // divisor
        self.add(component, f"{engine} sharding", sharded - unsharded, "{}: ÷ {} GPUs", engine, divisor)
        return sharded

    def close(self) -> ModelStates:
        """Each component's figure: the sum of its terms."""
        totals = dict.fromkeys(COMPONENTS, 0)
        for component, _, nbytes, _, _ in self.terms:
            totals[component] += nbytes
        self.weights, self.gradients = totals["weights"], totals["gradients"]
        self.optimizer, self.cpu_memory = totals["optimizer"], totals["cpu_memory"]
        return self


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
        return arch.trained_params + s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
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


def _weight_terms(states: ModelStates, arch: ModelArch, s: Settings) -> int:
    """The model's weights as train.py loads them (before sharding), as terms; returns their bytes."""
    vocab_extra = s.new_tokens * arch.hidden_size * (1 if arch.tied_embeddings else 2)
    if s.method == "qlora":
        quantized = arch.quantizable_params
        rest = arch.params - quantized + vocab_extra
        # prepare_model_for_kbit_training upcasts every non-4-bit parameter to fp32; under FSDP2
        # train.py skips it (FSDP2 shards one floating dtype: the bf16 quant storage), so they stay bf16.
        rest_bytes = 2 if s.uses_fsdp else 4
        four_bit = int(quantized * NF4_BITS_DOUBLE_QUANT / 8)
        how = "bf16 under FSDP2" if s.uses_fsdp else "fp32: prepare_model_for_kbit_training"
        states.add(
            "weights",
            "4-bit base weights",
            four_bit,
            "{:,} params × {:.3f} bits (NF4, double quant)",
            quantized,
            NF4_BITS_DOUBLE_QUANT,
        )
        states.add(
            "weights",
            "non-quantized weights",
            rest * rest_bytes,
            "{:,} params (embeddings, norms, lm_head) × {} B ({})",
            rest,
            rest_bytes,
            how,
        )
        return four_bit + rest * rest_bytes
    per = dtype_bytes(s.precision)
    name = "base weights (frozen)" if s.is_peft else "weights"
    states.add("weights", name, arch.params * per, "{:,} params × {} B ({})", arch.params, per, s.precision)
    matrices = 1 if arch.tied_embeddings else 2
    new_rows = "{:,} new tokens × {} matrices × {:,} hidden × {} B"
    states.add("weights", "new token rows", vocab_extra * per, new_rows, s.new_tokens, matrices, arch.hidden_size, per)
    return (arch.params + vocab_extra) * per


def trainable_value_bytes(s: Settings) -> int:
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


def fsdp2_states(arch: ModelArch, s: Settings, device: Device, states: ModelStates, weights: int) -> None:
    """Model states per GPU under FSDP2 at ``s.zero_stage`` 2 or 3 (``weights`` as loaded, unsharded)."""
    n = max(device.world_size, 1)
    trainable = states.trainable
    stored, gathered = fsdp_param_bytes(s)
    frozen_gather = fsdp_frozen_gather_bytes(s)
    if s.method == "full":
        loaded = (weights // dtype_bytes(s.precision)) * stored  # *-mixed: the fp32 copy accelerate keeps
        states.add(
            "weights",
            "fp32 copy (accelerate, *-mixed)",
            loaded - weights,
            "{:,} B as loaded → {} B per param",
            weights,
            stored,
        )
        unit = arch.largest_layer_params * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * gathered
        everything = (arch.params + s.new_tokens * arch.hidden_size) * gathered
        unit_grads = arch.layer_params
    else:
        states.add("weights", "LoRA adapters", trainable * stored, "{:,} trainable params × {} B", trainable, stored)
        loaded = weights + trainable * stored
        per_layer = trainable // max(arch.layers, 1)
        unit = int(arch.layer_params * frozen_gather) + per_layer * gathered
        tail = (arch.lm_head_params or arch.embedding_params) * (FP32 if s.precision == "fp32" else 2)
        everything = int(weights) + trainable * gathered
        unit_grads = per_layer
    sharded = states.shard("weights", loaded, n, "FSDP2")
    units = min(FSDP_GATHERED_UNITS, arch.layers)  # a model of fewer layers cannot have more gathered
    gathered_bytes = min(units * unit + tail, everything)
    gathered_source = "FSDP2: {} decoder units × {:,} B (computing, prefetched, copied out) + lm_head tail {:,} B"
    gathered_args: tuple = (units, unit, tail)
    if (
        s.zero_stage < 3
    ):  # reshard_after_forward=False (stage 2; FSDP2 has no 1): the model stays gathered until backward
        gathered_bytes = everything + unit
        gathered_source, gathered_args = (
            "FSDP2 zero_stage 2: the whole model {:,} B + one unit {:,} B",
            (everything, unit),
        )
    states.add("weights", "gathered units", gathered_bytes, gathered_source, *gathered_args)
    reduce_bytes = gathered if s.method == "full" else stored
    states.add("gradients", "gradients", trainable * stored, "{:,} trainable params × {} B", trainable, stored)
    gradients = states.shard("gradients", trainable * stored, n, "FSDP2")
    opt_bytes = optimizer_bytes_per_param(s.optimizer, stored)
    unsharded_optimizer = int(trainable * opt_bytes)
    states.add(
        "optimizer",
        "optimizer states",
        unsharded_optimizer,
        "{}: {:g} B × {:,} trainable params",
        s.optimizer,
        opt_bytes,
        trainable,
    )
    optimizer = states.shard("optimizer", unsharded_optimizer, n, "FSDP2")
    states.reduce_buffer = FSDP_REDUCE_UNITS * unit_grads * reduce_bytes
    loading = weights  # cpu_ram_efficient_loading: rank 0 reads the checkpoint, the others wait on meta
    gpn = device.gpus_per_node
    if s.offload == "none":
        states.add("cpu_memory", "rank 0's loading copy", loading, "cpu_ram_efficient_loading: the weights as loaded")
        return
    # CPUOffloadPolicy: shards, their gradients and the optimizer step live on the host
    offloaded = "CPUOffloadPolicy: on the host"
    states.add("weights", "shards offloaded", -sharded, offloaded)
    states.add("gradients", "shards offloaded", -gradients, offloaded)
    states.add("optimizer", "shards offloaded", -optimizer, offloaded)
    if (sharded + gradients + optimizer) * gpn < loading:
        states.add(
            "cpu_memory", "rank 0's loading copy", loading, "cpu_ram_efficient_loading: more than the offloaded shards"
        )
        return
    per_node = "{:,} B per GPU × {} GPUs per node"
    states.add("cpu_memory", "offloaded parameter shards", sharded * gpn, per_node, sharded, gpn)
    states.add("cpu_memory", "offloaded gradient shards", gradients * gpn, per_node, gradients, gpn)
    states.add("cpu_memory", "offloaded optimizer shards", optimizer * gpn, per_node, optimizer, gpn)


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


def step_temporaries(
    arch: ModelArch, s: Settings, device: Device, trainable_bytes: int, value_bytes: int
) -> tuple[int, str]:
    """Temporaries of optimizer.step() beyond the states themselves, and what they are."""
    if s.uses_deepspeed:
        # DeepSpeed's fused Adam on fp32 partitions, plus the fp32 -> 16-bit copy-back buffer.
        return 0, ""
    if s.uses_fsdp and s.offload != "none":
        return 0, ""  # the step runs on the host
    shards = device.world_size if s.uses_fsdp else 1
    if s.optimizer == "adamw_torch_fused" or s.optimizer not in ("adamw_torch",):
        return 0, ""
    if device.is_cpu:
        largest, layer = _largest_trainable_tensors(arch, s)
        source = f"single-tensor AdamW on the CPU: {CPU_ADAMW_TEMP_TENSORS} × {largest:,} + {layer:,} elements"
        return (CPU_ADAMW_TEMP_TENSORS * largest + layer) * value_bytes // shards, source
    # already the sharded gradients' size under FSDP2
    return FOREACH_ADAMW_TEMP * trainable_bytes, "foreach AdamW: one list the size of the gradients"


def _zero_states(arch: ModelArch, s: Settings, device: Device, states: ModelStates, weights: int) -> None:
    """Model states per GPU under DDP (zero_stage 0) or DeepSpeed ZeRO 1-3, with its offload."""
    trainable = states.trainable
    deepspeed = s.uses_deepspeed
    value_bytes = trainable_value_bytes(s)
    master_bytes = 0
    if deepspeed:
        # DeepSpeed bf16/fp16: 16-bit params and grads, fp32 master + Adam moments (12 B);
        # LoRA's fp32 adapters need no master copy, QLoRA's bf16 ones do.
        sixteen_bit = s.method in ("full", "qlora")
        grad_bytes_pp = 2 if sixteen_bit else 4
        master_bytes = 4 if sixteen_bit else 0
        opt_pp = optimizer_bytes_per_param(s.optimizer, 4) + master_bytes
    else:
        grad_bytes_pp = value_bytes
        opt_pp = optimizer_bytes_per_param(s.optimizer, value_bytes)
    w_div, g_div, o_div = _zero_shards(s, device.world_size)
    engine = f"ZeRO-{s.zero_stage}"
    unsharded = weights
    if s.method != "full":  # adapters are added on top of the (frozen) base weights
        adapters = trainable * value_bytes
        how = "bf16: TRL" if s.method == "qlora" else "fp32: peft"
        states.add(
            "weights", "LoRA adapters", adapters, "{:,} trainable params × {} B ({})", trainable, value_bytes, how
        )
        unsharded += adapters
    weights_gpu = states.shard("weights", unsharded, w_div, engine)
    if s.zero_stage == 3:
        # The largest module is gathered whole (in 16 bits) while it runs; prefetch keeps ~2.
        gathered = 2 * arch.largest_layer_params * 2
        gather_source = "ZeRO-3: 2 modules (running, prefetched) × {:,} params × 2 B"
        states.add("weights", "gathered modules", gathered, gather_source, arch.largest_layer_params)
        weights_gpu += gathered
    all_gradients = int(trainable * grad_bytes_pp)
    states.add("gradients", "gradients", all_gradients, "{:,} trainable params × {} B", trainable, grad_bytes_pp)
    states.shard("gradients", all_gradients, g_div, engine)
    all_optimizer = int(trainable * opt_pp)
    master = trainable * master_bytes
    states_source = "{}: {:g} B × {:,} trainable params"
    states.add(
        "optimizer",
        "optimizer states",
        all_optimizer - master,
        states_source,
        s.optimizer,
        opt_pp - master_bytes,
        trainable,
    )
    states.add("optimizer", "fp32 master weights", master, "DeepSpeed: {:,} trainable params × 4 B", trainable)
    optimizer = states.shard("optimizer", all_optimizer, o_div, engine)
    gpn = device.gpus_per_node
    if s.offload in ("optimizer", "optimizer+params") and deepspeed:
        per_node = "{:,} B per GPU × {} GPUs per node"
        states.add("cpu_memory", "offloaded optimizer states", optimizer * gpn, per_node, optimizer, gpn)
        host_gradients = int(trainable * 4 // o_div)
        states.add("cpu_memory", "fp32 gradients for the CPU step", host_gradients * gpn, per_node, host_gradients, gpn)
        states.add(
            "optimizer", "offloaded to the host", -optimizer, "DeepSpeed offload_optimizer: the step runs on the CPU"
        )
    if s.offload == "optimizer+params" and s.zero_stage == 3 and deepspeed:
        states.add(
            "cpu_memory",
            "offloaded parameters",
            weights_gpu * gpn,
            "{:,} B per GPU × {} GPUs per node",
            weights_gpu,
            gpn,
        )
        states.add(
            "weights", "offloaded to the host", -weights_gpu, "DeepSpeed offload_param: parameters live on the CPU"
        )
        fetched_source = "offload_param: 4 modules × {:,} params × 2 B fetched while computing"
        states.add(
            "weights", "fetched modules", 4 * arch.largest_layer_params * 2, fetched_source, arch.largest_layer_params
        )


def model_states(arch: ModelArch, s: Settings, device: Device) -> ModelStates:
    """Weights, gradients, optimizer states per GPU and host RAM per node, as named terms.

    Memoised in ``arch.memo`` by every setting they read (the settings search and the app's replans
    ask for the same states with many batch shapes; tests/planner/test_memory_terms.py holds the key
    to the uncached states, field by field)."""
    targets = s.lora_target_modules if isinstance(s.lora_target_modules, str) else tuple(s.lora_target_modules)
    key = (
        "states",
        s.method,
        s.precision,
        s.optimizer,
        s.zero_stage,
        s.offload,
        s.sharding,
        s.new_tokens,
        s.train_new_token_rows,
        s.lora_r,
        targets,
        device.gpus_per_node,
        device.nodes,
    )
    memo = arch.memo
    found = memo.get(key)
    if found is None:
        found = memo[key] = model_states_uncached(arch, s, device)
    return found


def model_states_uncached(arch: ModelArch, s: Settings, device: Device) -> ModelStates:
    """``model_states`` worked out afresh."""
    states = ModelStates(trainable_params(arch, s))
    weights = _weight_terms(states, arch, s)
    if s.uses_fsdp:
        fsdp2_states(arch, s, device, states, weights)
    else:
        _zero_states(arch, s, device, states, weights)
    return states.close()
