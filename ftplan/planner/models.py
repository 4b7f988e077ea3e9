"""Find a model's architecture without the network: catalog, local folder, or the HF cache.

Three sources, fastest first:
- the hand-written accounting (``arch.py``) for the 2023–24 catalog and plain configs of its
  seven model types (tests hold it to the meta device);
- architecture cards shipped in ``catalog/cards`` (derived from the models' own code by
  ``scripts/make_catalog.py``; no torch needed to plan them);
- any other config.json: its card is derived on the meta device by the shell-side
  ``ftplan.derive`` (imports torch, seconds) and cached on disk, so the next plan is instant.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ftplan.planner.arch import (
    FORMULA_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    ModelArch,
    UnsupportedArchitecture,
    arch_from_card,
    arch_from_config,
)
from ftplan.planner.card import ArchCard
from ftplan.planner.catalog.models import ALIASES, CARD_ALIASES, CARD_MODELS, MODEL_CONFIGS
from ftplan.planner.configcheck import BadConfig, check_config


class ModelNotFound(ValueError):
    """The name is in no catalog, no local folder and no cached config (or its config is unusable)."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    source: str
    """Where the config came from: "catalog", "local folder" or "HF cache"."""
    config: dict
    arch: ModelArch
    card: ArchCard | None = None
    """The architecture card, when the model was planned from one (shipped or derived)."""


CardDeriver = Callable[[dict, bool, str], ArchCard]
_deriver: CardDeriver | None = None


def register_card_deriver(fn: CardDeriver | None) -> None:
    """Let a shell provide the deriver (the planner itself never imports torch)."""
    global _deriver
    _deriver = fn


def _derive(config: dict, trust_remote_code: bool, source: str) -> ArchCard:
    if _deriver is not None:
        return _deriver(config, trust_remote_code, source)
    from importlib import import_module  # the default shell-side deriver, loaded only for new architectures

    return import_module("ftplan.derive.cache").card_for_config(config, trust_remote_code, source)


_ALL_NAMES = [*MODEL_CONFIGS, *ALIASES, *CARD_MODELS, *CARD_ALIASES]
_LOWER = {k.lower(): k for k in _ALL_NAMES}
CARDS_DIR = Path(__file__).parent / "catalog" / "cards"
TRACES_FILE = Path(__file__).parent / "catalog" / "traces.json"


def catalog_names() -> list[str]:
    return sorted(MODEL_CONFIGS) + sorted(CARD_MODELS) + sorted(ALIASES) + sorted(CARD_ALIASES)


def hf_home() -> Path:
    """huggingface_hub's home folder (its token lives there): $HF_HOME, else ~/.cache/huggingface."""
    return Path(os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))


def hf_hub_cache() -> Path:
    """huggingface_hub's model cache, as it resolves it: $HF_HUB_CACHE, else $HF_HOME/hub."""
    return Path(os.environ["HF_HUB_CACHE"]) if os.environ.get("HF_HUB_CACHE") else hf_home() / "hub"


def hub_snapshots(hub_id: str) -> Path:
    """The folder of a hub model's cached snapshots (it may not exist)."""
    return hf_hub_cache() / ("models--" + hub_id.replace("/", "--")) / "snapshots"


def _cached_config(hub_id: str) -> Path | None:
    snapshots = sorted(hub_snapshots(hub_id).glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def _read_raw_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path} is not a JSON object")
    return config


def _read_config(path: Path) -> dict:
    """The language model's config (multimodal wrappers keep it under text_config)."""
    config = _read_raw_config(path)
    return config.get("text_config", config) if "hidden_size" not in config else config


def resolve_model(name: str, trust_remote_code: bool = False) -> ResolvedModel:
    """Return the model's config and accounting; raise ModelNotFound saying how to get the config."""
    key = _LOWER.get(name.strip().lower())
    if key is not None:
        return _from_catalog(key)
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        return _from_config(name, "local folder", local / "config.json", trust_remote_code)
    if local.exists() and not local.is_dir() or (local.is_dir() and not (local / "config.json").exists()):
        raise ModelNotFound(f"{name} has no config.json")
    cached = _cached_config(name) if "/" in name else None
    if cached is not None:
        return _from_config(name, "HF cache", cached, trust_remote_code)
    raise ModelNotFound(not_found_message(name))


def _from_catalog(key: str) -> ResolvedModel:
    if key in MODEL_CONFIGS or key in ALIASES:
        canonical = ALIASES.get(key, key)
        return ResolvedModel(key, "catalog", MODEL_CONFIGS[canonical], _catalog_arch(canonical))
    canonical = CARD_ALIASES.get(key, key)
    card = shipped_card(canonical)
    return ResolvedModel(key, "catalog", CARD_MODELS[canonical], _card_arch(canonical), card)


def _from_config(name: str, source: str, path: Path, trust_remote_code: bool) -> ResolvedModel:
    raw = _read_raw_config(path)
    try:
        check_config(raw, f"{path}")
    except BadConfig as exc:
        raise ModelNotFound(str(exc)) from None
    text = raw.get("text_config", raw) if "hidden_size" not in raw else raw
    vision = isinstance(raw.get("vision_config"), dict)
    if raw.get("model_type") in SUPPORTED_MODEL_TYPES and not vision:
        arch = _arch(text, name)
        if raw.get("model_type") not in FORMULA_MODEL_TYPES:
            arch = replace(arch, activation_trace=_derived_trace(raw, trust_remote_code, source))
        return ResolvedModel(name, source, text, arch)
    try:
        card = _derive(raw, trust_remote_code, source)
    except ImportError as exc:
        raise ModelNotFound(
            f"{name}: model_type {raw.get('model_type')!r} is not in ftplan's catalog, and reading it from its "
            f"code needs transformers, torch and peft installed ({exc}); pip install 'ftplan[derive]'"
        ) from None
    except Exception as exc:  # transformers' own config/model errors: report, never a traceback
        raise ModelNotFound(f"{name}: transformers cannot build this model from {path}: {exc}") from None
    return ResolvedModel(name, source, text, arch_from_card(card), card)


def _derived_trace(raw: dict, trust_remote_code: bool, source: str) -> dict | None:
    """The traced activations of a hand-coded type the formula gets wrong (arch.FORMULA_MODEL_TYPES),
    from its derived (cached) card; None without torch / transformers (the formula then stands)."""
    try:
        return _derive(raw, trust_remote_code, source).activation_trace()
    except Exception:  # noqa: BLE001 - ImportError or a model transformers cannot build: counts still plan
        return None


@functools.cache
def shipped_card(canonical: str) -> ArchCard:
    """A catalog card from the package (one JSON file; no torch)."""
    path = CARDS_DIR / (_card_file(canonical) + ".json")
    return ArchCard.from_json(path.read_text(encoding="utf-8"))


def _card_file(hub_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "--", hub_id)


@functools.cache
def _card_arch(canonical: str) -> ModelArch:
    return arch_from_card(shipped_card(canonical))


@functools.cache
def _catalog_arch(canonical: str) -> ModelArch:
    """One accounting per catalog model per process: the configs are constants, and the app
    replans the same model on every keystroke (its ``memo`` keeps the derived figures). Its
    activations come from the shipped trace of the model's code (``traces.json``)."""
    return replace(arch_from_config(MODEL_CONFIGS[canonical]), activation_trace=_traces().get(canonical))


@functools.cache
def _traces() -> dict:
    """The hand-written catalog's traced activation figures (scripts/make_catalog.py writes them)."""
    try:
        return json.loads(TRACES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _arch(config: dict, name: str) -> ModelArch:
    try:
        return arch_from_config(config)
    except (UnsupportedArchitecture, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelNotFound(f"{name}: {exc}") from None


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*[bm]\b|(\d+x\d+b)|a\d+b", re.I)


def _family_and_size(name: str) -> tuple[str, str]:
    """("qwen3", "8b") from "Qwen/Qwen3-8B-Instruct": the family is the model name before its size."""
    short = name.rsplit("/", 1)[-1].lower()
    found = re.search(r"(\d+(?:\.\d+)?[bm])(?![a-z])", short)
    size = found.group(1) if found else ""
    family = short[: found.start()] if found else short
    family = re.sub(r"[-_.]+$", "", family)
    return family, size


def similar_models(name: str) -> list[str]:
    """Catalog names of the same family and size (the only "did you mean" that helps)."""
    family, size = _family_and_size(name)
    if not family:
        return []
    found = []
    for known in _ALL_NAMES:
        f, s = _family_and_size(known)
        if s == size and (f == family or difflib.SequenceMatcher(None, f, family).ratio() >= 0.85):
            found.append(known)
    return sorted(found, key=lambda k: -difflib.SequenceMatcher(None, k.lower(), name.lower()).ratio())[:3]


def not_found_message(name: str) -> str:
    """How to get a model's config.json without its weights, and what else would work."""
    close = similar_models(name)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    if "/" in name and not name.startswith((".", "/", "~")):
        how = (
            f" To plan it, fetch only its config.json (a few KB, no weights) into the Hugging Face cache: "
            f"`huggingface-cli download {name} config.json` (or `hf download {name} config.json`; gated models "
            f"need `huggingface-cli login` first), then run ftplan again; or save that config.json in a folder "
            f"and set model.name to the folder's path."
        )
    else:
        how = (
            " Set model.name to a catalog id (`ftplan --list-models`), a hub id whose config.json is in the "
            "Hugging Face cache (`huggingface-cli download ID config.json`), or a local folder holding config.json."
        )
    return f"{name!r} is not in the catalog, not a local folder with config.json and not in the HF cache.{how}{hint}"
