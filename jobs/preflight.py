"""The checks ``mgoe`` runs before importing anything else: the right Python with the packages installed.

Standard library only, so it runs (and explains itself in one line) even under an interpreter that has none
of the project's dependencies, e.g. the system ``python3`` instead of the project's ``.venv``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable

MIN_PYTHON = (3, 11)
"""setup.cfg's ``python_requires`` (a test keeps the two equal)."""

REQUIRED = ("pyspark", "numpy", "pyarrow", "faiss", "torch", "yaml")
"""Top-level modules every subcommand may import (faiss comes from faiss-cpu, yaml from PyYAML)."""

HINT = "run scripts/setup.sh and use .venv/bin/mgoe (or activate .venv)"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None  # finds, does not import
    except (ImportError, ValueError):
        return False


def problem(
    version: tuple[int, ...] | None = None,
    executable: str | None = None,
    installed: Callable[[str], bool] = _installed,
) -> str | None:
    """One line saying what is wrong with this interpreter, or None when it can run mgoe."""
    version = tuple(version or sys.version_info[:3])
    executable = executable or sys.executable or "python"
    shown = ".".join(str(v) for v in version[:3])
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return f"{executable} is Python {shown}; mgoe needs Python {need}+: {HINT}"
    missing = [name for name in REQUIRED if not installed(name)]
    if missing:
        return f"{executable} (Python {shown}) lacks {', '.join(missing)}: {HINT}"
    return None
