"""ftplan: plan, export and launch LLM fine-tuning (full, LoRA, QLoRA) that fits."""

__version__ = "0.1.0"
