"""The answers' help texts and defaults, read from ``answers.py`` without importing pydantic.

The app draws its questions first; importing pydantic and building the answers models costs
about 0.2 s on a 2-core machine, before anything is on the screen. The help texts are the
field docstrings of ``answers.py`` and the defaults are literals there, so this reads them
from its source with ``ast`` (a few ms). ``tests/planner/test_fielddocs.py`` holds every
field equal to what pydantic reads (``model_fields[...].description`` and defaults).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("answers.py")


@dataclass(frozen=True)
class FieldDoc:
    help: str
    """The field's docstring, whitespace folded."""
    default: Any
    required: bool


@functools.cache
def field_docs() -> dict[str, FieldDoc]:
    """``{"section.name": FieldDoc}`` for every field of every section of ``Answers``."""
    module = ast.parse(SOURCE.read_text(encoding="utf-8"))
    classes = {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}
    docs: dict[str, FieldDoc] = {}
    for section, statement, _ in _annotated(classes["Answers"]):
        for name, field, doc in _annotated(classes[ast.unparse(statement.annotation)]):
            required, default = _default(field.value)
            docs[f"{section}.{name}"] = FieldDoc(" ".join(doc.split()), default, required)
    return docs


def _annotated(node: ast.ClassDef):
    """(name, statement, docstring) of each annotated field of a class body."""
    body = node.body
    for index, statement in enumerate(body):
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            following = body[index + 1] if index + 1 < len(body) else None
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = str(following.value.value)
            yield statement.target.id, statement, doc


def _default(value: ast.expr | None) -> tuple[bool, Any]:
    """(required, default) of ``= literal``, ``= Field(literal, ...)`` or ``= Field(...)``."""
    if value is None:
        return True, None
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field":
        if value.args:
            return False, ast.literal_eval(value.args[0])
        for keyword in value.keywords:
            if keyword.arg == "default":
                return False, ast.literal_eval(keyword.value)
        return True, None
    return False, ast.literal_eval(value)
