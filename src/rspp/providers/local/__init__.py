"""Offline models that ship inside Python packages, loaded once per process."""
