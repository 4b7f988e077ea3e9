"""The recipe's data and attention, checked on the real stages of an exported train.py in this
process: which tokens carry the loss, and whether packed documents stay apart."""

from __future__ import annotations

import json

import pytest
from export_support import load_train_module, set_config, write_letters_dataset

from ftplan.export import export_project


@pytest.fixture(scope="module")
def letters(tmp_path_factory):
    return write_letters_dataset(tmp_path_factory.mktemp("letters") / "letters.jsonl", n=24)


def exported(tiny_plan, tmp_path, data, **data_keys):
    plan, text = tiny_plan(method="lora", micro_batch_size=4, gradient_accumulation_steps=1)
    project = tmp_path / "project"
    export_project(plan, text, project)
    set_config(project, "data", path=str(data), **data_keys)
    train = load_train_module(project)
    cfg = train.load_config(project / "train_config.toml")
    return train, cfg


def first_batch(train, cfg):
    tok = train.build_tokenizer(cfg)
    model = train.build_model(cfg, tok)
    train_ds, eval_ds = train.build_datasets(cfg, tok)
    trainer = train.build_trainer(cfg, model, tok, train_ds, eval_ds, max_steps=1)
    return tok, next(iter(trainer.get_train_dataloader()))


def trained_text(tok, batch) -> list[str]:
    """Per row of the batch, the tokens whose labels are not -100, decoded."""
    rows = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        rows.append(tok.decode([i for i, label in zip(ids, labels, strict=True) if label != -100]))
    return rows


@pytest.mark.parametrize("packing", [False, True])
def test_labels_keep_the_answers_and_mask_the_prompt(tiny_plan, tmp_path, letters, packing):
    train, cfg = exported(tiny_plan, tmp_path, letters, packing=packing)
    assert cfg["data"]["train_on"] == "answers"  # the resolved default for chats
    tok, batch = first_batch(train, cfg)
    kept = "".join(trained_text(tok, batch))
    # Only "ok" and the end-of-turn token train; the user turn and the role markers do not.
    assert kept and kept.replace("ok<|end|>", "") == "", kept
    masked = int((batch["labels"] == -100).sum())
    assert masked > int((batch["labels"] != -100).sum())  # the prompts are the bulk of the tokens
    rows = [json.loads(line) for line in letters.read_text().splitlines()]
    assert not any(r["messages"][0]["content"].split()[0] in kept for r in rows)


def test_train_on_all_trains_the_prompts_too(tiny_plan, tmp_path, letters):
    train, cfg = exported(tiny_plan, tmp_path, letters, packing=False, train_on="all")
    tok, batch = first_batch(train, cfg)
    kept = trained_text(tok, batch)
    assert all("<|user|>" in row and "ok<|end|>" in row for row in kept)


def test_multi_turn_chats_train_every_assistant_turn(tiny_plan, tmp_path):
    data = tmp_path / "chats.jsonl"
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "abc"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "def"},
        {"role": "assistant", "content": "second"},
    ]
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for _ in range(8)))
    train, cfg = exported(tiny_plan, tmp_path, data, packing=False)
    tok = train.build_tokenizer(cfg)
    row = train.tokenize_chat(tok, chat, "answers")
    kept = tok.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m])
    assert kept == "first<|end|>second<|end|>"


def test_packed_documents_do_not_attend_to_each_other(tiny_plan, tmp_path, letters):
    """Doc B packed after doc A, in a batch from the recipe's own collator, gets the logits it gets
    alone: for each attention kernel the recipe can run on this machine."""
    import torch

    train, cfg = exported(tiny_plan, tmp_path, letters, packing=True)
    tok = train.build_tokenizer(cfg)
    for kernel in ("sdpa", "eager"):
        cfg["model"]["attention"] = kernel
        model = train.build_model(cfg, tok)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        assert base.config._attn_implementation == kernel  # the kernel under test is the one that runs
        train_ds, eval_ds = train.build_datasets(cfg, tok)
        trainer = train.build_trainer(cfg, model, tok, train_ds, eval_ds, max_steps=1)
        batch = next(iter(trainer.get_train_dataloader()))
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert len(starts) >= 2, "the batch should hold several packed documents"
        a_end, b_end = starts[1], starts[2] if len(starts) > 2 else batch["input_ids"].shape[1]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        model.train()  # as in training (dropout is 0 in this model)
        with torch.no_grad():
            packed = model(**inputs).logits[0, a_end:b_end]
            alone = model(input_ids=batch["input_ids"][:, a_end:b_end]).logits[0]
        assert torch.allclose(packed, alone, atol=1e-4), (kernel, (packed - alone).abs().max())
        # The check can fail: with a KV cache transformers does not look for packed sequences, and
        # doc B then attends to doc A (why the recipe trains with use_cache=False).
        with torch.no_grad():
            cached = model(**inputs, use_cache=True).logits[0, a_end:b_end]
        assert not torch.allclose(cached, alone, atol=1e-2), kernel


def test_train_py_detects_the_format_the_planner_detects():
    """The exported train.py runs without ftplan, so it keeps its own copy of the format rule:
    both copies must read the same columns the same way, and refuse the same ones."""
    from pathlib import Path

    import ftplan.export
    from ftplan.context import DataProblem, detect_format

    train = load_train_module(Path(ftplan.export.__file__).parent / "templates", "train_template")
    rows = [
        {"text": "a b"},
        {"instruction": "i", "input": "", "output": "o"},
        {"messages": []},
        {"conversations": []},
        {"prompt": "p", "completion": "c"},
        {"text": "t", "prompt": "p", "completion": "c"},
    ]
    for row in rows:
        assert train.detect_format(list(row)) == detect_format(row), row
    with pytest.raises(DataProblem):
        detect_format({"body": "b"})
    with pytest.raises(ValueError):
        train.detect_format(["body"])
