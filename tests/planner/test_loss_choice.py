"""training.loss: the plan charges the logits the chosen loss builds, and the JSON records it."""

from __future__ import annotations

import json

from ftplan.planner import make_plan, read_answers_text
from ftplan.planner.activations import TRL_MODELED

BASE = """
[model]
name = "meta-llama/Llama-3.2-3B"
[data]
examples = 10000
avg_tokens = 1024
max_seq_len = 2048
[hardware]
gpu = "A100-80GB"
[training]
method = "lora"
micro_batch_size = 4
gradient_checkpointing = true
"""


def plan(extra: str = ""):
    return make_plan(read_answers_text(BASE + extra, "answers.toml"))


def test_full_logits_add_the_vocabulary_logits():
    chunked, full = plan().methods["lora"], plan('loss = "full_logits"\n').methods["lora"]
    assert full.settings.loss == "full_logits" and chunked.settings.loss == "chunked"
    tokens, vocab = 4 * 2048, 128_256
    extra = full.memory.total - chunked.memory.total
    # The model's own loss keeps fp32 log-softmax (4 B per logit) and, at the start of backward, two more
    # fp32 buffers: the peak moves by 8-12 B per logit, less what the fused head's tile kept.
    assert 6 * tokens * vocab <= extra <= 12 * tokens * vocab, extra
    assert full.max_seq_len_that_fits < chunked.max_seq_len_that_fits


def test_the_json_names_a_chosen_loss_and_omits_the_default():
    default = json.loads(plan().to_json())
    assert "loss" not in default["methods"]["lora"]["settings"]  # plans made before the option read the same
    assert default["answers"]["training"]["loss"] is None
    chosen = json.loads(plan('loss = "full_logits"\n').to_json())
    assert chosen["methods"]["lora"]["settings"]["loss"] == "full_logits"
    assert chosen["answers"]["training"]["loss"] == "full_logits"


def test_trl_range_is_pinned_in_requirements():
    from ftplan.export import render_project

    files = render_project(plan(), BASE)
    line = next(line for line in files["requirements.txt"].splitlines() if line.startswith("trl"))
    assert line.split()[0] == f"trl{TRL_MODELED}"
    config = files["train_config.toml"]
    assert 'loss = "chunked"' in config
    assert 'loss = "full_logits"' in render_project(plan('loss = "full_logits"\n'), BASE)["train_config.toml"]
