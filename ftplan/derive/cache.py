"""Cards on disk: a second plan of the same config.json is instant.

Key: sha256 of the config (sorted JSON), the trust_remote_code flag, the card format and the
installed transformers / peft / torch versions, so upgrading a library re-derives the card.
Location: ``$FTPLAN_CACHE_DIR/cards`` or ``~/.cache/ftplan/cards``.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from ftplan.planner.card import CARD_FORMAT, ArchCard


def cache_dir() -> Path:
    base = os.environ.get("FTPLAN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ftplan")
    return Path(base) / "cards"


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def card_key(config: dict, trust_remote_code: bool = False) -> str:
    """Cache key without importing torch: versions come from package metadata."""
    versions = {name: _installed(name) for name in ("transformers", "peft", "torch")}
    blob = json.dumps(
        {"config": config, "trust": trust_remote_code, "format": CARD_FORMAT, "versions": versions},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def card_for_config(config: dict, trust_remote_code: bool = False, source: str = "") -> ArchCard:
    """The cached card, or derive it on the meta device (seconds: imports torch) and cache it."""
    path = cache_dir() / f"{card_key(config, trust_remote_code)}.json"
    if path.is_file():
        try:
            return ArchCard.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged or older cache file: derive again
    from ftplan.derive.meta import derive_card

    card = derive_card(config, trust_remote_code, source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(card.to_json(), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still plans, only slower next time
    return card
