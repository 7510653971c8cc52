"""Shared fixtures: one local SparkSession for the whole run, the one test-profile build every test that
needs built tables reads, the ../shared data path, the project's own cache, and the run's load average.

Every run prints its 15 slowest tests (``--durations=15`` in setup.cfg) and the load average at its start
and end; every test has a timeout (``timeout`` in setup.cfg, pytest-timeout), so a hang fails in minutes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.support import BUILD_DATE, BUILD_OVERRIDES, CACHE, TAOBAO_SLICE, Built, PackedEnv, load_package_script


def pytest_sessionstart(session):
    session.config._mgoe_load_start = (time.strftime("%H:%M:%S"), os.getloadavg())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    started, load = getattr(config, "_mgoe_load_start", ("?", (float("nan"),) * 3))
    fmt = "{:.2f} {:.2f} {:.2f}".format
    terminalreporter.write_line(
        f"load average (1/5/15 min): at start {started} {fmt(*load)}; "
        f"at end {time.strftime('%H:%M:%S')} {fmt(*os.getloadavg())}"
    )


@pytest.fixture(scope="session")
def spark():
    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark

    session = get_spark(load_config(profile="test").spark, app_name="mgoe-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def test_config():
    from mgoe_spark.config import load_config

    return load_config(profile="test")


@pytest.fixture(scope="session")
def built(spark, tmp_path_factory) -> Built:
    """Generate the test profile's log, then ingest, nodes and features for :data:`BUILD_DATE` on the tests'
    session, as ``mgoe build --input`` does (about 40 s on 2 idle cores), once per run: under pytest-xdist
    the first worker that needs it builds it into the run's shared temp directory while holding a lock, and
    the others read the same tables."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's dir under xdist
    home = shared / "built"
    home.mkdir(exist_ok=True)
    with open(shared / "built.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = home / "done.json"
        if not done.is_file():
            seconds = _build(spark, home)
            done.write_text(json.dumps({"seconds": seconds}))
        seconds = json.loads(done.read_text())["seconds"]
    return Built(home / "log", home / "out", BUILD_DATE, BUILD_OVERRIDES, seconds)


def _build(spark, home: Path) -> float:
    from mgoe_spark.core.metrics import write_metrics
    from mgoe_spark.features.run import run_features
    from mgoe_spark.generate.run import run_generate
    from mgoe_spark.ingest.run import run_ingest
    from mgoe_spark.nodes.run import run_nodes

    spec = Built(home / "log", home / "out", BUILD_DATE, BUILD_OVERRIDES, 0.0)
    cfg = spec.config()
    start = time.perf_counter()
    truth = spec.config(f"output.root={home / 'truth'}")  # the ground truth tables stay out of the root
    run_generate(spark, truth, str(spec.raw_log), BUILD_DATE)
    summaries = [run_ingest(spark, cfg, str(spec.raw_log), BUILD_DATE)]
    summaries += [run_nodes(spark, cfg, BUILD_DATE), run_features(spark, cfg, BUILD_DATE)]
    write_metrics(spark, cfg, summaries, BUILD_DATE)
    return time.perf_counter() - start


@pytest.fixture(scope="session")
def packed_env() -> PackedEnv:
    """The packed environment, built once per content (this Python, the pins it packs, package.py) into the
    project's test cache and reused across runs; a lock keeps xdist workers from building it twice at once.
    Cost when the key changes: about 30 s and 1 GB of disk (archive + unpacked copy); nothing after."""
    package = load_package_script()
    script = Path(package.__file__).read_text()
    key_text = "|".join([sys.version, *package.pinned_requirements(), script])
    cache = CACHE / "mgoe-env" / hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache.parent.mkdir(parents=True, exist_ok=True)
    env = PackedEnv(cache / f"mgoe-env-{package.version()}.tar.gz", cache / "environment")
    with open(cache.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (env.archive.is_file() and (env.unpacked / "bin" / "python").is_file()):
            for old in cache.parent.iterdir():
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            package.build_env(cache, keep=env.unpacked, from_installed=True, compresslevel=1)
    return env


@pytest.fixture()
def taobao_slice() -> Path:
    if not TAOBAO_SLICE.is_file():
        pytest.skip(f"real Taobao slice not found at {TAOBAO_SLICE} (../shared is absent)")
    return TAOBAO_SLICE


def pytest_collection_modifyitems(config, items):
    """The multi-JVM cluster tests (marker ``cluster``) are part of the default suite, as CI runs it.
    ``MGOE_CLUSTER_TESTS=0`` (or ``-m "not cluster"``) leaves them out of a quick local run; ``pytest -m
    cluster`` runs exactly them."""
    if os.environ.get("MGOE_CLUSTER_TESTS") != "0":
        return
    skip = pytest.mark.skip(reason="multi-JVM cluster test left out by MGOE_CLUSTER_TESTS=0")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
