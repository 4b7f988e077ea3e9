"""The help texts and defaults the app reads from answers.py's source are pydantic's own."""

from __future__ import annotations

from ftplan.planner.answers import Answers
from ftplan.planner.fielddocs import field_docs
from ftplan.tui.fields import FIELDS


def pydantic_fields():
    for section, info in Answers.model_fields.items():
        for name, field in info.annotation.model_fields.items():
            yield f"{section}.{name}", field


def test_every_field_has_pydantics_help_and_default():
    docs = field_docs()
    seen = set()
    for key, field in pydantic_fields():
        doc = docs[key]
        seen.add(key)
        assert doc.help == " ".join((field.description or "").split()), key
        assert doc.help, f"{key} has no docstring: the app would show no help"
        assert doc.required == field.is_required(), key
        if not field.is_required():
            assert doc.default == field.default, key
    assert seen == set(docs)


def test_every_question_has_its_fields_help():
    docs = field_docs()
    for question in FIELDS:
        assert question.help == docs[question.key].help
        assert question.help
