"""The user-facing references are generated from the code and held equal to it."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from ftplan.reference import answers_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_docs_answers_md_is_the_generated_reference():
    on_disk = (ROOT / "docs" / "answers.md").read_text(encoding="utf-8")
    assert on_disk == answers_markdown(), "regenerate: python -m ftplan.reference > docs/answers.md"


def test_answers_reference_lists_every_key_of_the_schema():
    from ftplan.planner.answers import Answers

    text = answers_markdown()
    for section, field in Answers.model_fields.items():
        assert f"## `[{section}]`" in text
        for name in field.annotation.model_fields:
            assert f"| `{name}` |" in text, f"{section}.{name} missing from docs/answers.md"


@pytest.fixture(scope="module")
def schema() -> dict:
    out = subprocess.run([sys.executable, "-m", "ftplan", "schema"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_validates_against_ftplan_schema(schema, example):
    jsonschema.validate(tomllib.loads(example.read_text(encoding="utf-8")), schema)


@pytest.mark.parametrize(
    "bad",
    [
        {"data": {"max_seq_len": 2048}},  # model.name is required
        {"model": {"name": "x"}, "training": {"attention": "flash3"}},
        {"model": {"name": "x"}, "training": {"lora_rank": 16}},  # unknown key
        {"model": {"name": "x"}, "hardware": {"gpus_per_node": 0}},
    ],
)
def test_schema_rejects_what_the_loader_rejects(schema, bad):
    from ftplan.planner import AnswersError, parse_answers

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(AnswersError):
        parse_answers(bad)
