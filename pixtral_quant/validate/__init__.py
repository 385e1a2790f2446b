"""Measuring a converted checkpoint against its bf16 reference: metrics.py (pure), runner.py (models)."""
