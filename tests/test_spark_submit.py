"""Stages run through the real ``spark-submit`` binary on local Spark, importing the project only from the
``--py-files`` zip that ``scripts/package.py`` builds (the application file is copied out of the repo and
the working directory is a temp dir, so nothing else could provide ``jobs`` / ``mgoe_spark``).

Each spark-submit starts a JVM (about 15 s on two idle cores): three in all, the last a whole Delta-output
build (about 60 s) on the packed environment alone, as a cluster-mode driver and its executors run it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

from schemas import INTERACTIONS, QUALITY_CHECKS, REJECTS, VOCAB_ITEMS, VOCAB_USERS, TableSchema
from tests.support import BUILD_OVERRIDES, JVM_OPTIONS

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = "2026-11-23"


def _spark_submit() -> str:
    for candidate in (Path(sys.executable).parent / "spark-submit", shutil.which("spark-submit")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("spark-submit not found next to this Python or on PATH (pip install pyspark provides it)")


@pytest.fixture(scope="module")
def py_files(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("mgoe_package", REPO / "scripts" / "package.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    return package.build_zip(tmp_path_factory.mktemp("dist"))


def submit(
    py_files: Path, job: str, args: list[str], cwd: Path, python: str = sys.executable
) -> subprocess.CompletedProcess:
    """``spark-submit --py-files <zip> <copy of jobs/<job>.py> args...`` from ``cwd``, driver and executors on
    ``python``."""
    app = cwd / "app" / f"{job}.py"
    app.parent.mkdir(exist_ok=True)
    shutil.copy(REPO / "jobs" / f"{job}.py", app)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_GATEWAY_PORT")}
    env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    # Spark's home from this venv's pyspark, as a cluster's is fixed; spark-submit would otherwise look for
    # pyspark in ``python``, which the packed environment does not have (its driver gets Spark's pyspark.zip).
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)
    cmd = [
        _spark_submit(),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        f"spark.driver.extraJavaOptions={JVM_OPTIONS}",
        "--py-files",
        str(py_files),
        str(app),
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def write_arrow(root: Path, schema: TableSchema, columns: dict) -> None:
    """Write a table partition the way mgoe_spark.core.storage lays it out, with pyarrow (no Spark here)."""
    import pyarrow as pa

    part = root / schema.name / f"run_date={RUN_DATE}"
    part.mkdir(parents=True)
    pq.write_table(pa.table(columns, schema=schema.arrow(with_partition=False)), part / "part-00000.parquet")


def read_arrow(root: Path, schema: TableSchema, run_date: str = RUN_DATE):
    return pq.read_table(root / schema.name / f"run_date={run_date}", schema=schema.arrow(with_partition=False))


def test_quality_gate_through_spark_submit(py_files, tmp_path):
    root = tmp_path / "out"
    users, items = [1, 1, 2, 3], [1, 2, 2, 1]
    write_arrow(
        root,
        INTERACTIONS,
        {
            "user_id": users,
            "item_id": items,
            "task": ["click", "buy", "click", "fav"],
            "ts": [10, 11, 12, 13],
            "category": [None] * 4,
        },
    )
    write_arrow(root, VOCAB_USERS, {"raw_id": ["a", "b", "c"], "id": [1, 2, 3], "first_run_date": [RUN_DATE] * 3})
    # duplicate id: the gate must fail
    write_arrow(root, VOCAB_ITEMS, {"raw_id": ["x", "y"], "id": [1, 1], "first_run_date": [RUN_DATE] * 2})
    args = ["--gate", "ingest", "--profile", "test", "--run-date", RUN_DATE, "--output", str(root)]

    done = submit(py_files, "quality", args, tmp_path)
    assert done.returncode == 3, done.stderr[-3000:]  # the exit code Airflow's SparkSubmitOperator sees
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "quality gate 'ingest' failed 2 check(s)" in done.stdout + done.stderr
    checks = read_arrow(root, QUALITY_CHECKS).to_pylist()
    failed = {(c["table_name"], c["check"]) for c in checks if not c["passed"]}
    assert failed == {("vocab_items", "unique_id"), ("vocab_items", "dense_ids")}
    assert {c["check"]: c["value"] for c in checks if c["table_name"] == "interactions"}["row_count"] == 4


def test_ingest_through_spark_submit_equals_the_in_process_ingest(py_files, built, tmp_path):
    """``jobs/ingest.py`` as a spark-submit application, importing only the zip: its four tables equal the
    in-process ingest of the same log (the session's build), row for row."""
    root = tmp_path / "out"
    args = ["--input", str(built.raw_log), "--profile", "test", "--run-date", built.run_date, "--output", str(root)]
    done = submit(py_files, "ingest", args, tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "[ingest]" in done.stdout + done.stderr
    for schema in (INTERACTIONS, VOCAB_USERS, VOCAB_ITEMS, REJECTS):
        got = read_arrow(root, schema, built.run_date)  # the contract schema: checks the written types
        want = read_arrow(built.root, schema, built.run_date)
        assert got.num_rows == want.num_rows, schema.name
        if got.num_rows:
            keys = [(name, "ascending") for name in got.column_names]
            assert got.sort_by(keys).equals(want.sort_by(keys)), schema.name
    assert read_arrow(root, INTERACTIONS, built.run_date).num_rows > 0


def _tiny_log(spark, out: Path) -> Path:
    """A generated Taobao-format log of 3,000 events (the test profile's shape, a seventh of its size)."""
    from mgoe_spark.config import load_config
    from mgoe_spark.generate.run import run_generate

    sizes = ["generator.events=3000", "generator.users=150", "generator.items=100"]
    cfg = load_config(profile="test", overrides=[f"output.root={out / 'truth'}", *sizes])
    run_generate(spark, cfg, str(out / "log"), RUN_DATE)
    return out / "log"


def test_delta_build_through_spark_submit_on_the_packed_env_alone(py_files, packed_env, spark, tmp_path):
    """Issue 26 item 8: ``jobs/build.py`` with ``output.format=delta`` (whose commits the driver makes with
    deltalake) through spark-submit, the driver and the executors on the packed environment's Python, the
    project from the zip: every table it writes is a Delta table with rows for the run date."""
    from deltalake import DeltaTable

    root = tmp_path / "out"
    log = _tiny_log(spark, tmp_path / "input")
    settings = [arg for item in (*BUILD_OVERRIDES, "output.format=delta") for arg in ("--set", item)]
    args = ["--input", str(log), "--profile", "test", "--run-date", RUN_DATE, "--output", str(root), *settings]
    python = str(packed_env.unpacked / "bin" / "python")
    done = submit(py_files, "build", args, tmp_path, python=python)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-1000:]}"
    tables = {path.name for path in root.iterdir() if not path.name.startswith("_")}  # _manifests, _leases
    assert (root / "_manifests" / f"run_date={RUN_DATE}").is_dir()
    assert {"interactions", "assignments", "centroids", "training_examples"} <= tables
    for name in tables:
        assert DeltaTable.is_deltatable(str(root / name)), f"{name} is not a Delta table"
        rows = DeltaTable(str(root / name)).to_pyarrow_table(filters=[("run_date", "=", RUN_DATE)]).num_rows
        assert rows > 0 or name == "rejects", name
