"""Read and validate an answers file, reporting every problem at once.

A problem names its dotted field (``training.lora_r``), the TOML line where it can be
found, and a "did you mean" for unknown keys. Callers print ``AnswersError.render()`` and
exit with code 2; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ftplan.planner.answers import Answers
from ftplan.planner.problems import AnswersError, Problem, did_you_mean

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Map each dotted key (and table) to the 1-based line that defines it."""
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            table = header.group(1).replace('"', "").replace("'", "").replace(" ", "")
            lines.setdefault(table, number)
            continue
        key = _KEY.match(raw)
        if key:
            dotted = key.group(1).replace('"', "").replace("'", "")
            lines.setdefault(f"{table}.{dotted}" if table else dotted, number)
    return lines


def _line_for(loc: str, lines: dict[str, int]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc.rpartition(".")[0]
    return None


def _fields_of(model: type[BaseModel], path: tuple) -> list[str]:
    for part in path:
        annotation = model.model_fields.get(str(part))
        if annotation is None or not isinstance(annotation.annotation, type):
            return []
        if not issubclass(annotation.annotation, BaseModel):
            return []
        model = annotation.annotation
    return list(model.model_fields)


def problems_from_validation(exc: ValidationError, lines: dict[str, int]) -> list[Problem]:
    """Turn pydantic errors into Problems with dotted names, lines and suggestions."""
    problems = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not str(p).startswith(("literal[", "list[")))
        dotted = ".".join(str(p) for p in loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            choices = _fields_of(Answers, loc[:-1])
            close = did_you_mean(str(loc[-1]), choices, n=1)
            message = "unknown key" + (f"; did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))}?" if close else "")
            if choices and not close:
                message += f" (known: {', '.join(choices)})"
        elif kind == "missing":
            message = "is required"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            # pydantic says "a valid dictionary or instance of ModelChoice": name the TOML shape instead
            message = f"should be a table ([{dotted}] with keys under it), got {type(error.get('input')).__name__}"
        else:
            message = error["msg"]
            if "input" in error and kind not in ("model_type", "dict_type"):
                message += f" (got {error['input']!r})"
        problems.append(Problem(dotted, message, _line_for(dotted, lines)))
    # One message per field: union types report each branch; keep the first.
    unique: dict[str, Problem] = {}
    for p in problems:
        unique.setdefault(p.field, p)
    return list(unique.values())


def parse_answers(data: dict[str, Any], text: str = "", source: str = "") -> Answers:
    """Validate a parsed TOML document; raise AnswersError listing every problem."""
    lines = key_lines(text) if text else {}
    try:
        answers = Answers.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, lines)
        problems += _name_problems_of_raw(data, {p.field for p in problems}, lines)
        raise AnswersError(problems, source) from None
    from ftplan.planner.checks import semantic_problems

    problems = semantic_problems(answers)
    if problems:
        raise AnswersError([Problem(p.field, p.message, _line_for(p.field, lines)) for p in problems], source)
    return answers


def _name_problems_of_raw(data: dict[str, Any], reported: set[str], lines: dict[str, int]) -> list[Problem]:
    """An unknown model or GPU in answers that failed validation elsewhere, so that one round
    reports everything (the README's promise) instead of the schema first, the names after."""
    from ftplan.planner.checks import name_problems

    def name(section: str, key: str) -> object:
        table = data.get(section)
        if f"{section}.{key}" in reported or f"{section}" in reported or not isinstance(table, dict):
            return None
        return table.get(key, "auto" if section == "hardware" else None)

    found, _ = name_problems(name("model", "name"), name("hardware", "gpu"))
    return [Problem(p.field, p.message, _line_for(p.field, lines)) for p in found]


def read_answers_text(text: str, source: str = "") -> Answers:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise AnswersError(
            [Problem("", f"not valid TOML: {exc}", int(match.group(1)) if match else None)], source
        ) from None
    return parse_answers(data, text, source)


def load_answers(path: str | Path) -> Answers:
    """Read an answers TOML file; every failure is an AnswersError, never a traceback."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AnswersError([Problem("", "no such file")], source) from None
    except IsADirectoryError:
        raise AnswersError([Problem("", "is a folder; expected a .toml answers file")], source) from None
    except OSError as exc:
        raise AnswersError([Problem("", f"cannot read: {exc.strerror}")], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnswersError([Problem("", f"not a UTF-8 text file (byte {exc.start})")], source) from None
    if "\x00" in text:
        raise AnswersError([Problem("", "not a text file (contains NUL bytes)")], source)
    return read_answers_text(text, source)
