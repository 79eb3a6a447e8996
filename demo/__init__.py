"""Standalone demo of d-vecDB: ``python -m demo``."""
