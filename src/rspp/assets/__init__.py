"""Data files shipped with rspp (demo recordings)."""
