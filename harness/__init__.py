"""Benchmark harness for full fine-tuning, LoRA, AdaLoRA and DoRA (PEFT underneath)."""

__version__ = "0.1.0"
