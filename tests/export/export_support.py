"""Export test support: a tiny random Llama, a byte-level BPE tokenizer, a dataset, and helpers
to run an exported project and read what it wrote.

Nothing here touches the network: the tokenizer is trained on a few sentences with the
`tokenizers` library and the model is built from a config.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.planner.card_support import BASE as CARD_SHAPE

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Fine-tuning adapts a pretrained language model to a new task.",
    "LoRA trains two small matrices beside each frozen weight.",
    "QLoRA keeps the base model in four bits and trains adapters in sixteen.",
    "DeepSpeed ZeRO shards optimizer states, gradients and parameters.",
    "What is the capital of France? The capital of France is Paris.",
    "Please summarise the following paragraph in one sentence.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


TEXT_SHAPE = {**{key: value for key, value in CARD_SHAPE.items() if key != "vocab_size"}, "head_dim": 16}
"""The tiny Llama's shape, and the language model of every ANY_MODELS config: the card tests' shape
(widths divisible by 32 for bitsandbytes' CPU 4-bit kernel), its vocabulary the tokenizer's, and
head_dim spelled out (Gemma 3's default is 256)."""


def build_model(folder: Path) -> Path:
    """Save a random-init LlamaForCausalLM (hidden 64, 2 layers) and its tokenizer in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        **TEXT_SHAPE,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def _gemma3_text(tok, **ids):
    from transformers import Gemma3TextConfig

    # Two layers, one sliding-window and one global, as Gemma-3 alternates them.
    layer_types = ["sliding_attention", "full_attention"]
    return Gemma3TextConfig(**TEXT_SHAPE, sliding_window=16, layer_types=layer_types, **ids)


def _qwen3_moe(tok, **ids):
    from transformers import Qwen3MoeConfig

    experts = dict(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    return Qwen3MoeConfig(**TEXT_SHAPE, **experts, tie_word_embeddings=False, **ids)


def _gemma3_vision(tok, **ids):
    from transformers import Gemma3Config, SiglipVisionConfig

    # A one-layer SigLIP tower (32 wide: bitsandbytes' CPU 4-bit kernel wants widths divisible by 32);
    # the image tokens are the last ids of the tokenizer (text-only training never sees them).
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision = SiglipVisionConfig(**tower, image_size=32, patch_size=8, vision_use_head=False)
    n = len(tok)
    return Gemma3Config(
        text_config=_gemma3_text(tok, **ids),
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=n - 1,
        boi_token_index=n - 2,
        eoi_token_index=n - 3,
        **ids,
    )


ANY_MODELS = {"qwen3_moe": _qwen3_moe, "gemma3_text": _gemma3_text, "gemma3_vision": _gemma3_vision}
"""Tiny configs of current architectures outside the hand-written accounting (planned from derived cards)."""


def build_any_model(folder: Path, kind: str) -> Path:
    """Save a random-init model of ANY_MODELS[kind] (hidden 64, 2 layers) and the tokenizer in `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    config = ANY_MODELS[kind](tok, **ids)
    text = config.get_text_config()
    text.vocab_size = len(tok)
    auto = AutoModelForImageTextToText if kind.endswith("vision") else AutoModelForCausalLM
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(folder)
    return folder


def write_dataset(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        s = SENTENCES[i % len(SENTENCES)]
        rows.append(
            {"messages": [{"role": "user", "content": f"Repeat {i}: {s[:20]}"}, {"role": "assistant", "content": s}]}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answers_text(model_dir: Path, data_path: Path, **training) -> str:
    """An answers TOML for the tiny model on the CPU; `training` adds [training] keys,
    `gpus_per_node`/`nodes` go to [hardware]."""
    hardware = {"gpu": "cpu", "gpus_per_node": training.pop("gpus_per_node", 1), "nodes": training.pop("nodes", 1)}
    objective = {"new_tokens": training.pop("new_tokens")} if "new_tokens" in training else {}
    lines = []
    if objective:
        lines += ["[objective]", *(f"{k} = {json.dumps(v)}" for k, v in objective.items()), ""]
    lines += [
        "[model]",
        f"name = {json.dumps(str(model_dir))}",
        "",
        "[data]",
        f"path = {json.dumps(str(data_path))}",
        'format = "messages"',
        "max_seq_len = 64",
        "epochs = 1",
        "",
        "[hardware]",
        *(f"{k} = {json.dumps(v)}" for k, v in hardware.items()),
    ]
    if training:
        lines += ["", "[training]", *(f"{k} = {json.dumps(v)}" for k, v in training.items())]
    return "\n".join(lines) + "\n"


def train_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the exported project runs without ftplan
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(DISABLE_TQDM="1", PYTHONWARNINGS="ignore")
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    """Run a command of the exported project; on failure show its output's tail."""
    proc = subprocess.run(
        cmd, cwd=cwd, env={**train_env(), **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


def set_config(project: Path, section: str, **values) -> None:
    """Edit train_config.toml as a user would (one `key = value` line each)."""
    path = project / "train_config.toml"
    lines = path.read_text().splitlines()
    current = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key = line.split("=", 1)[0].strip()
        if current == section and key in values:
            lines[i] = f"{key} = {json.dumps(values[key])}"
    path.write_text("\n".join(lines) + "\n")


def run_steps(project: Path, steps: int, timeout: int = 600, **sections: dict) -> subprocess.CompletedProcess:
    """Edit train_config.toml's ``sections`` (``checkpoints={"save_steps": 1}``), then run ``steps``
    steps with the project's launch.sh."""
    for section, values in sections.items():
        set_config(project, section, **values)
    return run(["bash", "launch.sh", "--max-steps", str(steps)], project, timeout=timeout)


KEEP_BEST_AND_LAST = dict(save_steps=1, keep_best=1, keep_last=1)
"""A checkpoint at every step, and of them the best and the newest kept."""

CONSTANT_LR = dict(lr_scheduler="constant", warmup_ratio=0.0)
"""The learning rate held where it is set, from the first step."""


def metrics(project: Path) -> list[dict]:
    path = project / "output" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_letters_dataset(path: Path, n: int = 64, seed: int = 0) -> Path:
    """Chats whose user turn is random letters and whose answer is always "ok": a model trained on
    the answers learns them at once; one trained on every token is left with the letters' entropy."""
    import random
    import string

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        letters = " ".join("".join(rng.choices(string.ascii_lowercase, k=4)) for _ in range(4))
        rows.append({"messages": [{"role": "user", "content": letters}, {"role": "assistant", "content": "ok"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_train_module(project: Path, name: str = "train_under_test"):
    """The project's train.py imported as a module (importing it does no work)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, project / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
