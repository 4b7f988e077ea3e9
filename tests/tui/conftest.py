"""Shared helpers: the app factory the CLI uses, with the machine's context faked."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TypeVar

import pytest
from textual.screen import Screen
from textual.widgets import Input

from ftplan.planner import parse_answers
from ftplan.tui.app import FtplanApp
from ftplan.tui.screens import ExportScreen

S = TypeVar("S", bound=Screen)


def make_app(answers: dict | None = None, path=None, detected: list[str] | None = None, **kwargs) -> FtplanApp:
    """The app with no GPU detected (or `detected`), and cursor blink frozen."""
    parsed = parse_answers(answers) if answers is not None else None
    kwargs.setdefault("cursor_blink", False)
    kwargs.setdefault("detect_host_ram", None)  # as `--answers` without detection: the same on every machine
    return FtplanApp(parsed, path, detect=lambda: list(detected or []), **kwargs)


FROZEN_PLANS = Path(__file__).parent / "__snapshots__" / "plans"
"""The plans the snapshot tests draw, a file for each set of answers, refreshed by `--snapshot-update`."""


@pytest.fixture
def frozen_planner(request):
    """A planner that returns the plan frozen for these answers, so that the pictures of the
    screens move with the screens, not with the planner (whose numbers the golden set holds).

    With `--snapshot-update` it plans for real and freezes what it planned. Answers that have
    no frozen plan fail the test at teardown, naming the file that is missing."""
    import hashlib

    from ftplan.planner.plan import Plan, make_plan

    update = bool(request.config.option.update_snapshots)
    misses: list[Path] = []

    def plan_fn(answers, context):
        key = json.dumps(answers.model_dump(mode="json"), sort_keys=True)
        path = FROZEN_PLANS / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        if update:
            plan = make_plan(answers, context)
            FROZEN_PLANS.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # xdist workers may freeze the same answers
            tmp.write_text(plan.to_json() + "\n")
            tmp.replace(path)
            return plan
        if not path.exists():
            misses.append(path)
            raise LookupError(f"no frozen plan {path.name}")
        return Plan.model_validate_json(path.read_text())

    yield plan_fn
    assert not misses, f"no frozen plan for these answers ({', '.join(map(str, misses))}): run with --snapshot-update"


async def wait_until(pilot, condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"{what} never became true within {timeout:g} s")


async def settle(pilot) -> None:
    """Wait until the debounce fired, the plan worker finished and its result is shown."""
    app = pilot.app
    settled_checks = 0
    for _ in range(500):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        # Settled twice in a row, a frame apart: what a handler changed has been laid out too.
        settled_checks = settled_checks + 1 if app.plan_settled else 0
        if settled_checks == 2:
            return
        await pilot.pause(0.02)
    raise AssertionError("the plan never settled")


async def open_screen(pilot, key: str, screen_type: type[S]) -> S:
    """Press ``key`` and return the screen it opened, checked to be a ``screen_type``."""
    await pilot.press(key)
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, screen_type), screen
    return screen


async def open_export(pilot, folder, timeout: float = 5.0) -> ExportScreen:
    """Open the export screen on ``folder`` and wait until its preview of that folder is shown."""
    screen = await open_screen(pilot, "ctrl+e", ExportScreen)
    screen.query_one("#export-dir", Input).value = str(folder)
    await wait_until(
        pilot, lambda: screen.files and screen._key()[0] == str(folder), timeout=timeout, what="the export preview"
    )
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return screen


@pytest.fixture
def example_answers() -> dict:
    return {
        "objective": {"kind": "instruction", "variants": 1},
        "model": {"name": "meta-llama/Llama-3.1-8B"},
        "data": {
            "path": "data/train.jsonl",
            "format": "messages",
            "examples": 50000,
            "avg_tokens": 400,
            "max_seq_len": 2048,
            "epochs": 2,
        },
        "hardware": {"gpu": "A100-80GB", "gpus_per_node": 1},
        "budget": {"usd": 500, "hours": 24},
    }


def text_of(widget) -> str:
    """The plain text a Static (or any widget) shows, whatever renderable it holds."""
    import io

    from rich.console import Console

    content = getattr(widget, "renderable", None) or (widget.content if hasattr(widget, "content") else widget.render())
    if isinstance(content, str):
        return content
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(content)
    return console.export_text()
