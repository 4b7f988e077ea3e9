"""A RunSource the tests drive by hand: fake the source, not the app."""

from __future__ import annotations

import threading

from ftplan.tui.runs import Finished, Post, RunEvent


class FakeSource:
    """A source whose events the caller posts: `source.post(Progress(...))`.

    `run()` blocks until `finish()` or `stop()` (or returns at once with `block=False`, for
    snapshots that must exit with the run still showing as active); `stop()` ends with exit
    code -15 like SIGTERM, marked as stopped by the user.
    """

    def __init__(self, block: bool = True) -> None:
        self.block = block
        self._post: Post | None = None
        self._done = threading.Event()
        self._ready = threading.Event()
        self.stopped = False

    def run(self, post: Post) -> None:
        self._post = post
        self._ready.set()
        if self.block:
            self._done.wait()

    def wait_started(self, timeout: float = 5.0) -> bool:
        return self._ready.wait(timeout)

    def post(self, event: RunEvent) -> None:
        assert self._post is not None, "run() has not started"
        self._post(event)
        if isinstance(event, Finished):
            self._done.set()

    def finish(self, exit_code: int = 0, advice: str = "") -> None:
        self.post(Finished(exit_code, advice))

    def stop(self) -> None:
        self.stopped = True
        if self._post is not None and not self._done.is_set():
            self.post(Finished(-15, "stopped by the user", stopped=True))
        self._done.set()
