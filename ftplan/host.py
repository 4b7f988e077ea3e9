"""What this machine has: its GPUs and its memory, read once for every shell.

The planner's context (``hardware.gpu = "auto"``), the launch preflight and the app all ask here,
so a GPU is named the same way everywhere: nvidia-smi first (with its compute capability and the
other processes on each GPU), then NVML, then (only when a GPU plan needs it) torch. Never imports
torch otherwise; no network.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    memory: int
    free: int
    compute_capability: tuple[int, int] | None = None
    processes: tuple[tuple[int, int], ...] = ()
    """(pid, bytes used) of other processes on this GPU."""


def nvidia_smi(timeout: float = 5.0) -> tuple[GpuFacts, ...] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None

    def query(args: list[str]) -> list[list[str]]:
        out = subprocess.run([exe, *args, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout  # fmt: skip
        return [[c.strip() for c in row] for row in csv.reader(out.splitlines()) if row]

    try:
        rows = query(["--query-gpu=index,uuid,name,memory.total,memory.free,compute_cap"])
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        apps = query(["--query-compute-apps=gpu_uuid,pid,used_memory"])
    except (OSError, subprocess.SubprocessError):
        apps = []
    gpus = []
    for row in rows:
        try:
            index, uuid, name, total, free, cap = row
            major, _, minor = cap.partition(".")
            procs = tuple((int(a[1]), int(float(a[2])) * 2**20) for a in apps if len(a) == 3 and a[0] == uuid
                          and a[1].isdigit() and a[2].replace(".", "").isdigit())  # fmt: skip
            cc = (int(major), int(minor or 0)) if major.isdigit() else None
            gpus.append(GpuFacts(int(index), name, int(float(total)) * 2**20, int(float(free)) * 2**20, cc, procs))
        except ValueError:
            continue
    return tuple(gpus)


def _nvml() -> tuple[GpuFacts, ...] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            cc = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            procs = tuple((p.pid, p.usedGpuMemory or 0) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h))
            gpus.append(
                GpuFacts(i, name.decode() if isinstance(name, bytes) else name, mem.total, mem.free, tuple(cc), procs)
            )
        pynvml.nvmlShutdown()
        return tuple(gpus)
    except Exception:  # noqa: BLE001 - any NVML failure means "no answer from NVML"
        return None


def _torch_gpus() -> tuple[GpuFacts, ...]:
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(GpuFacts(i, torch.cuda.get_device_name(i), total, free, torch.cuda.get_device_capability(i)))
    return tuple(gpus)


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")
"""Without one of these there is no GPU for torch to find, so importing it (seconds) is skipped."""


def detect_gpus(need_gpus: bool) -> tuple[tuple[GpuFacts, ...], str]:
    """GPUs via nvidia-smi, then NVML, then (only when the plan needs GPUs) torch."""
    found = nvidia_smi()
    if found is not None:
        return found, "nvidia-smi"
    found = _nvml()
    if found is not None:
        return found, "NVML"
    if need_gpus and any(Path(d).exists() for d in GPU_DEVICE_FILES):
        return _torch_gpus(), "torch"
    return (), "none"


def available_memory() -> int | None:
    """Host memory a new process can have without swapping, in bytes (MemAvailable on Linux), or None."""
    memory = _virtual_memory()
    return None if memory is None else int(memory.available)


def total_memory() -> int | None:
    """Total host memory of this machine in bytes, or None."""
    memory = _virtual_memory()
    return None if memory is None else int(memory.total)


def _virtual_memory():
    """psutil's reading of host memory (``/proc/meminfo`` on Linux, the kernel's own counters
    elsewhere), or None where psutil cannot read this platform."""
    try:
        import psutil

        return psutil.virtual_memory()
    except Exception:  # noqa: BLE001 (psutil cannot read this platform)
        return None
