"""The ftplan app: questions on the left, the live plan on the right; save, export, launch.

Planning runs in a thread worker (exclusive, one at a time) that posts `PlanReady` /
`PlanInvalid`; edits are debounced so a burst of keystrokes plans once. Nothing here
imports torch, transformers or peft.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer, Tab, Tabs

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted, Stopping
from ftplan.planner import AnswersError, Problem
from ftplan.tui.fields import FormState, answers_toml
from ftplan.tui.messages import DataMeasured, GPUsDetected, PlanInvalid, PlanLines, PlanReady
from ftplan.tui.runs import RunEvent, RunMessage, RunSource
from ftplan.tui.widgets.chrome import AppHeader
from ftplan.tui.widgets.questions import QuestionsForm
from ftplan.tui.widgets.results import ResultsPanel

if TYPE_CHECKING:
    from ftplan.planner.answers import Answers
    from ftplan.planner.plan import Context, Plan
    from ftplan.planner.timecost import DataSample

DetectFn = Callable[[], list[str]]
DataRequest = tuple[str, str, "str | None", str, str]
"""(data.path, data.format, data.train_on, model.name, objective.kind): what a measurement depends on."""
MeasureFn = Callable[[DataRequest], "DataSample | None"]
SourceFactory = Callable[..., RunSource]
PlanFn = Callable[["Answers", "Context"], "Plan"]


def _detect_default() -> list[str]:
    from ftplan.context import detect_gpus

    return [g.name for g in detect_gpus()]


def _measure_default(request: DataRequest) -> DataSample | None:
    """The headless plan's own measurement (the model's tokenizer and chat template when they
    are on disk, the prompt share), so the app plans the same file to the same figures."""
    from ftplan.context import measure_local_data

    return measure_local_data(*request)


MEASURED_BY = {"data.path", "data.format", "data.train_on", "model.name", "objective.kind"}
"""The questions a data measurement depends on (the tokenizer is the model's)."""


def data_request(raw: dict) -> DataRequest:
    """What a measurement of the form's data file depends on, from the answers as the form has them."""
    data, model, objective = raw.get("data", {}), raw.get("model", {}), raw.get("objective", {})
    return (
        str(data.get("path", "")).strip(),
        str(data.get("format", "auto")),
        data.get("train_on"),
        str(model.get("name", "")).strip(),
        str(objective.get("kind", "instruction")),
    )


def _host_ram_default() -> int | None:
    from ftplan.context import detect_host_ram

    return detect_host_ram()


class FtplanApp(App[int]):
    """`FtplanApp(answers, answers_path)` is the factory the CLI, the tests and the snapshots use."""

    CSS_PATH = "app.tcss"
    TITLE = "ftplan"
    SUB_TITLE = "plan a fine-tune: full, LoRA or QLoRA"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    # Priority: an Input takes ctrl+e as end-of-line (and hides it from the footer) otherwise;
    # `check_action` lets the keys through on the export and launch screens.
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="answers.save", priority=True),
        Binding("ctrl+e", "export", "Export", id="plan.export", priority=True),
        Binding("ctrl+l", "launch", "Launch", id="plan.launch", priority=True),
        Binding("f2", "toggle_view", "Questions/Plan", id="view.toggle", priority=True),
        Binding("f1", "help", "Help", id="app.help", priority=True),
        Binding("question_mark", "help", "Help", id="app.help_key", show=False),
        Binding("ctrl+t", "toggle_dark", "Dark/Light", id="app.theme", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]
    MAIN_SCREEN_ACTIONS = {"save", "export", "launch", "toggle_view", "help"}
    """Actions of the main screen: elsewhere (export, launch, dialogs) their keys are that screen's."""

    def __init__(
        self,
        answers: Answers | None = None,
        answers_path: str | Path | None = None,
        *,
        raw: dict[str, Any] | None = None,
        detect: DetectFn | None = _detect_default,
        measure: MeasureFn | None = _measure_default,
        detect_host_ram: Callable[[], int | None] | None = _host_ram_default,
        run_source_factory: SourceFactory | None = None,
        plan_fn: PlanFn | None = None,
        debounce: float = 0.1,
        cursor_blink: bool = True,
    ) -> None:
        super().__init__()
        self.initial_state = FormState.from_raw(raw) if raw is not None else FormState.from_answers(answers)
        self._saved_raw = self.initial_state.to_raw()
        """The form as last read or saved: Ctrl-Q asks before losing anything else."""
        self._raw = raw
        self.read_problems: list[Problem] = []
        """Keys of the file that no question holds: reported at the top, dropped on save
        (found after the first frame: validating builds pydantic's validators)."""
        self.answers_path = Path(answers_path) if answers_path else None
        self.detect = detect
        self.measure = measure
        self.detect_host_ram = detect_host_ram
        self.host_ram: int | None = None
        """This machine's RAM, as the headless plan detects it (CPU offload must fit in it)."""
        self.run_source_factory = run_source_factory
        self.plan_fn = plan_fn
        """The planner (None: `make_plan`); the snapshot tests pass a frozen plan so that a
        planner change moves the golden set, not the pictures of the screens."""
        self.debounce = debounce
        self.cursor_blink = cursor_blink
        # What the app shows: the latest valid answers and their plan.
        self.answers: Answers | None = None
        self.plan: Plan | None = None
        self._plan_group = None
        self.problems: list[Problem] = []
        self.saved_answers: Answers | None = None
        """The answers as last read from or saved to `answers_path` (the title shows * when they differ)."""
        # Planning pipeline state.
        self.generation = 0
        self.plans_started = 0
        self.shown_generation = -1
        self.complete_generation = -1
        self._timer: Timer | None = None
        self._edit_started: float | None = None
        self._plan_started: float | None = None
        from ftplan.tui.widgets.results import PlanRenderer

        self.plan_renderer = PlanRenderer()
        self.full_latencies: list[float] = []
        """Last keystroke → every table redrawn (the second rendering pass), seconds."""
        self._shown_edit: tuple[int, float | None] = (-1, None)
        self.latency_phases: list[dict[str, float]] = []
        self.latencies: list[tuple[float, float, float]] = []
        """(last keystroke→tables shown, debounce end→tables shown, planning alone), seconds."""
        self.detected: list[str] = []
        self.detect_done = detect is None
        """The detect worker's answer has been handled (the hardware note and pre-fill are shown)."""
        self.measured: dict[DataRequest, tuple[DataSample | None, str]] = {}
        """Each data request's (sample, problem): the file measured as the headless plan measures it."""
        self.user_edited: set[str] = set()
        # The training run belongs to the App, not to the launch screen.
        self.run_source: RunSource | None = None
        self.run_active = False
        self.run_lines: list[str] = []
        self.run_progress: ProgressUpdate | None = None
        self.run_started: RunStarted | None = None
        self.run_finished: RunResult | None = None
        self.export_dir: Path | None = self._project_of(self.answers_path)
        self.run_folder: Path | None = None
        """The folder of the active (or last) run: the launch screen shows it when reopened."""
        self._quit_after_run = False
        self._stop_dialog = None

    @staticmethod
    def _project_of(answers_path: Path | None) -> Path | None:
        """The exported project the answers file belongs to (`ftplan --answers ft-x/answers.toml
        --interactive`): export and launch then start from that folder."""
        from ftplan.project import MANIFEST

        if answers_path is not None and (answers_path.parent / MANIFEST).is_file():
            return answers_path.parent
        return None

    @staticmethod
    def _unknown_keys(raw: dict[str, Any]) -> list[Problem]:
        from ftplan.planner.loader import parse_answers
        from ftplan.tui.fields import BY_KEY

        try:
            parse_answers(raw)
        except AnswersError as exc:
            return [
                Problem(p.field, p.message + " — dropped when the answers are saved", p.line)
                for p in exc.problems
                if p.field not in BY_KEY
            ]
        return []

    # Layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield Tabs(Tab("Questions", id="tab-questions"), Tab("Plan", id="tab-plan"), id="view-tabs")
        with Horizontal(id="main", classes="show-questions"):
            yield QuestionsForm(self.initial_state, id="questions")
            yield ResultsPanel(id="results")
        yield Footer()

    def on_mount(self) -> None:
        if self.answers_path:
            self.sub_title = str(self.answers_path)
        self.apply_cursor_blink(self.screen_stack[0])
        if self.detect is not None:
            self._detect_worker()
        self._measure_if_needed()
        if not str(self.initial_state.values.get("model.name", "")).strip():
            self.screen_stack[0].query_one("#model-name").focus()  # the one question that has no default

    def on_ready(self) -> None:
        """After the first frame: the questions below the fold, then the first plan. Started
        earlier, they would only delay that frame (a worker too: it competes for the GIL)."""
        if self._raw is not None:
            self.read_problems = self._unknown_keys(self._raw)
        self.plan_at_once()  # the worker plans while the rest of the form mounts
        self.form.mount_below_the_fold()

    def apply_cursor_blink(self, root) -> None:
        """Inputs blink unless the app was made with cursor_blink=False (snapshots freeze it)."""
        if not self.cursor_blink:
            for widget in root.query("Input"):
                widget.cursor_blink = False

    @property
    def form(self) -> QuestionsForm:
        """The questions (on the main screen, whichever screen is on top)."""
        return self.screen_stack[0].query_one(QuestionsForm)

    @property
    def results(self) -> ResultsPanel:
        return self.screen_stack[0].query_one(ResultsPanel)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's keys only act (and show in the footer) on the main screen: on the
        export screen ctrl+s writes files, in the launch screen's folder field ctrl+e is end."""
        if action in self.MAIN_SCREEN_ACTIONS and self.screen_stack and self.screen is not self.screen_stack[0]:
            return action == "help" and not isinstance(self.screen, ModalScreen)
        return True

    @on(Tabs.TabActivated, "#view-tabs")
    def _tab(self, event: Tabs.TabActivated) -> None:
        plan = event.tab.id == "tab-plan"
        main = self.query_one("#main")
        main.set_class(plan, "show-plan")
        main.set_class(not plan, "show-questions")
        if self.screen.has_class("-narrow"):
            # the hidden pane cannot keep the focus: PageDown must scroll what is shown
            shown = self.results if plan else self.form
            focused = self.focused
            if focused is None or not (focused is shown or shown in focused.ancestors):
                (self.results if plan else self._last_question_focus()).focus()

    def action_toggle_view(self) -> None:
        """Narrow: switch panes. Wide (both shown): move the focus between the questions and
        the plan, so PageDown scrolls the plan without tabbing through every question."""
        if not self.screen.has_class("-narrow"):
            if self.results.has_focus:
                self._last_question_focus().focus()
            else:
                self._question_focus = self.focused
                self.results.focus()
            return
        tabs = self.query_one("#view-tabs", Tabs)
        tabs.active = "tab-questions" if tabs.active == "tab-plan" else "tab-plan"

    def _last_question_focus(self):
        """The question that had the focus before the plan took it (else the first one)."""
        widget = getattr(self, "_question_focus", None)
        if widget is not None and widget.is_attached and widget.focusable:
            return widget
        return self.screen_stack[0].query_one("#objective-kind")

    def action_help(self) -> None:
        from ftplan.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.screen))

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    # Planning ---------------------------------------------------------------------------------

    @on(QuestionsForm.Edited)
    def _edited(self, event: QuestionsForm.Edited) -> None:
        self.user_edited.add(event.key)
        self._edit_started = time.perf_counter()  # latency counts from the last keystroke
        if event.key in MEASURED_BY:
            self._measure_if_needed()
        self.schedule_plan()

    def schedule_plan(self, delay: float | None = None) -> None:
        """Plan again after `delay` seconds of quiet (the debounce), dropping older requests."""
        self._drop_pending_plan()
        delay = self.debounce if delay is None else delay
        self._timer = self.set_timer(max(delay, 0.001), self._plan_now, name="plan-debounce")

    def plan_at_once(self) -> None:
        """Plan now: the worker starts before the caller's next piece of work."""
        self._drop_pending_plan()
        self._plan_now()

    def _drop_pending_plan(self) -> None:
        self.generation += 1
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _plan_now(self) -> None:
        self._timer = None
        self.plans_started += 1
        self._plan_started = time.perf_counter()
        raw = self.form.state().to_raw()
        self._plan_worker(raw, self.context_for(raw), self.generation, self.results.plan_width)

    def context_for(self, raw: dict) -> Context:
        """The headless plan's context (ftplan.context.plan_context) from what the workers found."""
        from ftplan.context import plan_context, unread_data_note

        data = raw.get("data", {})
        path = str(data.get("path", ""))
        sample = self.measured.get(data_request(raw), (None, ""))[0] if path else None
        note = unread_data_note(path, data.get("examples"), data.get("avg_tokens")) if path else None
        return plan_context(self.detected, sample, (note,) if note else (), self.host_ram)

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _plan_worker(self, raw: dict, context: Context, generation: int, width: int) -> None:
        """Validate, plan and render the tables to lines; the UI thread only swaps them in."""
        from textual.worker import get_current_worker

        from ftplan.planner.loader import parse_answers
        from ftplan.planner.plan import make_plan
        from ftplan.tui.widgets.results import FIRST_PASS, plan_group

        started = time.perf_counter()
        try:
            answers = parse_answers(raw)
            plan = (self.plan_fn or make_plan)(answers, context)
        except AnswersError as exc:
            self.post_message(PlanInvalid(generation, exc.problems))
            return
        except Exception as exc:  # a planner bug must not kill the app; show it as a problem
            self.post_message(PlanInvalid(generation, [Problem("", f"planner error: {exc!r}")]))
            return
        seconds = time.perf_counter() - started
        group = plan_group(plan)
        lines, complete = self.plan_renderer.lines(plan, width, FIRST_PASS) if width > 0 else (None, True)
        painted = threading.Event()
        span = (started, time.perf_counter())
        self.post_message(PlanReady(generation, answers, plan, seconds, group, lines, width, span, complete, painted))
        if not complete and not get_current_worker().is_cancelled:
            painted.wait(0.5)  # let the UI thread paint the top tables before competing with it for the GIL
            lines, _ = self.plan_renderer.lines(plan, width)
            self.post_message(PlanLines(generation, lines, width))

    @property
    def plan_settled(self) -> bool:
        """True when the shown plan (or problems) belong to the latest edit, every table drawn."""
        return (
            self.context_settled
            and self._timer is None
            and self.shown_generation == self.generation
            and self.complete_generation == self.generation
        )

    @property
    def context_settled(self) -> bool:
        """True when what the shells find out (detected GPUs, the data file's measure) has been
        handled: its notes are on screen and any plan it asked for is scheduled. Without this a
        screenshot races the workers (the data note landed before or after it)."""
        request = data_request(self.form.state().to_raw()) if self.screen_stack else None
        measured = self.measure is None or request is None or not request[0] or request in self.measured
        return self.detect_done and measured

    def _stale(self, generation: int) -> bool:
        """A result for an older edit, or one arriving while the app shuts down."""
        return generation != self.generation or not self.screen_stack or self._closing or not self.is_running

    @on(PlanReady)
    def _plan_ready(self, message: PlanReady) -> None:
        if self._stale(message.generation):
            return
        handled = time.perf_counter()
        self.answers, self.plan, self.problems = message.answers, message.plan, []
        self.form.show_problems(self.read_problems)
        self._plan_group = message.group  # the tables as Rich renderables, built by the worker
        self.results.show_plan(message.plan, message.group, message.lines, message.width)
        if message.complete:
            self.complete_generation = message.generation
        self._shown(message.generation, message.plan_seconds, (*message.worker_span, handled), message.painted)

    @on(PlanLines)
    def _plan_lines(self, message: PlanLines) -> None:
        if self._stale(message.generation) or self.plan is None:
            return
        self.results.show_plan(self.plan, self._plan_group, message.lines, message.width)
        self.complete_generation = message.generation
        edit_generation, edit = self._shown_edit
        if edit is not None and edit_generation == message.generation:
            self.call_after_refresh(lambda: self.full_latencies.append(time.perf_counter() - edit))

    @on(PlanInvalid)
    def _plan_invalid(self, message: PlanInvalid) -> None:
        if self._stale(message.generation):
            return
        self.complete_generation = message.generation
        self.problems = message.problems
        self.form.show_problems([*message.problems, *self.read_problems])
        self.results.show_problems(message.problems, have_plan=self.plan is not None)
        self._shown(message.generation, None)

    def _shown(self, generation: int, plan_seconds: float | None, span: tuple = (), painted=None) -> None:
        edit, started = self._edit_started, self._plan_started
        self._edit_started = None
        self._shown_edit = (generation, edit)
        self.shown_generation = generation
        self._update_title()

        def record() -> None:
            now = time.perf_counter()
            if painted is not None:
                painted.set()
            if edit is not None and started is not None:
                self.latencies.append((now - edit, now - started, plan_seconds or 0.0))
                if self.complete_generation == generation:
                    self.full_latencies.append(now - edit)
                if span:
                    w0, w1, handled = span
                    self.latency_phases.append(
                        {
                            "wait for worker": w0 - started,
                            "worker (plan+render)": w1 - w0,
                            "message delivery": handled - w1,
                            "swap+paint": now - handled,
                        }
                    )

        self.call_after_refresh(record)

    def _update_title(self) -> None:
        if self.saved_answers is None and self.answers_path is not None and self.answers is not None:
            self.saved_answers = self.answers  # the first valid plan is of the answers as read
        dirty = self.answers_path is not None and self.answers is not None and self.answers != self.saved_answers
        name = str(self.answers_path) if self.answers_path else "unsaved answers"
        title = name + (" *" if dirty else "")
        if title != self.sub_title:
            # Setting App.sub_title repaints the whole screen (App.refresh); only the header's
            # title line changes, so set it quietly and redraw that line.
            self.set_reactive(App.sub_title, title)
            self.screen_stack[0].query_one(AppHeader).show_title()

    # Context: detected GPUs and measured data -------------------------------------------------

    @work(thread=True, exclusive=True, group="detect", exit_on_error=False)
    def _detect_worker(self) -> None:
        assert self.detect is not None
        try:
            names = list(self.detect())
        except Exception:
            names = []
        try:
            ram = self.detect_host_ram() if self.detect_host_ram is not None else None
        except Exception:  # noqa: BLE001 - unknown RAM is planned as unknown, like headless
            ram = None
        self.post_message(GPUsDetected(names, ram))

    @on(GPUsDetected)
    def _gpus_detected(self, message: GPUsDetected) -> None:
        from ftplan.planner.catalog.gpus import gpu_by_name

        self.detected = message.names
        self.host_ram = message.host_ram
        self.detect_done = True
        if not message.names:
            self.form.set_note("hardware.gpu", "No GPU detected here (no nvidia-smi): pick the GPU you will train on.")
            if message.host_ram is not None:
                self.schedule_plan(delay=0)  # CPU offload is checked against it, as headless
            return
        gpu = gpu_by_name(message.names[0], detected=True)
        note = f"Detected {len(message.names)}× {message.names[0]}"
        if gpu is not None and not self.user_edited & {"hardware.gpu", "hardware.gpus_per_node"}:
            if self.form.value("hardware.gpu") == "auto":
                self.form.set_value("hardware.gpu", gpu.name)
                self.form.set_value("hardware.gpus_per_node", str(len(message.names)))
                note += f" — pre-filled {gpu.name} × {len(message.names)}."
        self.form.set_note("hardware.gpu", note)
        self.schedule_plan(delay=0)

    def _measure_if_needed(self) -> None:
        state = self.form.state() if self.screen_stack and self.is_mounted else self.initial_state
        request = data_request(state.to_raw())
        if request[0] and request not in self.measured and self.measure is not None:
            self._measure_worker(request)

    @work(thread=True, exclusive=True, group="measure", exit_on_error=False)
    def _measure_worker(self, request: DataRequest) -> None:
        assert self.measure is not None
        problem = ""
        try:
            sample = self.measure(request)
        except AnswersError as exc:  # the headless plan would stop here: say why beside data.path
            sample, problem = None, "; ".join(p.message for p in exc.problems)
        except Exception as exc:  # noqa: BLE001 - a measurement bug must not kill the app
            sample, problem = None, f"cannot measure it ({exc!r})"
        self.post_message(DataMeasured(request, sample, problem))

    @on(DataMeasured)
    def _data_measured(self, message: DataMeasured) -> None:
        self.measured[message.request] = (message.sample, message.problem)
        if message.request != data_request(self.form.state().to_raw()):
            return
        given = self.form.value("data.examples").strip() and self.form.value("data.avg_tokens").strip()
        sample = message.sample
        if message.problem:
            note = f"Cannot train on this file: {message.problem}"
        elif sample:
            counted = sample.tokenizer or "4 characters per token: no tokenizer on disk"
            note = f"Measured: {sample.examples:,} examples × ~{sample.mean_tokens:,} tokens ({counted})"
            note += "; the values below win." if given else "."
        elif given:
            note = "Not a local file here: planning with the examples and avg tokens below."
        else:
            note = "Not a local file ftplan can measure: give examples and avg tokens."
        self.form.set_note("data.path", note)
        if sample:
            self.schedule_plan(delay=0)

    # Save -------------------------------------------------------------------------------------

    def action_save(self) -> None:
        if self.answers is None or self.problems:
            self.notify("Fix the answers first: the fields marked in red.", severity="error")
            return
        if self.answers_path is None:
            from ftplan.tui.screens.save import SavePathScreen

            self.push_screen(SavePathScreen("answers.toml"), self._save_to)
        else:
            self._save_to(str(self.answers_path))

    def action_save_as(self) -> None:
        from ftplan.tui.screens.save import SavePathScreen

        self.push_screen(SavePathScreen(str(self.answers_path or "answers.toml")), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if not path or self.answers is None:
            return
        text = answers_toml(self.answers)
        target = Path(path).expanduser()
        try:
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        except OSError as exc:
            self.notify(f"Cannot save {target}: {exc.strerror or exc}", severity="error")
            return
        self.answers_path = target
        self.saved_answers = self.answers
        self._saved_raw = self.form.state().to_raw()
        if self.read_problems:  # the unknown keys are gone from the file now
            self.read_problems = []
            self.form.show_problems(self.problems)
        self._update_title()
        self.notify(f"Saved the answers to {target}.")

    # Export and launch ------------------------------------------------------------------------

    def _need_plan(self) -> bool:
        if self.plan is None or self.problems:
            self.notify("There is no valid plan yet: fix the answers first.", severity="error")
            return False
        return True

    def action_export(self) -> None:
        if not self._need_plan():
            return
        from ftplan.tui.screens.export import ExportScreen

        self.push_screen(ExportScreen(self.plan, answers_toml(self.answers), self.export_dir))

    def action_launch(self) -> None:
        from ftplan.tui.screens.launch import LaunchScreen

        if not self.run_active and not self._need_plan():
            return
        self.push_screen(LaunchScreen())

    def start_run(self, source: RunSource) -> None:
        """Start a training run owned by the App (it outlives the launch screen)."""
        if self.run_active:
            self.notify("A run is already active.", severity="warning")
            return
        self.run_source = source
        self.run_active = True
        self.run_lines, self.run_progress, self.run_started, self.run_finished = [], None, None, None
        self._run_worker(source)

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _run_worker(self, source: RunSource) -> None:
        def post(event: RunEvent) -> None:
            self.post_message(RunMessage(event))

        try:
            source.run(post)
        except Exception as exc:
            post(OutputLines((f"launcher error: {exc!r}",)))
            post(RunFinished(RunResult.before_start(1, "failed", str(exc))))

    @on(RunMessage)
    def _run_event(self, message: RunMessage) -> None:
        from ftplan.tui.screens.launch import LaunchScreen, started_lines, stopping_line

        event = message.event
        if isinstance(event, RunStarted):
            self.run_started = event
            self.run_lines.extend(started_lines(event))  # replayed when the launch screen reopens
        elif isinstance(event, Stopping):
            self.run_lines.append(stopping_line(event))
        elif isinstance(event, OutputLines):
            self.run_lines.extend(event.lines)
        elif isinstance(event, ProgressUpdate):
            self.run_progress = event
        elif isinstance(event, RunFinished):
            self.run_finished = event.result
            self.run_active = False
            self._close_stop_dialog()
        for screen in self.screen_stack:
            if isinstance(screen, LaunchScreen):
                screen.run_event(event)
        if isinstance(event, RunFinished) and self._quit_after_run:
            self.exit(0)

    def _close_stop_dialog(self) -> None:
        """The run ended by itself while "Stop the training run?" was open: that question is moot."""
        dialog, self._stop_dialog = self._stop_dialog, None
        if dialog is not None and dialog.is_current:
            dialog.dismiss(False)

    def stop_run(self) -> None:
        """Stop the active run without asking (callers ask first)."""
        if self.run_active and self.run_source is not None:
            self._stop_worker(self.run_source)

    @work(thread=True, group="stop", exit_on_error=False)
    def _stop_worker(self, source: RunSource) -> None:
        source.stop()

    def action_stop_run(self) -> None:
        if not self.run_active:
            return
        from ftplan.tui.screens.confirm import ConfirmScreen

        self._stop_dialog = ConfirmScreen(
            "Stop the training run? (SIGTERM, then SIGKILL after the grace period)", "Stop", "Keep running"
        )
        self.push_screen(self._stop_dialog, lambda yes: self.stop_run() if yes else None)

    @property
    def unsaved(self) -> bool:
        """Answers edited since they were read or saved (a file's, or a fresh form's defaults)."""
        if not self.user_edited:
            return False
        return self.form.state().to_raw() != self._saved_raw

    async def action_quit(self) -> None:
        from ftplan.tui.screens.confirm import ConfirmScreen

        if not self.run_active:
            if not self.unsaved:
                self.exit(0)
                return
            where = f" to {self.answers_path}" if self.answers_path else ""
            self.push_screen(
                ConfirmScreen(
                    f"The answers have changes not saved{where} (ctrl+s saves). Quit anyway?", "Quit", "Stay"
                ),
                lambda yes: self.exit(0) if yes else None,
            )
            return

        def answer(yes: bool | None) -> None:
            if yes:
                from ftplan.launch.runner import DEFAULT_GRACE_S

                self._quit_after_run = True
                self.stop_run()
                # The launcher kills the run when its grace period ends; quit anyway a little later.
                self.set_timer(DEFAULT_GRACE_S + 10, lambda: self.exit(1))

        self.push_screen(ConfirmScreen("A training run is active. Stop it and quit?", "Stop and quit", "Stay"), answer)

    def on_unmount(self) -> None:
        """However the app ends, a run it started does not outlive it (SIGTERM, then the
        launcher's SIGKILL): its worker thread would otherwise hold the process open."""
        if self.run_active and self.run_source is not None:
            self.run_source.stop()

    # Command palette ----------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "answers: save", "Save the answers (TOML, only what differs from the defaults)", self.action_save
        )
        yield SystemCommand("answers: save as…", "Save the answers to another file", self.action_save_as)
        yield SystemCommand("plan: export", "Preview and write the training project", self.action_export)
        yield SystemCommand("plan: launch", "Preflight checks, then run the exported project here", self.action_launch)
        yield SystemCommand(
            "view: questions / plan", "Switch panes when the terminal is narrow", self.action_toggle_view
        )
        yield SystemCommand("theme: dark / light", "Toggle between the dark and light themes", self.action_toggle_dark)
        yield from super().get_system_commands(screen)
