"""Derive a model's architecture card from its own code (imports torch, transformers, peft).

Shell-side: ``ftplan.planner.models`` calls :func:`ftplan.derive.cache.card_for_config` for a
config.json outside the shipped catalog; the pure planner only ever sees the resulting card.
"""
