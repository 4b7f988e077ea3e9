"""The pure planner: answers in, plan out. No torch, transformers, peft or textual here."""

from ftplan.planner.answers import METHODS, Answers
from ftplan.planner.loader import AnswersError, Problem, load_answers, parse_answers, read_answers_text
from ftplan.planner.models import ModelNotFound, catalog_names, resolve_model
from ftplan.planner.plan import Context, MethodPlan, Plan, make_plan
from ftplan.planner.settings import Settings

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
