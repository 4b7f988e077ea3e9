"""Bad config.json values, named by field: checked before any arithmetic or model building.

A zero head count used to end in ZeroDivisionError, a negative size was planned; now each
problem names the config.json field (``text_config.num_attention_heads``) and exits 2.
"""

from __future__ import annotations

_REQUIRED = (
    ("hidden_size", "n_embd", "d_model"),
    ("num_hidden_layers", "n_layer", "num_layers"),
    ("num_attention_heads", "n_head"),
    ("vocab_size",),
)
_POSITIVE_IF_PRESENT = (
    "intermediate_size",
    "num_key_value_heads",
    "head_dim",
    "moe_intermediate_size",
    "num_experts",
    "num_local_experts",
    "n_routed_experts",
    "num_experts_per_tok",
    "max_position_embeddings",
)


class BadConfig(ValueError):
    """config.json values the model cannot be built from (the message names each field)."""


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def config_problems(config: dict) -> list[str]:
    """Every problem of a config.json dictionary, ``field: what is wrong``; empty when usable."""
    if not isinstance(config.get("model_type"), str) or not config.get("model_type"):
        return ["model_type: missing (config.json must say which architecture it is)"]
    text = config.get("text_config")
    if isinstance(text, dict) and not any(k in config for k in _REQUIRED[0]):
        return [f"text_config.{p}" for p in config_problems({"model_type": config["model_type"], **text})]
    problems = []
    for names in _REQUIRED:
        present = [n for n in names if n in config and config[n] is not None]
        if not present:
            problems.append(f"{names[0]}: missing")
        elif not _is_positive_int(config[present[0]]):
            problems.append(f"{present[0]}: {config[present[0]]!r} is not a positive whole number")
    for name in _POSITIVE_IF_PRESENT:
        if config.get(name) is not None and not _is_positive_int(config[name]):
            problems.append(f"{name}: {config[name]!r} is not a positive whole number")
    heads, kv = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if _is_positive_int(heads) and _is_positive_int(kv) and heads % kv:
        problems.append(f"num_key_value_heads: {kv} does not divide num_attention_heads = {heads}")
    experts = next((config[k] for k in ("num_experts", "num_local_experts", "n_routed_experts") if config.get(k)), None)
    top_k = config.get("num_experts_per_tok")
    if _is_positive_int(experts) and _is_positive_int(top_k) and top_k > experts:
        problems.append(f"num_experts_per_tok: {top_k} is more than the {experts} experts")
    return problems


def check_config(config: dict, where: str) -> None:
    problems = config_problems(config)
    if problems:
        raise BadConfig(f"{where}: " + "; ".join(problems))
