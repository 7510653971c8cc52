"""What the tests share besides fixtures: paths, the project's test cache, and the session build's settings
(the fixtures themselves are in conftest.py)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MGOE_SHARED", REPO.parent / "shared"))
TAOBAO_SLICE = SHARED / "data" / "taobao_userbehavior_slice" / "UserBehavior.csv"
CACHE = Path(os.environ.get("MGOE_TEST_CACHE", REPO / ".cache" / "tests"))
"""The tests' own cache across runs (gitignored): independent of pytest's cache plugin, so ``-p
no:cacheprovider`` changes nothing."""

JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""For the tests' short-lived JVMs on tiny data (as the test profile gives the local driver): the quick JIT
tier only and one GC thread, about a quarter less CPU per JVM; results are unchanged."""

BUILD_DATE = "2026-11-23"
BUILD_OVERRIDES = ("kmeans.warm_start=false", "kmeans.max_iter=8")
"""The settings of the session's build (on top of the ``test`` profile). No warm start: a build of another
date into the same root must not read this one. Eight k-means iterations: the tests compare fits and check
tables, not cluster quality (each iteration of the jobs engine is a Spark job)."""


@dataclass(frozen=True)
class Built:
    """The session's one test-profile build: the generated log, and the tables of ``run_date`` built from it
    (ingest, nodes, features, run_metrics) under ``root``. Read-only: a test that changes tables copies them
    first."""

    raw_log: Path
    root: Path
    run_date: str
    overrides: tuple[str, ...]
    seconds: float

    def config(self, *overrides: str):
        """The build's config (``test`` profile + :data:`BUILD_OVERRIDES`) with ``overrides`` on top."""
        from mgoe_spark.config import load_config

        return load_config(profile="test", overrides=[f"output.root={self.root}", *self.overrides, *overrides])


@dataclass(frozen=True)
class PackedEnv:
    """``scripts/package.py env --from-installed --fast``: the archive (for ``--archives``) and the same
    environment unpacked (a ``bin/python`` a local driver can run)."""

    archive: Path
    unpacked: Path


def load_package_script():
    """scripts/package.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("mgoe_package", REPO / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
