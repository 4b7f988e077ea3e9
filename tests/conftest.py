import os

# Tests never reach the Hugging Face hub: everything is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_training_kit(root):
    """The export tests' helpers (``tests/export/export_support.py``), with their tiny random
    Llama and chat dataset built under ``root`` (``root/model``, ``root/data.jsonl``).
    For the end-to-end tests of other folders, which share that one tiny model."""
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent / "export")
    sys.path.insert(0, folder)
    try:
        import export_support
    finally:
        sys.path.remove(folder)
    export_support.build_model(root / "model")
    export_support.write_dataset(root / "data.jsonl")
    return export_support
