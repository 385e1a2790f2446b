"""Renderers for the built-in calibration and evaluation sets (used by scripts/make_calibration_sets.py).

Every generator is a pure function of a `random.Random` seeded from a string, so the sets rebuild
byte-for-byte with the same library versions (Pillow, matplotlib, FreeType, libjpeg, libwebp).
"""
