"""Merge the trained LoRA/QLoRA adapter into the base model: one standalone model to serve.

    python merge_adapter.py [--adapter output] [--out output-merged] [--dtype bfloat16]

The base model is loaded unquantized (a QLoRA adapter merges into the 16-bit weights, the
usual way to serve QLoRA), grown to the tokenizer's size when tokens were added, the adapter
applied and folded in with ``merge_and_unload``; the model and tokenizer are saved together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent


def resolve(value: str) -> str:
    candidate = HERE / value
    return str(candidate) if value and not os.path.isabs(value) and candidate.exists() else value


def describe_adapter(adapter: Path) -> str:
    """Which training step the adapter is: train.py's result.json says whether output/ holds the
    best checkpoint by eval loss (the Trainer loaded it at the end) or the last step."""
    try:
        result = json.loads((adapter / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"Merging the adapter in {adapter}"
    if result.get("result") == "best":
        return (
            f"Merging the adapter in {adapter}: the best checkpoint by eval loss "
            f"({result['checkpoint']}, eval loss {result['eval_loss']:.4f})"
        )
    return f"Merging the adapter in {adapter}: the last step ({result.get('checkpoint')})"


def main(argv: list[str] | None = None) -> int:
    with (HERE / "train_config.toml").open("rb") as fh:
        cfg = tomllib.load(fh)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", default=cfg["checkpoints"]["output_dir"], help="folder with the adapter")
    p.add_argument("--out", default=cfg["checkpoints"]["output_dir"].rstrip("/") + "-merged")
    p.add_argument("--dtype", default=None, help="bfloat16 | float16 | float32 (default: as trained)")
    args = p.parse_args(argv)

    if cfg["method"]["kind"] == "full":
        print("This project fine-tunes all weights: there is no adapter to merge.", file=sys.stderr)
        return 2
    adapter = resolve(args.adapter)
    if not (Path(adapter) / "adapter_config.json").is_file():
        print(f"No adapter in {adapter}: train first (bash launch.sh).", file=sys.stderr)
        return 2
    print(describe_adapter(Path(adapter)))
    dtype = args.dtype or ("float32" if cfg["training"]["precision"] == "fp32" else "bfloat16")
    token = os.environ.get("HF_TOKEN") or None
    base = resolve(cfg["model"]["name_or_path"])
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=getattr(torch, dtype), trust_remote_code=cfg["model"]["trust_remote_code"], token=token
    )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out = args.out if os.path.isabs(args.out) else str(HERE / args.out)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"Merged {adapter} into {base}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
