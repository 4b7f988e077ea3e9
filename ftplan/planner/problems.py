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
