"""The app's widgets, one per file."""

from ftplan.tui.widgets.membars import MemoryBars
from ftplan.tui.widgets.planview import PlanView
from ftplan.tui.widgets.questions import Question, QuestionsForm
from ftplan.tui.widgets.results import ResultsPanel

__all__ = ["MemoryBars", "PlanView", "Question", "QuestionsForm", "ResultsPanel"]
