"""What is wrong with the answers: one ``Problem`` per field, gathered in an ``AnswersError``.

Plain dataclasses (no pydantic): the shells import them before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    line: int | None = None

    def render(self, source: str = "") -> str:
        where = f"{source}:{self.line}: " if self.line and source else (f"line {self.line}: " if self.line else "")
        return f"{where}{self.field}: {self.message}" if self.field else f"{where}{self.message}"


@dataclass
class AnswersError(Exception):
    """Bad input: every problem found, for one message and exit code 2."""

    problems: list[Problem]
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} in the answers:"]
        lines += [f"  - {p.render(self.source)}" for p in self.problems]
        return "\n".join(lines)


def did_you_mean(word: str, choices: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The choices closest to ``word``, best first: case and separators ignored, and those that
    share its first part (the GPU generation of ``H100-80GB``, the key's stem) ahead of the rest,
    so that ``H100-80GB`` suggests the H100s before ``A100-80GB``. The one suggester of answers keys,
    GPU names and choice values."""
    from difflib import SequenceMatcher

    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    def head(s: str) -> str:
        return norm(s.replace("_", "-").split("-")[0])

    scored = []
    for choice in choices:
        ratio = SequenceMatcher(None, norm(word), norm(choice)).ratio()
        bonus = 0.5 if head(choice) and head(choice) == head(word) else 0.0
        if ratio + bonus >= cutoff:
            scored.append((-(ratio + bonus), choice))
    scored.sort(key=lambda pair: pair[0])  # stable: ties keep the choices' order (the catalog's, newest first)
    return [choice for _, choice in scored[:n]]
