"""The questions, grouped by section; each shows its help text and its problems inline.

The form's values live in one dict (`values`), updated by every control's Changed event;
the collapsed "Training overrides" section mounts its controls only when first opened,
which keeps the first screen small (each Select is several widgets).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import AwaitMount
from textual.widgets import Collapsible, Input, Label, Select, Static, Switch

from ftplan.planner import Problem, catalog_names
from ftplan.tui.fields import BY_KEY, FIELDS, SECTIONS, Field, FormState
from ftplan.tui.widgets.chrome import FieldInput
from ftplan.tui.widgets.modelname import ModelNameInput, ModelSuggester

LAZY = {"training"}
"""Sections that start collapsed and mount their questions when opened."""
QUICK = "quick"
QUICK_START: tuple[str, ...] = (
    "model.name",
    "objective.kind",
    "hardware.gpu",
    "hardware.gpus_per_node",
    "data.examples",
    "data.avg_tokens",
    "budget.usd",
    "budget.hours",
)
"""The questions most plans turn on, first and together: a recommendation is a few keys away
(Enter moves to the next one); every other question keeps its default and its section."""
FIRST_FRAME = {QUICK}
"""Sections that come with the form. The others are below the fold and mount right after
the first frame (``mount_below_the_fold``): about seventy fewer widgets (their questions and
their collapsibles' titles) to style and lay out before the app first appears."""
TITLES = {QUICK: "Quick start (Enter: next question)", **SECTIONS}


def section_of(key: str) -> str:
    """The form section a question is shown in (the quick start holds some of every section)."""
    return QUICK if key in QUICK_START else BY_KEY[key].section


def choices_with(spec: Field, value: Any) -> tuple[tuple[str, Any], ...]:
    """A select's choices, plus `value` when the answers file holds one it lacks (`gpu =
    "RTX-5090"`): the question opens showing it, marked by the planner's problem, and the
    user picks a real one. Without it Textual refuses the value and the app cannot open."""
    if value is None or any(v == value for _, v in spec.choices):
        return spec.choices
    return (*spec.choices, (f"{value} (not a known choice)", value))


class Question(Vertical):
    """One question: label, control, then its help text with its note or problem under it."""

    DEFAULT_CLASSES = "question"

    def __init__(self, spec: Field, value: Any, error: str = "", note: str = "") -> None:
        super().__init__(id=f"q-{spec.widget_id}")
        self.spec = spec
        self.initial = value
        self.error = error
        self.note = note

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.name.replace("_", " "), classes="q-label")
        if spec.kind == "select":
            choices = choices_with(spec, self.initial)
            yield Select(choices, value=self.initial, allow_blank=False, id=spec.widget_id, compact=True)
        elif spec.kind == "switch":
            yield Switch(value=bool(self.initial), id=spec.widget_id)
        else:
            model = spec.key == "model.name"
            yield (ModelNameInput if model else FieldInput)(
                str(self.initial),
                placeholder=spec.placeholder,
                suggester=ModelSuggester(catalog_names()) if model else None,
                id=spec.widget_id,
                compact=True,
                select_on_focus=spec.kind in ("int", "float"),  # tab in, type: the number is replaced
            )
        self._help = Static(self._text(), classes="q-help")
        yield self._help

    def on_mount(self) -> None:
        self.set_class(bool(self.error), "-invalid")
        self.app.apply_cursor_blink(self)
        self._redraw()  # a note or problem that arrived between compose and mount

    def _text(self) -> Text:
        text = Text(self.spec.help, style="dim")
        if self.note:
            text.append("\n" + self.note, style="green")
        if self.error:
            text.append("\n" + self.error, style="bold red")
        return text

    def _redraw(self) -> None:
        """Through the widget made in compose, not a query: between the question's mount and its
        children's (or while the app shuts down) a query finds nothing and raised NoMatches."""
        help_text = getattr(self, "_help", None)
        if help_text is not None:
            help_text.update(self._text())

    def set_error(self, message: str) -> None:
        if message == self.error:
            return  # most edits change no field's problems: touch nothing, restyle nothing
        self.error = message
        self.set_class(bool(message), "-invalid")
        self._redraw()

    def set_note(self, message: str) -> None:
        if message != self.note:
            self.note = message
            self._redraw()


class QuestionsForm(VerticalScroll):
    """All questions. Posts `QuestionsForm.Edited` when the user changes any of them."""

    class Edited(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, state: FormState, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values: dict[str, Any] = dict(state.values)
        """The value of every question, mounted or not: the form's one source of truth."""
        self.errors: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self._general = ""
        self._problems_shown: list[Problem] | None = None
        self._mounted_sections: set[str] = set()
        self._below_the_fold_made = False
        self._open_early: set[str] = set()
        self._made: dict[str, Question] = {}
        """Every question made so far by key, mounted or still mounting."""

    def compose(self) -> ComposeResult:
        yield Static("", id="form-problems", markup=False)
        for section in TITLES:
            if section in FIRST_FRAME:
                yield self._section(section)

    def _section(self, section: str) -> Collapsible:
        """A section's collapsible: open ones with their questions, lazy ones collapsed and empty."""
        lazy = section in LAZY and section not in self._open_early
        if not lazy:
            self._mounted_sections.add(section)
        questions = [] if lazy else self._questions(section)
        return Collapsible(*questions, title=TITLES[section], collapsed=lazy, id=f"section-{section}")

    def mount_below_the_fold(self) -> AwaitMount | None:
        """Mount the sections left out of the first frame, below the quick start (the app calls
        this right after that frame; anything that needs a section before then mounts them)."""
        if self._below_the_fold_made:
            return None
        self._below_the_fold_made = True
        return self.mount_all([self._section(section) for section in TITLES if section not in FIRST_FRAME])

    def _questions(self, section: str) -> list[Question]:
        fields = [BY_KEY[key] for key in QUICK_START] if section == QUICK else FIELDS
        made = [
            Question(f, self.values.get(f.key), self.errors.get(f.key, ""), self.notes.get(f.key, ""))
            for f in fields
            if section_of(f.key) == section
        ]
        self._made.update((q.spec.key, q) for q in made)
        return made

    @on(Collapsible.Expanded)
    def _expanded(self, event: Collapsible.Expanded) -> None:
        section = str(event.collapsible.id).removeprefix("section-")
        if section not in self._mounted_sections:  # open sections announce themselves as they mount
            self.open_section(section)

    def open_section(self, section: str) -> AwaitMount | None:
        """Expand a section, mounting its questions the first time; await the result to use them."""
        if not self._below_the_fold_made:
            self._open_early.add(section)  # asked for before the first frame was out: made open
            return self.mount_below_the_fold()
        collapsible = self.query_one(f"#section-{section}", Collapsible)
        collapsible.collapsed = False
        if section not in self._mounted_sections:
            self._mounted_sections.add(section)
            return collapsible.query_one(Collapsible.Contents).mount_all(self._questions(section))
        return None

    # Reading and writing values ------------------------------------------------------------

    def value(self, key: str) -> Any:
        return self.values[key]

    def state(self) -> FormState:
        return FormState(dict(self.values))

    def set_value(self, key: str, value: Any) -> None:
        """Set a question without it counting as the user's edit."""
        self.values[key] = value
        question = self._made.get(key)
        if question is None:
            return  # its section is not mounted: the question will start from `values`
        if not question.is_mounted:
            question.initial = value  # made, not composed yet
            return
        control = question.query_one(f"#{BY_KEY[key].widget_id}")
        with control.prevent(Input.Changed, Select.Changed, Switch.Changed):
            control.value = value

    async def control(self, key: str):
        """The control of a question, mounting its section first if needed (tests, focus)."""
        mounting = self.open_section(section_of(key))
        if mounting is not None:
            await mounting
        return self.query_one(f"#{BY_KEY[key].widget_id}")

    def set_note(self, key: str, message: str) -> None:
        self.notes[key] = message
        if key in self._made:
            self._made[key].set_note(message)

    def show_problems(self, problems: Iterable[Problem]) -> None:
        """Mark each problem's field; problems without a known field go to the top."""
        problems = list(problems)
        if problems == self._problems_shown:
            return  # most edits change no problem: skip the query over every question
        self._problems_shown = problems
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for p in problems:
            if p.field in BY_KEY:
                by_field.setdefault(p.field, []).append(p.message)
            else:
                general.append(p.render())
        self.errors = {key: "; ".join(messages) for key, messages in by_field.items()}
        for key, question in self._made.items():
            question.set_error(self.errors.get(key, ""))
        text = "\n".join(general)
        if text != self._general:
            self._general = text
            top = self.query_one("#form-problems", Static)
            top.update(text)
            top.set_class(bool(general), "-visible")
        for section in {section_of(key) for key in by_field}:
            self.open_section(section)

    # Edits -----------------------------------------------------------------------------------

    @on(Input.Submitted)
    def _next_question(self, event: Input.Submitted) -> None:
        """Enter takes the model name's completion and moves on, as Tab does: the quick start
        is typed top to bottom without reaching for another key."""
        event.stop()
        if isinstance(event.input, ModelNameInput):
            event.input.accept_completion()
        self.screen.focus_next()

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _edited(self, event: Input.Changed | Select.Changed | Switch.Changed) -> None:
        key = str(event.control.id or "").replace("-", ".", 1)
        if key in BY_KEY and self.values.get(key) != event.value:
            self.values[key] = event.value  # Changed events that change nothing (mounting) are no edits
            self.post_message(self.Edited(key))
