"""How ftplan writes a number of bytes: one formatter for the plan, the launcher and the probe.

GiB (2**30) for memory, as the CUDA allocator and nvidia-smi count it; decimal GB only for files
and downloads (``gb``), as disks and the hub count them.
"""

from __future__ import annotations

GIB = 2**30
UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def gib(n: float) -> str:
    """Memory in GiB with one decimal: the unit of every table and reason in the plan."""
    return f"{n / GIB:,.1f} GiB"


def size(n: float, digits: int = 1) -> str:
    """Memory in the largest binary unit below it (a MiB figure is not written as 0.0 GiB)."""
    for unit, scale in UNITS:
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f} {unit}"
    return f"{n:,.0f} B"


def gb(n: float) -> str:
    """File sizes in decimal GB (checkpoints, merged models, downloads)."""
    return f"{n / 1e9:,.1f} GB"
