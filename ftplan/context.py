"""What the shells find out before planning: the local GPUs, host RAM and the data file.

Kept out of the planner so that planning stays pure and fast. GPU and RAM lookups are cheap
(``nvidia-smi`` with a short timeout, ``/proc/meminfo``) and never import torch. The data file
is read here: every record is checked (a bounded number for large files), and a sample is
tokenized with the model's own tokenizer and chat template when they are on disk (the model
folder or the HF cache, never the network). Importing transformers costs seconds, so it is
paid only when there is both a data file and a tokenizer to read it with.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from ftplan import host
from ftplan.host import GpuFacts
from ftplan.planner import Answers, AnswersError, Context, Problem
from ftplan.planner.models import hub_snapshots
from ftplan.planner.timecost import DataSample

CHARS_PER_TOKEN = 4.0  # English text with BPE tokenizers: ~4 characters per token (OpenAI's rule of thumb)
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
CHECK_LIMIT = 200_000
"""Records parsed and checked; a longer file is counted past this without parsing."""
SAMPLE_LIMIT = 2_000
"""Records whose tokens are counted (spread evenly over the checked ones)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# The exported train.py uses this template when the tokenizer has none (base models); counting
# with the same template counts the same tokens.
SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def detect_gpus() -> list[GpuFacts]:
    """This machine's GPUs (``ftplan.host``: nvidia-smi, else NVML); empty when there is none."""
    return list(host.detect_gpus(need_gpus=False)[0])


def detect_host_ram() -> int | None:
    """Total host memory of this machine in bytes, or None."""
    return host.total_memory()


# ---- reading the data file ----------------------------------------------------------------


class DataProblem(ValueError):
    """The data file cannot be trained on; the message names the file and the record's line."""


def _problem(path: str, message: str) -> AnswersError:
    return AnswersError([Problem("data.path", f"{path}: {message}")])


def looks_local(path: str) -> bool:
    """A path rather than a hub dataset id: it exists, starts like a path, or ends like a data file."""
    return (
        path.startswith((".", "/", "~"))
        or Path(path).suffix.lower() in (*DATA_SUFFIXES, ".txt")
        or Path(path).expanduser().exists()
    )


def _jsonl_records(p: Path, limit: int):
    """(records with their line numbers, total records) of a JSON Lines file."""
    records: list[tuple[int, object]] = []
    total = 0
    with p.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            total += 1
            if len(records) >= limit:
                continue  # counted, not parsed
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataProblem(f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    return records, total


def _json_records(p: Path, limit: int):
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataProblem(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataProblem('expected a JSON list of records (or {"data": [...]})')
    return [(i, r) for i, r in enumerate(data[:limit], start=1)], len(data)


def _csv_records(p: Path, limit: int):
    records: list[tuple[int, object]] = []
    total = 0
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                total += 1
                if len(records) < limit:
                    records.append((reader.line_num, row))
        except csv.Error as exc:
            raise DataProblem(f"line {reader.line_num} is not valid CSV ({exc})") from None
    return records, total


def _parquet_records(p: Path, limit: int):
    try:
        import pyarrow.parquet as pq  # installed with datasets
    except ImportError:
        raise DataProblem("reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001 (pyarrow raises its own error types for broken files)
        raise DataProblem(f"not a readable parquet file ({exc})") from None
    return [(i, r) for i, r in enumerate(table.slice(0, limit).to_pylist(), start=1)], table.num_rows


READERS = {".jsonl": _jsonl_records, ".json": _json_records, ".csv": _csv_records, ".parquet": _parquet_records}


def read_records(p: Path, limit: int = CHECK_LIMIT):
    """(up to ``limit`` records with their line/record numbers, total records) of a data file."""
    reader = READERS.get(p.suffix.lower())
    if reader is None:
        raise DataProblem(f"expected a {'/'.join(DATA_SUFFIXES)} file")
    try:
        records, total = reader(p, limit)
    except UnicodeDecodeError as exc:
        raise DataProblem(f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataProblem(f"cannot read: {exc.strerror}") from None
    if not total:
        raise DataProblem("is empty (no records)")
    return records, total


def detect_format(record: object) -> str:
    """The format the exported train.py would detect from a record's columns."""
    cols = set(record) if isinstance(record, dict) else set()
    if "messages" in cols or "conversations" in cols:
        return "messages"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "text" in cols:
        return "text"
    raise DataProblem(
        f"cannot tell the data format from the columns {sorted(cols)}: expected messages, "
        "instruction/output (alpaca), prompt/completion or text; set data.format"
    )


REQUIRED = {"alpaca": ("instruction", "output"), "prompt_completion": ("prompt", "completion"), "text": ("text",)}


def as_conversation(record: object, fmt: str, where: str) -> list[dict] | str:
    """The record as chat turns (instruction formats) or as one text, as train.py reads it."""
    if not isinstance(record, dict):
        raise DataProblem(f"{where} is not an object with named columns")
    if fmt == "messages":
        turns = record.get("messages", record.get("conversations"))
        if turns is None:
            raise DataProblem(f"{where} has no 'messages' column (format messages; its columns: {sorted(record)})")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise DataProblem(f"{where}: 'messages' must be a list of {{role, content}} objects")
        out = []
        for t in turns:
            role, content = t.get("role", t.get("from")), t.get("content", t.get("value"))
            if role is None or not isinstance(content, str):
                raise DataProblem(f"{where}: every turn needs a role and a text content")
            out.append({"role": ROLES.get(role, role), "content": content})
        return out
    missing = [c for c in REQUIRED[fmt] if c not in record]
    if missing:
        raise DataProblem(
            f"{where} has no {', '.join(repr(c) for c in missing)} column (format {fmt}; its columns: {sorted(record)})"
        )
    if fmt == "text":
        return str(record["text"])
    if fmt == "alpaca":
        prompt = str(record["instruction"]) + (f"\n\n{record['input']}" if record.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(record["output"])}]
    return [
        {"role": "user", "content": str(record["prompt"])},
        {"role": "assistant", "content": str(record["completion"])},
    ]


# ---- counting tokens ----------------------------------------------------------------------


def tokenizer_folder(model: str) -> Path | None:
    """A folder on this machine with the model's tokenizer: the model folder or its HF cache snapshot."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder if any((folder / f).is_file() for f in TOKENIZER_FILES) else None
    repo = hub_snapshots(model)
    if not repo.is_dir():
        return None
    found = [s for s in repo.iterdir() if any((s / f).is_file() for f in TOKENIZER_FILES)]
    return max(found, key=lambda s: s.stat().st_mtime) if found else None


def load_tokenizer(folder: Path):
    """The tokenizer train.py would load, with its fallback chat template; None if it will not load."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # noqa: BLE001 (any failure means: estimate instead, and say so)
        return None
    if not getattr(tok, "chat_template", None):
        tok.chat_template = SIMPLE_CHAT_TEMPLATE
    return tok


class CharCounter:
    """Tokens estimated as characters / 4 when no tokenizer is on disk."""

    name = None

    def text(self, text: str) -> int:
        return max(1, round(len(text) / CHARS_PER_TOKEN))

    def chat(self, turns: list[dict], train_answers: bool) -> tuple[int, int]:
        total = self.text("".join(t["content"] for t in turns))
        answers = sum(len(t["content"]) for t in turns if t["role"] == "assistant") / CHARS_PER_TOKEN
        return total, round(answers) if train_answers else total

    def prompt(self, turns: list[dict]) -> int:
        """Tokens before the first answer."""
        first = next((i for i, t in enumerate(turns) if t["role"] == "assistant"), len(turns))
        return self.text("".join(t["content"] for t in turns[:first])) if first else 0


class TokenizerCounter:
    """Tokens as the run tokenizes them: the chat template for turns, as TRL's SFTTrainer does;
    an assistant turn's tokens are the prompt-and-answer length less the prompt's (TRL's own
    prompt/completion split)."""

    def __init__(self, tok, name: str):
        self.tok, self.name = tok, name

    def _ids(self, turns: list[dict], add_generation_prompt: bool = False) -> int:
        out = self.tok.apply_chat_template(turns, tokenize=True, add_generation_prompt=add_generation_prompt)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return len(ids)

    def text(self, text: str) -> int:
        ids = self.tok(text)["input_ids"]
        eos = self.tok.eos_token_id
        return len(ids) + (1 if eos is not None and (not ids or ids[-1] != eos) else 0)  # TRL appends EOS

    def prompt(self, turns: list[dict]) -> int:
        """Tokens before the first answer's first token, as the chat template lays them out."""
        first = next((i for i, t in enumerate(turns) if t["role"] == "assistant"), None)
        if first is None:
            return self._ids(turns)
        return self._ids(turns[:first], add_generation_prompt=True) if first else 0

    def chat(self, turns: list[dict], train_answers: bool) -> tuple[int, int]:
        total = self._ids(turns)
        if not train_answers:
            return total, total
        answers = 0
        for i, turn in enumerate(turns):
            if turn["role"] == "assistant":
                answers += max(0, self._ids(turns[: i + 1]) - self._ids(turns[:i], add_generation_prompt=True))
        return total, answers


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def check_data_file(p: Path, fmt: str, limit: int | None = None) -> tuple[list, int, str]:
    """(the checked records as turns or text, total records, format) of a local data file;
    DataProblem says what is wrong (a folder, no file, empty, a broken record, a missing column)."""
    if p.is_dir():
        raise DataProblem(f"is a folder; expected a {'/'.join(DATA_SUFFIXES)} file")
    if not p.is_file():
        raise DataProblem("no such file")
    records, total = read_records(p, CHECK_LIMIT if limit is None else limit)
    chosen = fmt if fmt != "auto" else detect_format(records[0][1])
    unit = "record" if p.suffix.lower() in (".json", ".parquet") else "line"
    return [as_conversation(r, chosen, f"{unit} {n}") for n, r in records], total, chosen


def measure_sample(path: str, fmt: str, train_on: str | None, model: str, objective: str = "instruction") -> DataSample:
    """Check a local data file and count a sample's tokens; raises AnswersError naming data.path."""
    try:
        rows, total, chosen = check_data_file(Path(path).expanduser(), fmt)
    except DataProblem as exc:
        raise _problem(path, str(exc)) from None
    train_answers = _trains_answers(train_on, chosen, objective)
    counter = _counter(model)
    lengths, trained, prompts = [], [], []
    for row in _spread(rows, SAMPLE_LIMIT):
        if isinstance(row, str):
            n = counter.text(row)
            lengths.append(n)
            trained.append(n)
            prompts.append(0)
        else:
            n, t = counter.chat(row, train_answers)
            lengths.append(n)
            trained.append(t)
            prompts.append(counter.prompt(row) if train_answers else 0)
    return DataSample(
        examples=total,
        lengths=tuple(lengths),
        trained=tuple(trained),
        prompts=tuple(prompts),
        tokenizer=counter.name,
        checked=len(rows),
        format=chosen,
        train_on="answers" if train_answers else "all",
    )


def _trains_answers(train_on: str | None, fmt: str, objective: str) -> bool:
    """train_on = None: answers for instruction formats, all tokens for text and domain knowledge."""
    if train_on is not None:
        return train_on == "answers" and fmt != "text"
    return fmt != "text" and objective != "domain_knowledge"


def _counter(model: str):
    folder = tokenizer_folder(model)
    tok = load_tokenizer(folder) if folder else None
    return TokenizerCounter(tok, f"{model} tokenizer ({folder})") if tok is not None else CharCounter()


# ---- the context ---------------------------------------------------------------------------


def data_context(answers: Answers) -> tuple[DataSample | None, list[str]]:
    """The measured sample of ``data.path`` and notes; AnswersError for a file that cannot train.

    A local path that is not on this machine is bad input, unless the answers give both
    ``examples`` and ``avg_tokens`` (planning here for data that lives on the training machine;
    the launch preflight checks it there). A hub dataset id is not downloaded: it is noted.
    """
    d = answers.data
    if not d.path:
        return None, []
    note = unread_data_note(d.path, d.examples, d.avg_tokens)
    if note:
        return None, [note]
    sample = measure_sample(d.path, d.format, d.train_on, answers.model.name, answers.objective.kind)
    return sample, []


def unread_data_note(path: str, examples: object, avg_tokens: object) -> str | None:
    """Why ``path`` is not read (a hub id; a local file elsewhere with both counts given), or None
    when it is read. The app's context adds the same note as the headless plan's."""
    if not looks_local(path):
        return f"data.path: {path} is a hub dataset id; it was not downloaded or measured."
    if not Path(path).expanduser().exists() and examples and avg_tokens:
        return (
            f"data.path: {path} is not on this machine; planned from data.examples and data.avg_tokens "
            "(the launch preflight checks the file where the run starts)."
        )
    return None


def build_context(answers: Answers, detect: bool = True) -> Context:
    """Everything the planner needs from this machine; AnswersError for a broken data.path."""
    detected = [g.name for g in detect_gpus()] if detect and answers.hardware.gpu == "auto" else []
    sample, notes = data_context(answers)
    return plan_context(detected, sample, notes, detect_host_ram() if detect else None)


def plan_context(
    detected_gpus: Sequence[str], sample: DataSample | None, notes: Sequence[str], host_ram: int | None
) -> Context:
    """What this machine found, as the planner's Context: the one assembly the headless plan and
    the app share (the app measured its data and detected its GPUs in workers)."""
    return Context(
        detected_gpu=detected_gpus[0] if detected_gpus else None,
        detected_gpus=len(detected_gpus),
        examples=sample.examples if sample else None,
        avg_tokens=sample.mean_tokens if sample else None,
        data_sample=sample,
        data_notes=tuple(notes),
        host_ram=host_ram,
    )


def measure_local_data(path: str, fmt: str, train_on: str | None, model: str, objective: str) -> DataSample | None:
    """``measure_sample`` of a data file on this machine, None for anything else (a hub dataset
    id, a path elsewhere): what the app measures while the user types, exactly as the headless
    plan does. AnswersError for a local file that cannot train."""
    if not path or not looks_local(path) or not Path(path).expanduser().exists():
        return None
    return measure_sample(path, fmt, train_on, model, objective)
