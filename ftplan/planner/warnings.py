"""Warnings for one method's settings: known-bad combinations, each with its reason and fix."""

from __future__ import annotations

from ftplan.planner.answers import Answers
from ftplan.planner.arch import ModelArch
from ftplan.planner.device import Device
from ftplan.planner.memory import Memory, usable_memory
from ftplan.planner.settings import Settings
from ftplan.planner.units import gib as _gib


def method_warnings(
    answers: Answers,
    arch: ModelArch,
    s: Settings,
    device: Device,
    mem: Memory,
    fits: bool,
    host_need: int = 0,
    host_ram: int | None = None,
    context_window: int | None = None,
) -> list[str]:
    """``fits``: the GPU memory fits; ``host_need`` / ``host_ram``: host RAM per node needed and
    there (None: unknown); ``context_window``: the model's max_position_embeddings."""
    out: list[str] = []
    t = answers.training
    if not fits:
        out.append(
            f"does not fit: needs {_gib(mem.total)} per GPU, {device.gpu.name} has {_gib(usable_memory(device))} usable"
        )
    if host_ram is not None and host_need > host_ram:
        what = "the training state" if device.is_cpu else "CPU offload"
        out.append(
            f"does not fit in host RAM: {what} needs {_gib(host_need)} per node, the host has {_gib(host_ram)} "
            "(hardware.host_ram_gb)"
        )
    if (
        t.offload not in (None, "none")
        and t.zero_stage is None
        and s.zero_stage
        and s.uses_deepspeed
        and not device.is_cpu
    ):
        out.append(
            f"training.offload = {t.offload!r} needs DeepSpeed ZeRO: planned with ZeRO-{s.zero_stage} "
            "(set training.zero_stage to choose)"
        )
    if context_window and s.max_seq_len > context_window:
        out.append(
            f"max_seq_len {s.max_seq_len:,} is past the model's context window ({context_window:,} positions, "
            "max_position_embeddings): positions beyond it were never trained; lower max_seq_len or extend RoPE"
        )
    out += fsdp2_warnings(s, device)
    out += compile_warnings(s, device)
    if s.method == "qlora" and s.zero_stage == 3 and s.uses_deepspeed:
        out.append(
            "QLoRA under ZeRO-3 needs bnb_4bit_quant_storage=bfloat16 so DeepSpeed can shard the 4-bit weights "
            "(the exported bnb_config.json sets it)"
        )
    if s.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit") and s.zero_stage and s.offload != "none":
        out.append("bitsandbytes optimizers cannot run on DeepSpeed's CPU offload; use adamw_torch with offload")
    if s.precision == "bf16" and not device.gpu.bf16 and not device.is_cpu:
        out.append(f'{device.gpu.name} has no bf16: use precision = "fp16-mixed"')
    if s.attention == "flash_attention_2" and not device.gpu.bf16:
        out.append(f'FlashAttention-2 needs Ampere or newer; {device.gpu.name} is not: use attention = "sdpa"')
    if s.method != "full" and s.new_tokens and not s.train_new_token_rows:
        out.append("new tokens with a frozen embedding cannot learn: their rows must train")
    if arch.experts and s.method == "qlora":
        out.append(unquantized_experts_warning(arch, s))
    if s.method == "full" and s.general_data_ratio > 0:
        out.append(
            f"full fine-tuning on a narrow distribution forgets general skills: mix {s.general_data_ratio:.0%} general "
            "text (train_config.toml [data] general_path)"
        )
    if s.method == "full" and s.precision == "bf16" and "precision" in s.chosen_by_planner and device.gpu.bf16:
        out.append(
            "pure bf16 chosen because bf16-mixed (fp32 master weights) does not fit: bf16 weights lose updates "
            "smaller than 2^-8 of a weight; more GPUs, ZeRO or offload would allow bf16-mixed"
        )
    elif s.method == "full" and s.precision == "bf16" and not s.uses_deepspeed:
        out.append(
            "pure bf16 weights lose updates smaller than 2^-8 of a weight; use bf16-mixed if loss plateaus early"
        )
    if t.lora_alpha is not None and t.lora_r is not None and s.is_peft and t.lora_alpha < t.lora_r:
        out.append(
            f"lora_alpha {t.lora_alpha:g} < lora_r {t.lora_r}: adapter scaling {t.lora_alpha / t.lora_r:.2f} slows learning; 2 x r is usual"
        )
    # No warning for packing with eager or SDPA attention: train.py packs padding-free with restarting
    # position_ids and use_cache=False, from which transformers builds the block-diagonal mask
    # (tests/export/test_recipe_data.py: a packed document's logits equal those of it alone).
    if s.is_peft and s.learning_rate < 5e-5:
        out.append(f"learning_rate {s.learning_rate:g} is low for LoRA (1e-4 to 3e-4 is usual)")
    if s.method == "full" and s.learning_rate > 1e-4:
        out.append(f"learning_rate {s.learning_rate:g} is high for full fine-tuning (1e-5 to 5e-5); expect forgetting")
    return out


def unquantized_experts_warning(arch: ModelArch, s: Settings) -> str:
    """What QLoRA does to a MoE whose experts are fused 3-D tensors, in this model's own figures.

    bitsandbytes quantizes nn.Linear weights only; transformers 5 stores experts as 3-D parameters,
    so they stay 16-bit, and peft's prepare_model_for_kbit_training (which TRL runs on a quantized
    model) upcasts every 16-bit parameter to fp32 — the experts then take twice LoRA's bytes.
    """
    card = arch.card
    if card is not None:
        left = sum(t.total for t in card.tensors if t.kind == "experts" and not t.quantized)
        version = (
            f"transformers {card.versions['transformers']}" if card.versions.get("transformers") else "transformers 5"
        )
    else:
        left, version = arch.layers * arch.expert_params_per_layer, "transformers 5"
    upcast = 2 if s.uses_fsdp else 4
    text = (
        f"{left:,} expert parameters are fused 3-D tensors under {version}, not nn.Linear: bitsandbytes leaves "
        f"them unquantized and prepare_model_for_kbit_training holds them in {'bf16' if upcast == 2 else 'fp32'} "
        f"({_gib(left * upcast)}), so QLoRA "
        + ("needs more memory than LoRA" if upcast == 4 else "saves little over LoRA")
        + " on this model"
    )
    adapted = card is not None and any(u.parameter and u.all_linear for u in card.lora_units)
    if s.lora_target_modules == "all-linear" and not adapted:
        text += "; LoRA's all-linear adapts attention only"
    return text


def fsdp2_warnings(s: Settings, device: Device) -> list[str]:
    """Why the plan runs FSDP2 when the planner chose it, and what FSDP2 cannot do as asked."""
    if not s.uses_fsdp:
        return []
    out = []
    if "sharding" in s.chosen_by_planner and s.compile and s.zero_stage == 3:
        out.append("sharding: FSDP2 chosen because torch.compile fails under DeepSpeed ZeRO-3")
    elif "sharding" in s.chosen_by_planner:
        why = (
            "FSDP2 keeps the parameters in the dtype they are loaded in (bf16: 8 bytes per parameter with AdamW, "
            "no fp32 master copy)"
            if s.precision == "bf16"
            else "FSDP2 gathers only the decoder units in use (the memory table has its terms)"
        )
        out.append(f"sharding: FSDP2 chosen because DeepSpeed ZeRO does not fit here: {why}")
    if s.zero_stage == 1:
        out.append("FSDP2 has no stage 1: zero_stage 1 runs as 2 (gradients and states sharded, weights kept gathered)")
    if s.offload == "optimizer":
        out.append("FSDP2 offloads the parameters with the optimizer (CPUOffloadPolicy): planned as optimizer+params")
    if s.method == "qlora":
        out.append(
            "QLoRA under FSDP2: bnb_4bit_quant_storage=bfloat16 lets FSDP2 shard the 4-bit weights, and train.py skips "
            "prepare_model_for_kbit_training (norms, embeddings and lm_head stay bf16, as peft's FSDP QLoRA recipe runs)"
        )
    return out


def compile_warnings(s: Settings, device: Device) -> list[str]:
    """What training.compile costs where the plan does not show it."""
    if not s.compile:
        return []
    if device.is_cpu:
        return [
            "torch.compile on the CPU: the first steps build C++ kernels (a minute or more each on a small machine)"
        ]
    out = [
        "torch.compile: memory planned as eager (compiled kernels usually keep less: torchtune's Llama-3.2-3B peak "
        "fell 15 %); the first steps compile, again for new batch shapes until torch marks them dynamic"
    ]
    if s.zero_stage:
        out.append(
            "torch.compile with "
            + ("FSDP2" if s.uses_fsdp else "DeepSpeed ZeRO")
            + ": the speed-up is planned from single-GPU runs (the sharding hooks break the graph into pieces)"
        )
    return out
