"""Write the shipped architecture cards (ftplan/planner/catalog/cards/*.json).

    python scripts/make_catalog.py [--check] [ID ...]

Each card is derived by ftplan.derive from the published config.json values in
ftplan/planner/catalog/models.py (CARD_MODELS; each entry's "_source" is the URL it was copied
from): the model is built on the meta device and transformers / peft say which tensors exist,
which LoRA adapts and which bitsandbytes quantizes. ``--check`` fails when a shipped card
differs from what the installed libraries derive (run it after upgrading transformers or peft).

It also writes ftplan/planner/catalog/traces.json: the traced saved-activation figures (the
card's ``layer_kinds`` / ``saved_bytes_per_*``) of the hand-written catalog (MODEL_CONFIGS), whose
counts stay in ``arch.py`` but whose activations come from the model's code like a card's
(``--traces`` writes or checks only that file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ftplan.derive.meta import derive_card
from ftplan.planner.card import ArchCard
from ftplan.planner.catalog.models import CARD_MODELS, MODEL_CONFIGS
from ftplan.planner.models import CARDS_DIR, TRACES_FILE, _card_file


def published_config(hub_id: str) -> dict:
    """The config.json values of a catalog model, without the citation."""
    return {k: v for k, v in CARD_MODELS[hub_id].items() if not k.startswith("_")}


def card_of(hub_id: str) -> ArchCard:
    return derive_card(published_config(hub_id), source=CARD_MODELS[hub_id]["_source"])


def _comparable(card: ArchCard) -> str:
    from dataclasses import replace

    return replace(card, versions={}).to_json()


def traces() -> dict:
    """{hub id: traced activation figures} of the hand-written catalog, derived from each config."""
    return {hub_id: derive_card(MODEL_CONFIGS[hub_id]).activation_trace() for hub_id in sorted(MODEL_CONFIGS)}


def _traces_text(found: dict) -> str:
    """One model per line: a re-derivation's diff names the models that moved."""
    lines = [f"{json.dumps(k)}: {json.dumps(found[k], sort_keys=True)}" for k in sorted(found)]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ids", nargs="*", help="catalog ids (default: all)")
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    ap.add_argument("--traces", action="store_true", help="only the hand-written catalog's traces.json")
    args = ap.parse_args(argv)
    if args.traces or not args.ids:
        t = time.perf_counter()
        text = _traces_text(traces())
        if args.check:
            if not TRACES_FILE.exists() or TRACES_FILE.read_text(encoding="utf-8") != text:
                print("stale:", TRACES_FILE.name, file=sys.stderr)
                return 1
        else:
            TRACES_FILE.write_text(text, encoding="utf-8")
            print(f"{TRACES_FILE.name}: {len(MODEL_CONFIGS)} models  {time.perf_counter() - t:5.1f} s")
        if args.traces:
            return 0
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
