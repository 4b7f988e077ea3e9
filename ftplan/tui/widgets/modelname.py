"""The model-name field: completion from a few characters of the repository name.

Textual's `SuggestFromList` completes prefixes of the whole name in list order, so
`Qwen/Qwen2.5-7` offered `Qwen/Qwen2.5-72B` (listed first) and `qwen2.5-7` offered nothing.
Here a typed text matches the start of the full name or of the part after the `/`, and
the shortest match wins (the base model before its `-Instruct`, `-7B` before `-72B`).
Accepting (→ or Enter) writes the catalog's own spelling.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.suggester import Suggester

from ftplan.tui.widgets.chrome import FieldInput


def best_model(typed: str, names: Sequence[str]) -> tuple[str, int] | None:
    """(catalog name, where the typed text ends in it) of the best completion, or None."""
    text = typed.strip().casefold()
    if not text:
        return None
    found: list[tuple[int, int, str, int]] = []
    for order, name in enumerate(names):
        folded = name.casefold()
        repo = folded.rsplit("/", 1)[-1]
        if folded.startswith(text):
            found.append((len(name), order, name, len(text)))
        elif repo.startswith(text):
            found.append((len(name), order, name, len(folded) - len(repo) + len(text)))
    if not found:
        return None
    _, _, name, end = min(found)
    return (name, end) if name.casefold() != text else None


class ModelSuggester(Suggester):
    """Suggests `typed + the rest of the best name`, so Textual's Input draws it after the
    cursor; `ModelNameInput` swaps in the full name when it is accepted."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(use_cache=True, case_sensitive=True)
        self.names = list(names)

    async def get_suggestion(self, value: str) -> str | None:
        best = best_model(value, self.names)
        if best is None:
            return None
        name, end = best
        return value + name[end:]


class ModelNameInput(FieldInput):
    """A FieldInput whose accepted completion is the catalog name (`Qwen/Qwen2.5-7B`, not the
    `qwen2.5-7B` the suggestion was drawn as)."""

    def accept_completion(self) -> bool:
        """Take the completion shown, if any; True when one was taken."""
        suggester = self.suggester
        if not self._suggestion or not isinstance(suggester, ModelSuggester):
            return False
        best = best_model(self.value, suggester.names)
        if best is None:
            return False
        self.value = best[0]
        self.cursor_position = len(self.value)
        return True

    def action_cursor_right(self, select: bool = False) -> None:
        if not select and self.cursor_at_end and self.accept_completion():
            return
        super().action_cursor_right(select)
