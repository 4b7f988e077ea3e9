"""Find a model's config.json without the network: catalog, local folder, or the HF cache."""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ftplan.planner.arch import ModelArch, UnsupportedArchitecture, arch_from_config
from ftplan.planner.catalog.models import ALIASES, MODEL_CONFIGS


class ModelNotFound(ValueError):
    """The name is in no catalog, no local folder and no cached config."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    source: str
    """Where the config came from: "catalog", "local folder" or "HF cache"."""
    config: dict
    arch: ModelArch


_LOWER = {k.lower(): k for k in [*MODEL_CONFIGS, *ALIASES]}


def catalog_names() -> list[str]:
    return sorted(MODEL_CONFIGS) + sorted(ALIASES)


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _cached_config(hub_id: str) -> Path | None:
    repo = _hf_hub_cache() / ("models--" + hub_id.replace("/", "--"))
    snapshots = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path} is not a JSON object")
    # Multimodal wrappers keep the language model under text_config.
    return config.get("text_config", config) if "hidden_size" not in config else config


def resolve_model(name: str) -> ResolvedModel:
    """Return the model's config and accounting; raise ModelNotFound with close names."""
    key = _LOWER.get(name.strip().lower())
    if key is not None:
        canonical = ALIASES.get(key, key)
        return ResolvedModel(key, "catalog", MODEL_CONFIGS[canonical], _catalog_arch(canonical))
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        config = _read_config(local / "config.json")
        return ResolvedModel(name, "local folder", config, _arch(config, name))
    if local.exists() and not local.is_dir() or (local.is_dir() and not (local / "config.json").exists()):
        raise ModelNotFound(f"{name} has no config.json")
    cached = _cached_config(name) if "/" in name else None
    if cached is not None:
        config = _read_config(cached)
        return ResolvedModel(name, "HF cache", config, _arch(config, name))
    close = difflib.get_close_matches(name.lower(), list(_LOWER), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(_LOWER[c] for c in close)}?" if close else ""
    raise ModelNotFound(
        f"{name!r} is not in the catalog, not a local folder with config.json and not in the HF cache{hint}"
    )


@functools.cache
def _catalog_arch(canonical: str) -> ModelArch:
    """One accounting per catalog model per process: the configs are constants, and the app
    replans the same model on every keystroke (its ``memo`` keeps the derived figures)."""
    return arch_from_config(MODEL_CONFIGS[canonical])


def _arch(config: dict, name: str) -> ModelArch:
    try:
        return arch_from_config(config)
    except (UnsupportedArchitecture, TypeError, ValueError) as exc:
        raise ModelNotFound(f"{name}: {exc}") from None
