"""Write the shipped architecture cards (ftplan/planner/catalog/cards/*.json).

    python scripts/make_catalog.py [--check] [ID ...]

Each card is derived by ftplan.derive from the published config.json values in
ftplan/planner/catalog/models.py (CARD_MODELS; each entry's "_source" is the URL it was copied
from): the model is built on the meta device and transformers / peft say which tensors exist,
which LoRA adapts and which bitsandbytes quantizes. ``--check`` fails when a shipped card
differs from what the installed libraries derive (run it after upgrading transformers or peft).
"""

from __future__ import annotations

import argparse
import sys
import time

from ftplan.derive.meta import derive_card
from ftplan.planner.card import ArchCard
from ftplan.planner.catalog.models import CARD_MODELS
from ftplan.planner.models import CARDS_DIR, _card_file


def published_config(hub_id: str) -> dict:
    """The config.json values of a catalog model, without the citation."""
    return {k: v for k, v in CARD_MODELS[hub_id].items() if not k.startswith("_")}


def card_of(hub_id: str) -> ArchCard:
    return derive_card(published_config(hub_id), source=CARD_MODELS[hub_id]["_source"])


def _comparable(card: ArchCard) -> str:
    from dataclasses import replace

    return replace(card, versions={}).to_json()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ids", nargs="*", help="catalog ids (default: all)")
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    args = ap.parse_args(argv)
    ids = args.ids or sorted(CARD_MODELS)
    CARDS_DIR.mkdir(parents=True, exist_ok=True)
    stale = []
    for hub_id in ids:
        t = time.perf_counter()
        card = card_of(hub_id)
        path = CARDS_DIR / f"{_card_file(hub_id)}.json"
        if args.check:
            shipped = ArchCard.from_json(path.read_text()) if path.exists() else None
            if shipped is None or _comparable(shipped) != _comparable(card):
                stale.append(hub_id)
            continue
        path.write_text(card.to_json() + "\n", encoding="utf-8")
        print(f"{hub_id:50s} {card.params / 1e9:8.2f} B params  {time.perf_counter() - t:5.1f} s  {path.name}")
    if stale:
        print("stale cards:", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
