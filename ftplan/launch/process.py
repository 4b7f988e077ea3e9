"""The child process behind a run: started in its own session so that the whole group can be stopped.

``Process`` is what the runner needs; ``popen_process`` is the real factory. Tests and the TUI
may inject any other factory with the same shape.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Protocol


class Process(Protocol):
    pid: int
    stdout: IO[bytes]

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group; False when the group is gone."""
        ...

    def group_alive(self) -> list[int]:
        """PIDs of the group's processes still running (zombies excluded)."""
        ...


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``, from /proc (Linux)."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 3 and rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


class PopenProcess:
    """subprocess.Popen with stdout+stderr merged, in a new session (its own process group)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str):
        self._popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self._popen.pid
        self.stdout = self._popen.stdout

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def group_alive(self) -> list[int]:
        return group_members(self.pid)


def popen_process(argv: list[str], env: dict[str, str], cwd: str) -> Process:
    return PopenProcess(argv, env, cwd)


SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def signal_name(number: int) -> str:
    return SIGNAL_NAMES.get(number, f"signal {number}")
