"""Catalogs of models and GPUs: plain data, one editable table each."""

from ftplan.planner.catalog.gpus import CPU, GPU, GPUS, gpu_by_name
from ftplan.planner.catalog.models import ALIASES, MODEL_CONFIGS

__all__ = ["ALIASES", "CPU", "GPU", "GPUS", "MODEL_CONFIGS", "gpu_by_name"]
