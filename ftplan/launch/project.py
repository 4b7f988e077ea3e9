"""What `ftplan launch` needs to know about an exported project, read and validated at once.

The exported folder holds ``plan.json`` (the plan that produced it) and ``train_config.toml``
(what ``train.py`` reads). Every problem is collected and reported in one message that names
the file and the field, so a broken folder is one clear error (exit 2), never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TRAIN_SCRIPT = "train.py"
TRAIN_CONFIG = "train_config.toml"
PLAN_FILE = "plan.json"
MANIFEST = ".ftplan-manifest.json"
DEFAULT_METRICS_FILE = "metrics.jsonl"
DEFAULT_OUTPUT_DIR = "output"


class ProjectError(Exception):
    """The project folder is missing files or they do not parse; ``str`` is the one message."""

    def __init__(self, directory: str, problems: list[str]):
        self.directory = directory
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"ftplan launch: {self.directory} is not a runnable exported project:"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append("  hint: export one with `ftplan --answers FILE --out DIR`.")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProjectInfo:
    """The facts about one exported project that launching, preflight and progress use."""

    directory: str
    method: str
    settings: dict
    model_name: str
    gpu: str
    gpu_memory: int
    gpus_per_node: int
    nodes: int
    usd_per_gpu_hour: float
    memory_total: int
    """Predicted per-GPU peak including ``memory_overhead`` (host memory on a CPU plan)."""
    memory_overhead: int
    cpu_memory: int
    fits: bool
    hardware_needed: str = ""
    warnings: tuple[str, ...] = ()
    steps: int = 0
    hours: float = 0.0
    tokens_per_second: float = 0.0
    checkpoint_bytes: int = 0
    checkpoints_kept: int = 0
    output_dir: str = DEFAULT_OUTPUT_DIR
    metrics_file: str = DEFAULT_METRICS_FILE
    deepspeed: str = ""
    data_path: str = ""
    trust_remote_code: bool = False
    answers: dict = field(default_factory=dict)
    train_script: str = TRAIN_SCRIPT
    config_file: str = TRAIN_CONFIG

    @property
    def is_cpu(self) -> bool:
        return self.gpu.lower() == "cpu"

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def precision(self) -> str:
        return str(self.settings.get("precision", "fp32"))

    @property
    def attention(self) -> str:
        return str(self.settings.get("attention", "sdpa"))

    @property
    def allocated_peak(self) -> int:
        """What ``torch.cuda.max_memory_allocated()`` should report at the step's peak."""
        return max(0, self.memory_total - self.memory_overhead)

    @property
    def metrics_path(self) -> Path:
        """The metrics file: ``logging.metrics_file`` inside ``checkpoints.output_dir`` unless absolute."""
        p = Path(self.metrics_file).expanduser()
        return p if p.is_absolute() else self.path(self.output_dir) / p

    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.directory) / p


def _get(data: dict, dotted: str, problems: list[str], source: str, kind: type | tuple = object):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            problems.append(f"{source}: `{dotted}` is missing")
            return None
        node = node[part]
    if not isinstance(node, kind) or (isinstance(node, bool) and bool not in _tuple(kind)):
        problems.append(f"{source}: `{dotted}` should be {_kind_name(kind)}, not {node!r}")
        return None
    return node


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "a table", bool: "true/false"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def load_project(directory: str | Path) -> ProjectInfo:
    """Read and check DIR/plan.json and DIR/train_config.toml; raise ProjectError listing every problem."""
    d = Path(directory).expanduser()
    problems: list[str] = []
    if not d.is_dir():
        raise ProjectError(str(directory), [f"{directory} is not a folder"])
    for name in (TRAIN_SCRIPT, TRAIN_CONFIG, PLAN_FILE):
        if not (d / name).is_file():
            problems.append(f"{name} is missing")
    plan: dict = {}
    config: dict = {}
    if (d / PLAN_FILE).is_file():
        try:
            plan = json.loads((d / PLAN_FILE).read_text(encoding="utf-8"))
            if not isinstance(plan, dict):
                problems.append(f"{PLAN_FILE}: not a JSON object")
                plan = {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{PLAN_FILE}: cannot be read as JSON ({_short(exc)})")
    if (d / TRAIN_CONFIG).is_file():
        try:
            config = tomllib.loads((d / TRAIN_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{TRAIN_CONFIG}: cannot be read as TOML ({_short(exc)})")
    if problems and not (plan and config):
        raise ProjectError(str(directory), problems)

    num = (int, float)
    method = config.get("method", {}).get("kind") if isinstance(config.get("method"), dict) else None
    if method is None:
        method = (
            (plan.get("recommendation") or {}).get("method") if isinstance(plan.get("recommendation"), dict) else None
        )
    if method not in ("full", "lora", "qlora"):
        problems.append(f"{TRAIN_CONFIG}: `method.kind` should be full, lora or qlora, not {method!r}")
        method = None
    hw = _get(plan, "hardware", problems, PLAN_FILE, dict) or {}
    gpu = _get({"hardware": hw}, "hardware.gpu", problems, PLAN_FILE, str) if hw else None
    gpus_per_node = _get({"hardware": hw}, "hardware.gpus_per_node", problems, PLAN_FILE, int) if hw else None
    nodes = _get({"hardware": hw}, "hardware.nodes", problems, PLAN_FILE, int) if hw else None
    mp: dict = {}
    if method:
        mp = _get(plan, f"methods.{method}", problems, PLAN_FILE, dict) or {}
    settings = _get({"m": mp}, "m.settings", [], PLAN_FILE, dict) if mp else None
    if mp and settings is None:
        problems.append(f"{PLAN_FILE}: `methods.{method}.settings` is missing")
    memory = (mp.get("memory") if isinstance(mp.get("memory"), dict) else None) if mp else None
    if mp and memory is None:
        problems.append(f"{PLAN_FILE}: `methods.{method}.memory` is missing")
    total = memory.get("total") if memory else None
    if memory is not None and not isinstance(total, int):
        problems.append(f"{PLAN_FILE}: `methods.{method}.memory.total` should be an integer")
    for key, value in (("hardware.gpus_per_node", gpus_per_node), ("hardware.nodes", nodes)):
        if isinstance(value, int) and value < 1:
            problems.append(f"{PLAN_FILE}: `{key}` should be at least 1, not {value}")
    sections = {k: config.get(k, {}) for k in ("model", "training", "checkpoints", "logging", "data")}
    for k, v in sections.items():
        if not isinstance(v, dict):
            problems.append(f"{TRAIN_CONFIG}: `[{k}]` should be a table")
            sections[k] = {}
    strings = {
        "checkpoints.output_dir": sections["checkpoints"].get("output_dir", DEFAULT_OUTPUT_DIR),
        "logging.metrics_file": sections["logging"].get("metrics_file", DEFAULT_METRICS_FILE),
        "training.deepspeed": sections["training"].get("deepspeed", ""),
        "data.path": sections["data"].get("path", ""),
    }
    for key, value in strings.items():
        if not isinstance(value, str):
            problems.append(f"{TRAIN_CONFIG}: `{key}` should be a string, not {value!r}")
    if isinstance(strings["training.deepspeed"], str) and strings["training.deepspeed"]:
        if not (d / strings["training.deepspeed"]).is_file():
            problems.append(
                f"{strings['training.deepspeed']} is missing (named by {TRAIN_CONFIG} `training.deepspeed`)"
            )
    if problems:
        raise ProjectError(str(directory), problems)

    time = mp.get("time") if isinstance(mp.get("time"), dict) else {}
    cost = mp.get("cost") if isinstance(mp.get("cost"), dict) else {}
    model_name = sections["model"].get("name_or_path") or (plan.get("model") or {}).get("name", "")
    return ProjectInfo(
        directory=str(d),
        method=method,
        settings=dict(settings),
        model_name=str(model_name),
        gpu=gpu,
        gpu_memory=int(hw.get("gpu_memory", 0) or 0),
        gpus_per_node=gpus_per_node,
        nodes=nodes,
        usd_per_gpu_hour=float(hw.get("usd_per_gpu_hour", 0.0) or 0.0),
        memory_total=int(total),
        memory_overhead=int(memory.get("overhead", 0) or 0),
        cpu_memory=int(mp.get("cpu_memory", 0) or 0) if isinstance(mp.get("cpu_memory", 0), num) else 0,
        fits=bool(mp.get("fits", True)),
        hardware_needed=str(mp.get("hardware_needed", "") or ""),
        warnings=tuple(str(w) for w in mp.get("warnings", []) or []),
        steps=int(time.get("steps", 0) or 0),
        hours=float(time.get("hours", 0.0) or 0.0),
        tokens_per_second=float(time.get("tokens_per_second", 0.0) or 0.0),
        checkpoint_bytes=int(float(cost.get("checkpoint_gb", 0.0) or 0.0) * 1e9),
        checkpoints_kept=int(cost.get("checkpoints_kept", 0) or 0),
        output_dir=strings["checkpoints.output_dir"],
        metrics_file=strings["logging.metrics_file"],
        deepspeed=strings["training.deepspeed"],
        data_path=strings["data.path"],
        trust_remote_code=bool(sections["model"].get("trust_remote_code", False)),
        answers=plan.get("answers", {}) if isinstance(plan.get("answers"), dict) else {},
    )


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def latest_checkpoint(project: ProjectInfo) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step in the output dir, or None."""
    out = project.path(project.output_dir)
    best: tuple[int, Path] | None = None
    if out.is_dir():
        for p in out.glob("checkpoint-*"):
            suffix = p.name.removeprefix("checkpoint-")
            if p.is_dir() and suffix.isdigit() and (best is None or int(suffix) > best[0]):
                best = (int(suffix), p)
    return best[1] if best else None
