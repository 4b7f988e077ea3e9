"""The devices a run's memory is spread over: one GPU type, so many per node, so many nodes."""

from __future__ import annotations

from dataclasses import dataclass

from ftplan.planner.catalog.gpus import GPU


@dataclass(frozen=True)
class Device:
    gpu: GPU
    gpus_per_node: int = 1
    nodes: int = 1

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def is_cpu(self) -> bool:
        return self.gpu.name == "cpu"
