"""The checklist before a launch: GPUs, memory, disk, packages, data, token, project files.

Each check is a small function of plain inputs returning ``Check(name, status, detail)``;
``gather_host`` does the I/O once (GPUs from ``ftplan.host``: nvidia-smi or NVML, torch only for a GPU
plan; ``shutil.disk_usage``; ``importlib.metadata``; the environment), so tests inject a
``HostFacts`` and call the checks directly. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ftplan.failures import next_rung
from ftplan.host import GpuFacts, available_memory, detect_gpus
from ftplan.launch.spec import LaunchOptions, runs_on_cpu
from ftplan.planner.units import size
from ftplan.project import MANIFEST, ProjectInfo, version_mismatch

OK, WARN, FAIL = "ok", "warn", "fail"
GIB = 2**30
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
"""Hub organisations whose models need an accepted licence and a token to download."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    """"ok", "warn" or "fail"."""
    detail: str


@dataclass(frozen=True)
class HostFacts:
    """Everything preflight looks at on this machine, gathered once."""

    gpus: tuple[GpuFacts, ...] = ()
    gpu_source: str = "nvidia-smi"
    disk_free: int | None = None
    host_memory_available: int | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    """distribution name -> installed version, or None when missing."""
    env: dict[str, str] = field(default_factory=dict)
    hf_token_file: bool = False
    cached_models: tuple[str, ...] = ()
    port_free: bool | None = None
    """Whether node 0 can listen on the rendezvous port (None: not checked)."""
    c_compiler: str | None = None
    """The C/C++ compiler torch.compile's inductor would call (None: none found, or not looked for)."""


gib = size  # memory as preflight writes it: MiB below a GiB

# -- the checks ----------------------------------------------------------------------------


def check_gpus(project: ProjectInfo, options: LaunchOptions, host: HostFacts) -> Check:
    need = project.gpus_per_node
    if project.is_cpu:
        return Check("GPUs", OK, f"CPU plan: {need} process{'es' if need > 1 else ''} on the CPU (gloo)")
    if not host.gpus:
        if options.smoke:
            note = "; QLoRA's 4-bit kernels may not run on the CPU" if project.method == "qlora" else ""
            return Check(
                "GPUs", WARN, f"no GPU found; the smoke run goes on the CPU (plan: {need}× {project.gpu}){note}"
            )
        return Check(
            "GPUs", FAIL, f"no GPU found; the plan needs {need}× {project.gpu} per node (try --smoke on the CPU)"
        )
    names = sorted({g.name for g in host.gpus})
    detail = f"{len(host.gpus)}× {', '.join(names)} ({host.gpu_source})"
    if len(host.gpus) < need:
        return Check("GPUs", FAIL, f"{detail}; the plan needs {need} per node")
    busy = [(g.index, pid, used) for g in host.gpus[:need] for pid, used in g.processes]
    if busy:
        listed = ", ".join(f"GPU {i}: pid {pid} ({gib(used)})" for i, pid, used in busy[:6])
        return Check("GPUs", WARN, f"{detail}; other processes are using them: {listed}")
    from ftplan.planner.catalog.gpus import gpu_by_name

    mismatched = [
        g.name for g in host.gpus[:need] if (c := gpu_by_name(g.name, detected=True)) is None or c.name != project.gpu
    ]
    if mismatched:
        return Check(
            "GPUs", WARN, f'{detail}; the plan was made for {project.gpu} (re-plan with hardware.gpu = "auto")'
        )
    return Check("GPUs", OK, detail)


def check_capability(project: ProjectInfo, options: LaunchOptions, host: HostFacts) -> Check:
    name = "Compute capability"
    if runs_on_cpu(project, options):
        return Check(name, OK, "not needed on the CPU")
    gpus = host.gpus[: project.gpus_per_node]
    caps = [g.compute_capability for g in gpus if g.compute_capability]
    if not caps:
        return Check(name, WARN, "unknown (nvidia-smi did not report it)")
    low = min(caps)
    needs = []
    if project.precision in ("bf16", "bf16-mixed"):
        needs.append(("bf16", (8, 0)))
    if project.attention == "flash_attention_2":
        needs.append(("flash_attention_2", (8, 0)))
    missing = [f"{what} needs {c[0]}.{c[1]}+" for what, c in needs if low < c]
    text = f"{low[0]}.{low[1]}"
    if missing:
        fix = ' (set training.precision = "fp16-mixed" and training.attention = "sdpa", then re-export)'
        return Check(name, FAIL, f"{text}: {'; '.join(missing)}{fix}")
    wanted = ", ".join(w for w, _ in needs) or "nothing special"
    return Check(name, OK, f"{text} (plan uses {wanted})")


def check_memory(project: ProjectInfo, options: LaunchOptions, host: HostFacts) -> Check:
    name = "Memory"
    plan_note = ""
    if not project.fits:
        plan_note = "the plan itself does not fit" + (
            f"; it needs {project.hardware_needed}" if project.hardware_needed else ""
        )
    if runs_on_cpu(project, options):
        if options.smoke and not project.is_cpu:
            return Check(name, WARN, "per-GPU plan not checked: the smoke run goes on the CPU")
        need = project.memory_total * project.gpus_per_node
        avail = host.host_memory_available
        if avail is None:
            return Check(name, WARN, f"plan needs {gib(need)} of host memory; available memory unknown")
        if need > avail:
            return Check(name, FAIL, f"plan needs {gib(need)} of host memory, {gib(avail)} available")
        return Check(name, OK, f"plan needs {gib(need)} of host memory, {gib(avail)} available")
    gpus = host.gpus[: project.gpus_per_node]
    if not gpus:
        return Check(name, FAIL if not options.smoke else WARN, "no GPU to check against")
    free = min(g.free for g in gpus)
    total = min(g.memory for g in gpus)
    detail = f"plan needs {gib(project.memory_total)} per GPU; {gib(free)} free of {gib(total)}"
    if project.memory_total > free or not project.fits:
        lines, why = next_rung(project)
        advice = f"; next step: {', '.join(lines)} ({why})"
        return Check(name, FAIL, detail + (f"; {plan_note}" if plan_note else "") + advice)
    if project.memory_total > 0.95 * free:
        return Check(name, WARN, detail + " (less than 5 % headroom)")
    return Check(name, OK, detail)


def check_disk(project: ProjectInfo, host: HostFacts) -> Check:
    need = project.checkpoint_bytes * max(1, project.checkpoints_kept)
    where = project.output_dir
    if host.disk_free is None:
        return Check("Disk", WARN, f"free space under {where} unknown; checkpoints need {gib(need)}")
    detail = (
        f"checkpoints need {gib(need)} ({project.checkpoints_kept or 1} kept), {gib(host.disk_free)} free under {where}"
    )
    if need > host.disk_free:
        return Check("Disk", FAIL, detail)
    if need * 1.2 > host.disk_free:
        return Check("Disk", WARN, detail + " (under 20 % to spare)")
    return Check("Disk", OK, detail)


@dataclass(frozen=True)
class Requirement:
    name: str
    specifier: str = ""


def parse_requirement(line: str) -> Requirement | None:
    """One requirements.txt line, or None when it is a comment, an option, or its marker excludes this Python."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    try:
        from packaging.requirements import InvalidRequirement
        from packaging.requirements import Requirement as PackagingRequirement
    except ImportError:  # pragma: no cover - packaging is nearly always installed
        name = re.split(r"[<>=!~\[;\s@]", line, maxsplit=1)[0].strip()
        return Requirement(name) if name else None
    try:
        req = PackagingRequirement(line)
    except InvalidRequirement:
        return None
    if req.marker is not None and not req.marker.evaluate():
        return None
    return Requirement(req.name, str(req.specifier))


def required_packages(project: ProjectInfo) -> list[Requirement]:
    """From the project's requirements.txt when there is one, else from the plan's settings."""
    req = Path(project.directory) / "requirements.txt"
    if req.is_file():
        lines = req.read_text(encoding="utf-8", errors="replace").splitlines()
        return [r for r in map(parse_requirement, lines) if r is not None]
    names = ["torch", "transformers", "accelerate", "datasets"]
    if project.method in ("lora", "qlora"):
        names.append("peft")
    if project.method == "qlora":
        names.append("bitsandbytes")
    if project.settings.zero_stage > 0 or project.deepspeed:
        names.append("deepspeed")
    if project.attention == "flash_attention_2":
        names.append("flash-attn")
    return [Requirement(n) for n in names]


def _satisfies(version: str, specifier: str) -> bool:
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        return Version(version) in SpecifierSet(specifier, prereleases=True)
    except (ImportError, InvalidVersion, ValueError):
        return True


def check_packages(project: ProjectInfo, host: HostFacts) -> Check:
    reqs = required_packages(project)
    installed = {r.name: host.packages.get(_norm(r.name)) for r in reqs}
    missing = [r.name for r in reqs if not installed[r.name]]
    old = [
        f"{r.name}{r.specifier} (found {installed[r.name]})"
        for r in reqs
        if installed[r.name] and not _satisfies(installed[r.name], r.specifier) and _norm(r.name) != "trl"
    ]  # fmt: skip  (TRL outside its range: check_trl_loss warns)
    found = ", ".join(f"{n} {v}" for n, v in installed.items() if v)
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + ([f"too old: {', '.join(old)}"] if old else [])
    if problems:
        return Check("Packages", FAIL, "; ".join(problems) + " (pip install -r requirements.txt)"
                     + (f"; found {found}" if found else ""))  # fmt: skip
    trl = check_trl_loss(project, host)
    if trl.status == WARN:
        return Check("Packages", WARN, f"{found}; {trl.detail}")
    return Check("Packages", OK, found or "none needed")


def check_trl_loss(project: ProjectInfo, host: HostFacts) -> Check:
    """The plan's logits memory is that of the TRL releases in ``TRL_MODELED`` (a fused LM head), the
    range requirements.txt pins; another release trains with another loss, so the measured peak will
    not be the planned one. A warning, not a failure: train.py runs on either."""
    from ftplan.planner.activations import TRL_MODELED

    name = "TRL loss"
    version = host.packages.get("trl")
    loss = project.settings.loss
    if not version:
        return Check(name, OK, "TRL not installed (see Packages)")
    if loss == "full_logits":
        return Check(name, OK, f"TRL {version}; the plan uses the model's own loss (training.loss = full_logits)")
    pinned = next((r.specifier for r in required_packages(project) if _norm(r.name) == "trl" and r.specifier), "")
    if _satisfies(version, pinned or TRL_MODELED):
        return Check(name, OK, f"TRL {version} (requirements.txt: trl{pinned or TRL_MODELED})")
    major_minor = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if major_minor < (1, 6):
        why = 'its default loss builds full fp32 logits: plan with training.loss = "full_logits"'
    elif major_minor < (1, 15):
        why = "its default loss is chunked_nll (no full logits, other per-chunk buffers than the fused head)"
    else:
        why = "a release the plan was not checked against"
    return Check(
        name, WARN, f"TRL {version} is outside trl{pinned or TRL_MODELED}: {why}; pip install -r requirements.txt"
    )


COMPILERS = ("g++", "c++", "clang++", "gcc", "cc")
"""What inductor finds to build kernels with: C++ ones on the CPU, triton's launcher on GPUs."""


def check_compiler(project: ProjectInfo, host: HostFacts) -> Check:
    """training.compile needs a compiler on this machine; without one the first step fails."""
    name = "torch.compile"
    if host.c_compiler:
        return Check(name, OK, f"compile = true; kernels build with {host.c_compiler}")
    return Check(
        name,
        WARN,
        "compile = true but no C/C++ compiler (" + ", ".join(COMPILERS) + ") is on PATH: inductor cannot build "
        "its kernels; install one (build-essential) or set compile = false in train_config.toml",
    )


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in (".jsonl", ".json", ".parquet", ".csv", ".txt")


def _data_format(project: ProjectInfo) -> str:
    """data.format of train_config.toml as the run will read it ("auto" when unreadable)."""
    try:
        config = tomllib.loads(project.path(project.config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "auto"
    fmt = config.get("data", {}).get("format", "auto") if isinstance(config.get("data"), dict) else "auto"
    return fmt if isinstance(fmt, str) else "auto"


def check_dataset(project: ProjectInfo, exists: Callable[[Path], bool] = Path.exists) -> Check:
    """The data file is there and trainable: every record parsed (up to ftplan.context's bound)
    and holding the columns of its format, so a broken file fails here, not after loading the model."""
    from ftplan.context import DataProblem, check_data_file

    path = project.data_path
    if not path:
        return Check("Dataset", WARN, "no data.path in train_config.toml")
    if _looks_local(path) or exists(project.path(path)):
        full = project.path(path)
        if not exists(full):
            return Check("Dataset", FAIL, f"{path} not found (data.path in train_config.toml, relative to the project)")
        try:
            _, total, fmt = check_data_file(full, _data_format(project))
        except DataProblem as exc:
            return Check("Dataset", FAIL, f"data.path {path}: {exc}")
        return Check("Dataset", OK, f"{path} (local, {total:,} examples, format {fmt})")
    return Check("Dataset", OK, f"{path} (hub dataset, downloaded when the run starts)")


def is_gated(model: str) -> bool:
    return model.startswith(GATED_PREFIXES)


def check_hf_token(project: ProjectInfo, host: HostFacts) -> Check:
    model = project.model_name
    name = "HF token"
    if Path(model).expanduser().is_absolute() or model.startswith(".") or "/" not in model:
        return Check(name, OK, "model is a local folder")
    if not is_gated(model):
        return Check(name, OK, f"{model} is not gated")
    if model in host.cached_models:
        return Check(name, OK, f"{model} is in the local HF cache")
    if host.env.get("HF_TOKEN") or host.env.get("HUGGING_FACE_HUB_TOKEN"):
        return Check(name, OK, f"{model} is gated; HF_TOKEN is set")
    if host.hf_token_file:
        return Check(name, OK, f"{model} is gated; a token is saved (huggingface-cli login)")
    return Check(
        name, FAIL, f"{model} is gated: accept its licence on the hub and set HF_TOKEN (or huggingface-cli login)"
    )


def check_manifest(project: ProjectInfo, read: Callable[[Path], bytes] | None = None) -> Check:
    """Project files vs the sha256 the exporter recorded in .ftplan-manifest.json."""
    d = Path(project.directory)
    name = "Project files"
    other = version_mismatch(project)
    if other:
        return Check(name, WARN, f"{other}: re-export to plan with this version's figures")
    mpath = d / MANIFEST
    if not mpath.is_file():
        return Check(name, WARN, f"no {MANIFEST}: cannot tell whether the files changed since export")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
        files = data.get("files", data) if isinstance(data, dict) else None
        if not isinstance(files, dict):
            raise ValueError("not an object of file hashes")
    except (OSError, ValueError) as exc:
        return Check(name, WARN, f"{MANIFEST} unreadable ({exc})")
    read = read or (lambda p: p.read_bytes())
    changed, missing = [], []
    for rel, digest in sorted(files.items()):
        digest = digest.get("sha256") if isinstance(digest, dict) else digest
        p = d / rel
        try:
            actual = hashlib.sha256(read(p)).hexdigest()
        except OSError:
            missing.append(rel)
            continue
        if actual != str(digest).removeprefix("sha256:"):
            changed.append(rel)
    if missing:
        return Check(name, WARN, f"missing since export: {', '.join(missing)}")
    if changed:
        return Check(name, WARN, f"edited since export: {', '.join(changed)} (fine if you meant to)")
    return Check(name, OK, f"{len(files)} files unchanged since export")


def check_rendezvous(options: LaunchOptions, host: HostFacts) -> Check:
    name = "Rendezvous"
    where = f"{options.master_addr}:{options.master_port}"
    if options.node_rank != 0:
        return Check(name, OK, f"node {options.node_rank} joins node 0 at {where}")
    if host.port_free is False:
        return Check(name, FAIL, f"port {options.master_port} is in use here; pick another with --master-port")
    return Check(
        name, OK, f"node 0 listens on {where}; start the other nodes with the same --master-addr/--master-port"
    )


def run_checks(project: ProjectInfo, options: LaunchOptions, host: HostFacts) -> list[Check]:
    nnodes = options.nnodes if options.nnodes is not None else project.nodes
    rendezvous = [check_rendezvous(options, host)] if nnodes > 1 and options.master_addr else []
    compiler = [check_compiler(project, host)] if project.settings.compile else []
    return rendezvous + [
        check_gpus(project, options, host),
        check_capability(project, options, host),
        check_memory(project, options, host),
        check_disk(project, host),
        check_packages(project, host),
        check_dataset(project),
        check_hf_token(project, host),
        check_manifest(project),
        *compiler,
    ]


# -- gathering the host facts (I/O) --------------------------------------------------------


def _disk_free(path: Path) -> int | None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _installed(names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[_norm(n)] = md.version(n)
        except md.PackageNotFoundError:
            out[_norm(n)] = None
    return out


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


def gather_host(project: ProjectInfo, options: LaunchOptions) -> HostFacts:
    """Look at this machine once (no network, no heavy imports unless a GPU plan needs torch)."""
    from ftplan.planner.models import hf_home, hub_snapshots

    gpus, source = detect_gpus(need_gpus=not project.is_cpu and not options.smoke)
    if not gpus and not project.is_cpu and options.smoke:
        source = "none"
    cached = ()
    if "/" in project.model_name and any(hub_snapshots(project.model_name).glob("*/config.json")):
        cached = (project.model_name,)
    return HostFacts(
        gpus=gpus,
        gpu_source=source,
        disk_free=_disk_free(project.path(project.output_dir)),
        host_memory_available=available_memory(),
        packages=_installed([r.name for r in required_packages(project)]),
        env={k: v for k, v in os.environ.items() if k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")},
        hf_token_file=(hf_home() / "token").is_file(),
        cached_models=cached,
        port_free=_port_free(options.master_port) if options.node_rank == 0 and options.master_addr else None,
        c_compiler=_c_compiler() if project.settings.compile else None,
    )


def _c_compiler() -> str | None:
    named = [os.environ[key] for key in ("CXX", "CC") if os.environ.get(key)]
    return next((found for found in map(shutil.which, [*named, *COMPILERS]) if found), None)


def render_checklist(checks: list[Check]):
    """A Rich table: one row per check, ✓ / ! / ✗."""
    from rich.markup import escape
    from rich.table import Table

    marks = {OK: "[green]✓[/]", WARN: "[yellow]![/]", FAIL: "[red]✗[/]"}
    table = Table(title="Preflight", show_header=False, box=None, pad_edge=False)
    table.add_column(width=1)
    table.add_column(style="bold")
    table.add_column()
    for c in checks:
        table.add_row(marks[c.status], escape(c.name), escape(c.detail))
    return table


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]
