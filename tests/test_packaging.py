"""Packaging: building the wheel is quiet (no setuptools warnings a new user sees in scripts/setup.sh) and the
wheel carries the built-in profiles the config loader reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from mgoe_spark.config import PROFILES

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("setup.cfg", "pyproject.toml", "README.md", "mgoe_spark", "model", "jobs", "schemas", "bench")
SHIPPED += ("airflow_dags",)


def test_wheel_builds_without_setuptools_warnings_and_ships_the_profiles(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SHIPPED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    for warning in ("Warning:", "would be ignored", "is absent from the `packages`"):
        assert warning not in output, output[output.find(warning) - 500 : output.find(warning) + 500]
    (wheel,) = tmp_path.glob("mgoe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mgoe_spark/profiles/{p}.yaml" for p in PROFILES} <= names
