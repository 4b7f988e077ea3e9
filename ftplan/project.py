"""The exported project's contract, with one owner: its file names, the defaults every reader
shares, the environment every launcher gives it, and reading one back as typed data.

The exporter writes these names, ``ftplan launch``, ``ftplan probe`` and the app read them; a
name changed here changes for all. ``plan.json`` is read back through the planner's own pydantic
``Plan`` (the model that wrote it), so a field renamed in the plan cannot drift from its reader.
Pure: no torch, nothing written.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftplan.planner import MethodPlan, Plan

TRAIN_SCRIPT = "train.py"
TRAIN_CONFIG = "train_config.toml"
PLAN_FILE = "plan.json"
ANSWERS_FILE = "answers.toml"
MANIFEST = ".ftplan-manifest.json"
"""What the exporter wrote, with each file's hash: a re-export keeps the user's edits, preflight
tells which files changed since."""
OUTPUT_DIR = "output"
METRICS_FILE = "metrics.jsonl"
"""JSON lines written by train.py, in the output dir unless absolute; the launcher's progress
bar and the probe read it."""
MASTER_PORT = 29500
"""torchrun's default rendezvous port, for launch.sh, slurm.sbatch and ``ftplan launch`` alike."""
METHODS = ("full", "lora", "qlora")


def run_environment(on_cpu: bool) -> dict[str, str]:
    """The variables every launcher of the project sets (launch.sh, slurm.sbatch, ``ftplan launch``,
    ``ftplan probe``), so that each runs the same training.

    On a CPU plan: no GPU even if one is present (hiding them is enough for the Trainer and
    accelerate; ACCELERATE_USE_CPU would take DeepSpeed out of accelerate's hands and break
    ZeRO-3), DeepSpeed's CPU accelerator and gloo collectives. On GPUs: NCCL, and expandable
    segments, which the plan's usable-memory margin assumes (fewer fragmentation OOMs).
    """
    if on_cpu:
        return {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "FTPLAN_DIST_BACKEND": "gloo"}
    return {"FTPLAN_DIST_BACKEND": "nccl", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def shell_exports(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines for launch.sh and slurm.sbatch, quoted for the shell."""
    return [f"export {k}={shlex.quote(v) if v else chr(34) * 2}" for k, v in env.items()]


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


def _read(path: str, doc: str | None = None) -> property:
    """A read-only attribute that reads the dotted ``path`` from the project (``operator.attrgetter``)."""
    return property(attrgetter(path), doc=doc)


@dataclass(frozen=True)
class ProjectInfo:
    """One exported project: its plan (typed, as the planner wrote it), the method train.py runs,
    and the few train_config.toml fields that launching, preflight and progress read."""

    directory: str
    plan: Plan
    method: str
    model_name: str
    output_dir: str = OUTPUT_DIR
    metrics_file: str = METRICS_FILE
    deepspeed: str = ""
    data_path: str = ""
    trust_remote_code: bool = False
    train_script: str = TRAIN_SCRIPT
    config_file: str = TRAIN_CONFIG

    @cached_property
    def mp(self) -> MethodPlan:
        return self.plan.methods[self.method]

    # The plan's figures under the names launch, preflight and the app read them by.
    settings = _read("mp.settings")
    gpu = _read("plan.hardware.gpu")
    gpu_memory = _read("plan.hardware.gpu_memory")
    gpus_per_node = _read("plan.hardware.gpus_per_node")
    nodes = _read("plan.hardware.nodes")
    world_size = _read("plan.hardware.world_size")
    usd_per_gpu_hour = _read("plan.hardware.usd_per_gpu_hour")
    answers = _read("plan.answers")
    memory_total = _read(
        "mp.memory.total", "Predicted per-GPU peak including ``memory_overhead`` (host memory on a CPU plan)."
    )
    memory_overhead = _read("mp.memory.overhead")
    cpu_memory = _read("mp.cpu_memory")
    fits = _read("mp.fits")
    hardware_needed = _read("mp.hardware_needed")
    steps = _read("mp.time.steps")
    hours = _read("mp.time.hours")
    tokens_per_second = _read("mp.time.tokens_per_second")
    checkpoints_kept = _read("mp.cost.checkpoints_kept")
    precision = _read("mp.settings.precision")
    attention = _read("mp.settings.attention")
    uses_fsdp = _read("mp.settings.uses_fsdp")

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.mp.warnings)

    @property
    def checkpoint_bytes(self) -> int:
        return int(self.mp.cost.checkpoint_gb * 1e9)

    @property
    def is_cpu(self) -> bool:
        return self.gpu.lower() == "cpu"

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


def load_project(directory: str | Path) -> ProjectInfo:
    """Read and check DIR/plan.json and DIR/train_config.toml; raise ProjectError listing every problem."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise ProjectError(str(directory), [f"{directory} is not a folder"])
    problems = [f"{name} is missing" for name in (TRAIN_SCRIPT, TRAIN_CONFIG, PLAN_FILE) if not (d / name).is_file()]
    plan = _read_plan(d / PLAN_FILE, problems) if (d / PLAN_FILE).is_file() else None
    config = _read_config(d / TRAIN_CONFIG, problems) if (d / TRAIN_CONFIG).is_file() else None
    info = project_info(d, plan, config, problems) if config is not None else None  # its problems too
    if problems or info is None:
        raise ProjectError(str(directory), problems)
    return info


def project_info(
    directory: str | Path, plan: Plan | None, config: dict, problems: list[str] | None = None, check_files: bool = True
) -> ProjectInfo:
    """The project that ``plan`` and the parsed ``train_config.toml`` make in ``directory``, without
    reading either from disk (the exporter renders slurm.sbatch from it before writing anything).
    Problems are appended to ``problems`` (raised as ProjectError when not given); ``check_files``:
    whether the files it names must exist in ``directory``. Without a plan (one that did not
    parse) only the config's problems are collected."""
    own = problems is None
    problems = [] if own else problems
    d = Path(directory)
    method = _table(config, "method", problems).get("kind", plan.recommendation.method if plan else "lora")
    if method not in METHODS:
        problems.append(f"{TRAIN_CONFIG}: `method.kind` should be full, lora or qlora, not {method!r}")
    elif plan is not None and method not in plan.methods:
        problems.append(f"{PLAN_FILE}: `methods.{method}` is missing")
    sections = {k: _table(config, k, problems) for k in ("model", "training", "checkpoints", "logging", "data")}
    strings = {
        "checkpoints.output_dir": sections["checkpoints"].get("output_dir", OUTPUT_DIR),
        "logging.metrics_file": sections["logging"].get("metrics_file", METRICS_FILE),
        "training.deepspeed": sections["training"].get("deepspeed", ""),
        "data.path": sections["data"].get("path", ""),
        "model.name_or_path": sections["model"].get("name_or_path", plan.model.name if plan else ""),
    }
    for key, value in strings.items():
        if not isinstance(value, str):
            problems.append(f"{TRAIN_CONFIG}: `{key}` should be a string, not {value!r}")
    ds = strings["training.deepspeed"]
    if check_files and isinstance(ds, str) and ds and not (d / ds).is_file():
        problems.append(f"{ds} is missing (named by {TRAIN_CONFIG} `training.deepspeed`)")
    if problems or plan is None:
        if own:
            raise ProjectError(str(directory), problems)
        return None  # type: ignore[return-value]
    return ProjectInfo(
        directory=str(d),
        plan=plan,
        method=method,
        model_name=strings["model.name_or_path"],
        output_dir=strings["checkpoints.output_dir"],
        metrics_file=strings["logging.metrics_file"],
        deepspeed=ds,
        data_path=strings["data.path"],
        trust_remote_code=bool(sections["model"].get("trust_remote_code", False)),
    )


def read_plan(path: str | Path) -> Plan:
    """A project's plan.json as the planner's ``Plan``; ProjectError names each wrong field."""
    problems: list[str] = []
    plan = _read_plan(Path(path), problems)
    if plan is None:
        raise ProjectError(str(Path(path).parent), problems)
    return plan


def _read_plan(path: Path, problems: list[str]) -> Plan | None:
    """plan.json through the planner's own model; each wrong field named by its dotted path."""
    from pydantic import ValidationError

    from ftplan.planner import Plan

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{PLAN_FILE}: cannot be read as JSON ({_short(exc)})")
        return None
    try:
        return Plan.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            if err["type"] == "missing":
                problems.append(f"{PLAN_FILE}: `{where}` is missing")
            else:
                problems.append(f"{PLAN_FILE}: `{where}`: {err['msg'].lower()}, not {err['input']!r}")
        written = raw.get("ftplan_version") if isinstance(raw, dict) else None
        other = _other_version(written if isinstance(written, str) else "(unknown)")
        if other:
            problems.append(f"{other}: re-export the project with this one")
        return None


def _other_version(written: str) -> str:
    """'' when this ftplan is the one that wrote a plan, else a sentence saying which did."""
    from ftplan import __version__

    return (
        "" if written == __version__ else f"{PLAN_FILE} was written by ftplan {written}; this is ftplan {__version__}"
    )


def version_mismatch(project: ProjectInfo) -> str:
    """'' when this ftplan wrote the project's plan, else a sentence saying which did."""
    return _other_version(project.plan.ftplan_version)


def _read_config(path: Path, problems: list[str]) -> dict | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{TRAIN_CONFIG}: cannot be read as TOML ({_short(exc)})")
        return None


def _table(config: dict, key: str, problems: list[str]) -> dict:
    value = config.get(key, {})
    if isinstance(value, dict):
        return value
    problems.append(f"{TRAIN_CONFIG}: `[{key}]` should be a table")
    return {}


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
