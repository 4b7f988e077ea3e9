"""What the shells find out before planning: the local GPUs and the data file's size.

Kept out of the planner so that planning stays pure and fast; both lookups are cheap
(``nvidia-smi`` with a short timeout, one pass over a local file) and never import torch.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ftplan.planner import Answers, Context

CHARS_PER_TOKEN = 4.0  # English text with BPE tokenizers: ~4 characters per token (OpenAI's rule of thumb)


@dataclass(frozen=True)
class DetectedGPU:
    name: str
    memory_mib: int
    free_mib: int
    index: int


def detect_gpus(timeout: float = 3.0) -> list[DetectedGPU]:
    """GPUs as nvidia-smi lists them; empty when there is none or no driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for row in csv.reader(out.splitlines()):
        try:
            index, name, total, free = (c.strip() for c in row)
            gpus.append(DetectedGPU(name, int(float(total)), int(float(free)), int(index)))
        except ValueError:
            continue
    return gpus


def _example_text(record) -> str:
    if isinstance(record, dict):
        if "messages" in record and isinstance(record["messages"], list):
            return " ".join(str(m.get("content", "")) for m in record["messages"] if isinstance(m, dict))
        if "text" in record:
            return str(record["text"])
        return " ".join(str(v) for v in record.values() if isinstance(v, str))
    return str(record)


def measure_data(path: str, limit: int = 200_000) -> tuple[int, int] | None:
    """(examples, mean tokens) of a local .jsonl/.json/.csv file, or None if not measurable.

    Tokens are estimated from characters (no tokenizer is loaded); parquet needs pyarrow and
    is measured only when it is installed.
    """
    p = Path(path).expanduser()
    if not path or not p.is_file():
        return None
    try:
        texts: list[str] = []
        if p.suffix == ".jsonl":
            with p.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        texts.append(_example_text(json.loads(line)))
        elif p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            texts = [_example_text(r) for r in (data if isinstance(data, list) else data.get("data", []))]
        elif p.suffix == ".csv":
            with p.open(encoding="utf-8", newline="") as fh:
                texts = [_example_text(r) for r in csv.DictReader(fh)]
        elif p.suffix == ".parquet":
            import pyarrow.parquet as pq  # optional; installed with datasets

            table = pq.read_table(p)
            texts = [_example_text(r) for r in table.slice(0, limit).to_pylist()]
        else:
            return None
    except (OSError, ValueError, ImportError, UnicodeDecodeError):
        return None
    if not texts:
        return None
    sample = texts[:limit]
    mean_chars = sum(len(t) for t in sample) / len(sample)
    return len(texts), max(1, round(mean_chars / CHARS_PER_TOKEN))


def build_context(answers: Answers, detect: bool = True) -> Context:
    detected = detect_gpus() if detect and answers.hardware.gpu == "auto" else []
    measured = None
    if answers.data.path and (answers.data.examples is None or answers.data.avg_tokens is None):
        measured = measure_data(answers.data.path)
    return Context(
        detected_gpu=detected[0].name if detected else None,
        detected_gpus=len(detected),
        examples=measured[0] if measured else None,
        avg_tokens=measured[1] if measured else None,
    )
