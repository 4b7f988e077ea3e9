"""The pure planner: answers in, plan out. No torch, transformers, peft or textual here.

Only the plain parts load at once (the answers' value sets, problems); the answers models,
their reader and the planning modules (memory, time, the ladder, the plan's pydantic models)
load on first use, so the app can draw its questions before paying for pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ftplan.planner.choices import METHODS
from ftplan.planner.problems import AnswersError, Problem

if TYPE_CHECKING:
    from ftplan.planner.answers import Answers
    from ftplan.planner.loader import load_answers, parse_answers, read_answers_text
    from ftplan.planner.models import ModelNotFound, catalog_names, resolve_model
    from ftplan.planner.plan import Context, MethodPlan, Plan, make_plan
    from ftplan.planner.settings import Settings

_LAZY = {
    "Answers": "ftplan.planner.answers",
    "load_answers": "ftplan.planner.loader",
    "parse_answers": "ftplan.planner.loader",
    "read_answers_text": "ftplan.planner.loader",
    "Context": "ftplan.planner.plan",
    "MethodPlan": "ftplan.planner.plan",
    "Plan": "ftplan.planner.plan",
    "make_plan": "ftplan.planner.plan",
    "ModelNotFound": "ftplan.planner.models",
    "catalog_names": "ftplan.planner.models",
    "resolve_model": "ftplan.planner.models",
    "Settings": "ftplan.planner.settings",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "METHODS",
    "Answers",
    "AnswersError",
    "Context",
    "MethodPlan",
    "ModelNotFound",
    "Plan",
    "Problem",
    "Settings",
    "catalog_names",
    "load_answers",
    "make_plan",
    "parse_answers",
    "read_answers_text",
    "resolve_model",
]
