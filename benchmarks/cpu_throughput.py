"""CPU training throughput: exported projects trained by their own Trainer on the CPU, measured
tokens/s next to the planner's. The figures calibrate ``ftplan.planner.timecost.cpu_step_seconds``.

    PYTHONPATH=. python benchmarks/cpu_throughput.py [--steps 6] [--case NAME ...]

Each case builds a random Llama of the given shape (tokenizer: tests/export/export_support.py),
plans it for ``hardware.gpu = "cpu"``, exports it and probes it under its engine
(``ftplan.probe.engine``: ``trainer.train()``, steps 2..N-1 timed; torchrun for several processes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "export"))

# name: (hidden, intermediate, layers, method, zero_stage, processes, micro_batch, seq_len)
CASES = {
    "tiny-full": (64, 128, 2, "full", 0, 1, 2, 64),
    "tiny-lora": (64, 128, 2, "lora", 0, 1, 2, 64),
    "tiny-z3x2": (64, 128, 2, "full", 3, 2, 2, 64),
    "mid-full": (512, 1536, 4, "full", 0, 1, 4, 128),
    "mid-lora": (512, 1536, 4, "lora", 0, 1, 4, 128),
    "mid-z3x2": (512, 1536, 4, "full", 3, 2, 4, 128),
}


def build(folder: Path, hidden: int, intermediate: int, layers: int) -> Path:
    import export_support as tiny
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny.build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def run_case(name: str, root: Path, steps: int) -> dict:
    import export_support as tiny

    from ftplan.context import build_context
    from ftplan.export import export_project
    from ftplan.planner import make_plan, read_answers_text

    hidden, inter, layers, method, zero, procs, mb, seq = CASES[name]
    model = build(root / f"model-{hidden}-{layers}", hidden, inter, layers)
    data = tiny.write_dataset(root / "data.jsonl", n=400)
    training = {"method": method, "micro_batch_size": mb, "gradient_accumulation_steps": 1, "gpus_per_node": procs}
    if zero:
        training["zero_stage"] = zero
    text = tiny.answers_text(model, data, **training).replace("max_seq_len = 64", f"max_seq_len = {seq}")
    answers = read_answers_text(text)
    plan = make_plan(answers, build_context(answers, detect=False))
    project = root / name
    export_project(plan, text, project, force=True, method=method)
    from ftplan.probe.cli import run_engine_probe

    result = run_engine_probe(project, steps)
    t = result["tokens_per_s"]
    return {"case": name, "predicted": t["predicted"], "measured": t["measured"],
            "ratio": t["predicted"] / t["measured"] if t["measured"] else None}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--case", action="append", choices=sorted(CASES))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case or CASES:
            row = run_case(name, Path(tmp), args.steps)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
