"""Test-wide settings: nothing is written outside temporary folders, nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import tempfile

_TMP = tempfile.mkdtemp(prefix="rspp-tests-")


def pytest_configure() -> None:
    # Model caches (the assembled Gemma GGUF), library caches and HOME point at a temporary
    # folder for the whole run; hubs are told to stay offline.
    os.environ["RSPP_CACHE_DIR"] = os.path.join(_TMP, "rspp-cache")
    os.environ["XDG_CACHE_HOME"] = os.path.join(_TMP, "xdg-cache")
    os.environ["HF_HOME"] = os.path.join(_TMP, "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HOME"] = os.path.join(_TMP, "home")
    os.makedirs(os.environ["HOME"], exist_ok=True)


def pytest_unconfigure() -> None:
    shutil.rmtree(_TMP, ignore_errors=True)
