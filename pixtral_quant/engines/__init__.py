"""Inference engines other than plain transformers, each driven from its own module (`vllm`)."""
