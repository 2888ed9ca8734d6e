"""Metrics: composition, caption diversity and caption<->map consistency, fidelity, features.

Submodules are imported on use; this package imports nothing heavy at import time.
"""
