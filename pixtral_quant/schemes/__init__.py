"""Quantization schemes: one config dataclass (config.py) + one handler per scheme (registry.py)."""
