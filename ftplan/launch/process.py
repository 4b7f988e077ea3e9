"""The child process behind a run: started in its own session so that the whole group can be stopped.

``Process`` is what the runner needs; ``popen_process`` is the real factory. Tests and the TUI
may inject any other factory with the same shape.
"""

from __future__ import annotations

import os
import subprocess
from typing import IO, Protocol


class Process(Protocol):
    pid: int
    stdout: IO[bytes]

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to every process of the run; False when none is left."""
        ...

    def group_alive(self) -> list[int]:
        """PIDs of the run's processes still running (zombies excluded)."""
        ...

    def refresh(self) -> None:
        """Note the run's current descendants (called while the run goes)."""
        ...


def proc_table() -> dict[int, tuple[str, int, int, float]]:
    """pid -> (state, ppid, pgrp, start time) for every process, through psutil (Linux, macOS and
    the BSDs alike): torchrun's workers sit in sessions of their own, and a stop must find them on
    every platform the launcher runs on. State is "Z" for a zombie, "X" for a dead one, else "R"."""
    import psutil

    table: dict[int, tuple[str, int, int, float]] = {}
    for proc in psutil.process_iter(["ppid", "status", "create_time"]):
        info = proc.info
        try:
            pgrp = os.getpgid(proc.pid)
        except (ProcessLookupError, PermissionError, OSError):
            continue
        status = info.get("status")
        state = "Z" if status == psutil.STATUS_ZOMBIE else "X" if status == psutil.STATUS_DEAD else "R"
        if info.get("ppid") is None or info.get("create_time") is None:
            continue
        table[proc.pid] = (state, int(info["ppid"]), pgrp, float(info["create_time"]))
    return table


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return sorted(pid for pid, (state, _, pgrp, _) in proc_table().items() if pgrp == pgid and state not in "ZX")


def descendants(root: int, table: dict[int, tuple[str, int, int, float]] | None = None) -> dict[int, float]:
    """pid -> start time of every live descendant of ``root``."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        state, _, _, start = table[pid]
        if state not in "ZX":
            found[pid] = start
        todo.extend(children.get(pid, []))
    return found


class PopenProcess:
    """subprocess.Popen with stdout+stderr merged, in a new session (its own process group).

    torchrun starts each worker in a session of its own, so the process group alone does not
    hold the whole run: the descendants seen while it runs are remembered (with their start
    times, so a reused PID is never signalled) and signalled with the group.
    """

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
        self._known: dict[int, float] = {}

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def refresh(self) -> None:
        if self._popen.poll() is None:
            self._known.update(descendants(self.pid))

    def _alive_known(self, table) -> list[int]:
        return [
            p for p, start in self._known.items() if p in table and table[p][3] == start and table[p][0] not in "ZX"
        ]

    def signal_group(self, sig: int) -> bool:
        self.refresh()
        sent = False
        try:
            os.killpg(self.pid, sig)
            sent = True
        except (ProcessLookupError, PermissionError):
            pass
        table = proc_table()
        for pid in self._alive_known(table):
            try:
                os.kill(pid, sig)
                sent = True
            except (ProcessLookupError, PermissionError):
                continue
        return sent

    def group_alive(self) -> list[int]:
        table = proc_table()
        group = {pid for pid, (state, _, pgrp, _) in table.items() if pgrp == self.pid and state not in "ZX"}
        return sorted(group | set(self._alive_known(table)))


def popen_process(argv: list[str], env: dict[str, str], cwd: str) -> Process:
    return PopenProcess(argv, env, cwd)
