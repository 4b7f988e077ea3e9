"""Shared fixtures: a tiny local model and dataset, plans made by the real planner, exports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import export_support as tiny  # noqa: E402

from ftplan.context import build_context  # noqa: E402
from ftplan.planner import make_plan, read_answers_text  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return tiny.write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="session")
def tiny_plan(tiny_model, tiny_data):
    """make(**training) -> (plan, answers_text) for the tiny model on the CPU."""

    def make(**training):
        text = tiny.answers_text(tiny_model, tiny_data, **training)
        answers = read_answers_text(text)
        return make_plan(answers, build_context(answers, detect=False)), text

    return make
