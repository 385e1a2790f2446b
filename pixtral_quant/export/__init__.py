"""Writing a converted checkpoint: tensors + configs (checkpoint.py), manifest.json (manifest.py), and the
OUT.partial → OUT rename (atomic.py)."""
