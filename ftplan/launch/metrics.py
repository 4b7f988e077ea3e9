"""Follow the JSON-lines metrics file that train.py appends to (one object per logging step)."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsFollower:
    """Reads only what was appended since it started; half-written last lines wait for the next poll."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0
        self._partial = b""

    def poll(self) -> list[dict]:
        if not self.path.is_file():
            return []
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # truncated or replaced: start over
                self.offset, self._partial = 0, b""
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        records = []
        for raw in complete:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                records.append(obj)
        return records
