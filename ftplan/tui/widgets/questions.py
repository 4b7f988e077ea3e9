"""The questions, grouped by section; each shows its help text and its problems inline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Collapsible, Input, Label, Select, Static, Switch

from ftplan.planner import Problem, catalog_names
from ftplan.tui.fields import FIELDS, SECTIONS, BY_KEY, Field, FormState

COLLAPSED = {"training"}


class Question(Vertical):
    """One question: label, control, help text, and a line for its problems."""

    DEFAULT_CLASSES = "question"

    def __init__(self, spec: Field, value: Any) -> None:
        super().__init__(id=f"q-{spec.widget_id}")
        self.spec = spec
        self.initial = value

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.name.replace("_", " "), classes="q-label")
        if spec.kind == "select":
            yield Select(spec.choices, value=self.initial, allow_blank=False, id=spec.widget_id, compact=True)
        elif spec.kind == "switch":
            yield Switch(value=bool(self.initial), id=spec.widget_id)
        else:
            suggester = (
                SuggestFromList(catalog_names(), case_sensitive=False) if spec.key == "model.name" else None
            )
            yield Input(
                str(self.initial),
                placeholder=spec.placeholder,
                suggester=suggester,
                id=spec.widget_id,
                compact=True,
                select_on_focus=False,
            )
        yield Static(spec.help, classes="q-help", markup=False)
        yield Static("", classes="q-note", markup=False)
        yield Static("", classes="q-error", markup=False)

    error = ""

    def set_error(self, message: str) -> None:
        if message == self.error:
            return  # most edits change no field's problems: touch nothing, restyle nothing
        self.error = message
        self.set_class(bool(message), "-invalid")
        self.query_one(".q-error", Static).update(message)

    def set_note(self, message: str) -> None:
        self.query_one(".q-note", Static).update(message)
        self.set_class(bool(message), "-noted")


class QuestionsForm(VerticalScroll):
    """All questions. Posts `QuestionsForm.Edited` when the user changes any of them."""

    class Edited(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, state: FormState, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial = state
        self._general = ""
        self._known: dict[str, Any] = dict(state.values)
        """The last value seen per key: Changed events that change nothing (mounting) are no edits."""

    def compose(self) -> ComposeResult:
        yield Static("", id="form-problems", markup=False)
        for section, title in SECTIONS.items():
            questions = [Question(f, self.initial.values.get(f.key)) for f in FIELDS if f.section == section]
            yield Collapsible(*questions, title=title, collapsed=section in COLLAPSED, id=f"section-{section}")

    # Reading and writing values ------------------------------------------------------------

    def _control(self, key: str):
        return self.query_one(f"#{BY_KEY[key].widget_id}")

    def value(self, key: str) -> Any:
        control = self._control(key)
        return control.value

    def state(self) -> FormState:
        return FormState({f.key: self.value(f.key) for f in FIELDS})

    def set_value(self, key: str, value: Any) -> None:
        """Set a control without it counting as the user's edit."""
        control = self._control(key)
        self._known[key] = value
        with control.prevent(Input.Changed, Select.Changed, Switch.Changed):
            control.value = value

    def question(self, key: str) -> Question:
        return self.query_one(f"#q-{BY_KEY[key].widget_id}", Question)

    def show_problems(self, problems: Iterable[Problem]) -> None:
        """Mark each problem's field; problems without a known field go to the top."""
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for p in problems:
            if p.field in BY_KEY:
                by_field.setdefault(p.field, []).append(p.message)
            else:
                general.append(p.render())
        for f in FIELDS:
            self.question(f.key).set_error("; ".join(by_field.get(f.key, [])))
        top = self.query_one("#form-problems", Static)
        text = "\n".join(general)
        if text != self._general:
            self._general = text
            top.update(text)
            top.set_class(bool(general), "-visible")
        for key in by_field:
            section = self.query_one(f"#section-{BY_KEY[key].section}", Collapsible)
            section.collapsed = False

    # Edits -----------------------------------------------------------------------------------

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _edited(self, event: Input.Changed | Select.Changed | Switch.Changed) -> None:
        widget_id = event.control.id or ""
        for f in FIELDS:
            if f.widget_id == widget_id:
                if self._known.get(f.key) != event.value:
                    self._known[f.key] = event.value
                    self.post_message(self.Edited(f.key))
                return
