"""GPU catalog: dense bf16 peak, memory, bandwidth, measured matmul ceiling and price.

Peak TFLOP/s, memory and bandwidth: vendor datasheets as collected in stas00/ml-engineering
``compute/accelerator/README.md`` and cli99/llm-analysis ``gpu_configs/``. ``mamf_tflops`` is
the best measured bf16 matmul throughput (ml-engineering's MAMF table, or another published
measurement named beside the card) where known, otherwise 0.8 x peak. Prices: on-demand USD per GPU-hour, a 2026 snapshot (skypilot-catalog for Lambda,
third-party lists for the rest); edit them here or override with ``budget.gpu_hour_usd``.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9
GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    tflops: float
    """Dense bf16 tensor TFLOP/s (fp16 where the GPU has no bf16)."""
    memory: int
    """Bytes of device memory as sold (e.g. 80 GB = 80e9... reported by the driver in MiB)."""
    bandwidth_gbs: float
    usd_per_hour: float
    compute_capability: tuple[int, int]
    mamf_tflops: float = 0.0
    interconnect_gbs: float = 300.0
    """GPU-to-GPU bandwidth within a node (NVLink where present, else PCIe), GB/s per direction."""

    @property
    def bf16(self) -> bool:
        """bf16 and FlashAttention-2 need Ampere (compute capability 8.0) or newer."""
        return self.compute_capability >= (8, 0)

    @property
    def matmul_tflops(self) -> float:
        return self.mamf_tflops or 0.8 * self.tflops


def _gpu(name, tflops, mem_gib, bw, usd, cc, mamf=0.0, link=32.0) -> GPU:
    return GPU(name, tflops, int(mem_gib * GIB), bw, usd, cc, mamf, link)


# Memory in GiB as the driver reports it (an "80 GB" A100 shows 81,920 MiB).
GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        _gpu("A100-40GB", 312, 40, 1555, 1.99, (8, 0), 271, 300),
        _gpu("A100-80GB", 312, 80, 2039, 2.79, (8, 0), 271, 300),
        _gpu("H100-SXM", 989, 80, 3350, 4.29, (9, 0), 795, 450),
        _gpu("H100-PCIe", 756, 80, 2000, 3.29, (9, 0), 0, 64),
        _gpu("H200", 989, 141, 4800, 6.35, (9, 0), 795, 450),
        _gpu("L40S", 362, 48, 864, 1.40, (8, 9), 0, 32),
        _gpu("L4", 121, 24, 300, 0.78, (8, 9), 0, 32),
        _gpu("A10G", 70, 24, 600, 1.29, (8, 6), 0, 32),
        # Measured bf16 torch matmul, best of square shapes 1,024-10,240: 164.8 TFLOP/s (torch 2.7,
        # CUDA 12.8; zzc0721/torch-performance-test-data issue #78). GeForce cards boost above the
        # clock their datasheet peak is quoted at.
        _gpu("RTX-4090", 165, 24, 1008, 0.60, (8, 9), 164.8, 32),
        _gpu("RTX-3090", 71, 24, 936, 0.39, (8, 6), 0, 32),
        _gpu("RTX-A6000", 155, 48, 768, 1.09, (8, 6), 0, 32),
        _gpu("V100-32GB", 125, 32, 900, 0.79, (7, 0), 0, 150),
        _gpu("T4", 65, 16, 320, 0.35, (7, 5), 0, 16),
        _gpu("MI300X", 1307, 192, 5300, 4.89, (9, 4), 668, 448),
    ]
}

# A CPU "device" for smoke runs: memory is the host's. A few cores with AVX2 FMA peak near
# 0.1-0.2 TFLOP/s in fp32; training kernels reach about a third of it. Tiny smoke models run
# far slower still (per-step overhead dominates), so CPU times are a lower bound.
CPU = GPU("cpu", 0.15, 0, 50, 0.0, (0, 0), 0.05, 10)

# Names nvidia-smi prints, mapped to catalog names (checked in order; first match wins).
DETECTED_NAMES: tuple[tuple[str, str], ...] = (
    ("H200", "H200"),
    ("H100 PCIe", "H100-PCIe"),
    ("H100", "H100-SXM"),
    ("A100-SXM4-40GB", "A100-40GB"),
    ("A100-PCIE-40GB", "A100-40GB"),
    ("A100", "A100-80GB"),
    ("L40S", "L40S"),
    ("L4", "L4"),
    ("A10G", "A10G"),
    ("A10", "A10G"),
    ("4090", "RTX-4090"),
    ("3090", "RTX-3090"),
    ("A6000", "RTX-A6000"),
    ("V100", "V100-32GB"),
    ("T4", "T4"),
    ("MI300X", "MI300X"),
)


def gpu_by_name(name: str, detected: bool = False) -> GPU | None:
    """Case-insensitive catalog lookup; ``detected=True`` also accepts nvidia-smi names."""
    lowered = name.strip().lower()
    if lowered == "cpu":
        return CPU
    for key, gpu in GPUS.items():
        if key.lower() == lowered:
            return gpu
    if not detected:
        return None
    for fragment, key in DETECTED_NAMES:
        if fragment.lower() in lowered:
            return GPUS[key]
    return None
