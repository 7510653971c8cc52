"""Mistakes in the user's data, config or environment through the real `mgoe` command: one line on stderr
with a hint, exit code 2, no traceback. (Each Spark-backed case starts its own JVM: four in all.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.common import run_guarded, user_error_line
from schemas import INTERACTIONS, WINDOWS, TableSchema

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = "2026-11-23"
DAY = int(dt.datetime(2019, 6, 17, tzinfo=dt.UTC).timestamp())


def mgoe(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not _spark_noise(ln)]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("mgoe: error: ")
    return lines[0]


def _spark_noise(line: str) -> bool:
    """JVM start-up chatter on stderr that is not the job's own output."""
    return any(s in line for s in (" WARN ", "WARNING: Using incubator", "log4j", "setLogLevel", "Setting default log"))


def write_partition(root: Path, schema: TableSchema, columns: dict) -> None:
    part = root / schema.name / f"run_date={RUN_DATE}"
    part.mkdir(parents=True)
    pq.write_table(pa.table(columns, schema=schema.arrow(with_partition=False)), part / "part-00000.parquet")


def test_day_log_with_two_days_suggests_date_windows(tmp_path):
    log = tmp_path / "UserBehavior.csv"
    rows = [f"{u},{i},7,pv,{DAY + 86_400 * (u % 2)}" for u in range(1, 40) for i in range(1, 6)]
    log.write_text("\n".join(rows) + "\n")
    line = one_line_error(mgoe("build", "--input", str(log), "--profile", "test", "--output", str(tmp_path / "out")))
    assert "cannot split the log (2019-06-17 .. 2019-06-18)" in line
    assert "--set windows.mode=dates --set windows.train_cutoff=" in line


@pytest.fixture()
def ingested(tmp_path) -> Path:
    """An interactions table of ten days (written with pyarrow: no Spark in the test process)."""
    root = tmp_path / "out"
    n = 200
    write_partition(
        root,
        INTERACTIONS,
        {
            "user_id": [e % 20 + 1 for e in range(n)],
            "item_id": [e % 15 + 1 for e in range(n)],
            "task": ["click"] * n,
            "ts": [DAY + 86_400 * (e % 10) for e in range(n)],
            "category": [None] * n,
        },
    )
    return root


def test_features_with_other_windows_than_nodes_chose(ingested):
    settings = json.dumps({"mode": "quantile", "q1": 0.8, "q2": 0.9, "time_unit": "epoch_seconds"}, sort_keys=True)
    write_partition(
        ingested,
        WINDOWS,
        {
            "train_cutoff": [DAY + 7 * 86_400],
            "test_cutoff": [DAY + 8 * 86_400],
            "time_unit": ["epoch_seconds"],
            "mode": ["quantile"],
            "settings": [settings],
            "events": [200],
            "feature_share": [0.8],
            "train_share": [0.1],
            "test_share": [0.1],
        },
    )
    common = ["--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested)]
    line = one_line_error(mgoe("features", *common, "--set", "windows.q2=0.95"))
    chosen = "windows.mode=quantile windows.q1=0.8 windows.q2=0.9"
    assert f"`mgoe nodes` chose the windows of 2026-11-23 with {chosen}," in line
    assert "asks for windows.mode=quantile windows.q1=0.8 windows.q2=0.95" in line


def test_date_windows_after_the_log_name_the_empty_window(ingested):
    dates = ["--set", "windows.mode=dates", "--set", "windows.train_cutoff=2019-06-20"]
    dates += ["--set", "windows.test_cutoff=2019-07-30"]
    line = one_line_error(mgoe("nodes", "--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested), *dates))
    assert "the test sample window is empty" in line and "features <= 2019-06-20" in line


def test_parquet_root_written_as_delta(ingested):
    # ingest would add to a root whose tables are plain Parquet, as Delta
    log = ingested.parent / "log.csv"
    log.write_text("".join(f"{u},1,7,pv,{DAY + u}\n" for u in range(1, 30)))
    args = ["ingest", "--input", str(log), "--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested)]
    line = one_line_error(mgoe(*args, "--set", "output.format=delta"))
    assert "holds plain Parquet partitions; use output.format=parquet" in line


def test_trainer_without_examples_gets_a_hint(tmp_path):
    line = one_line_error(mgoe("train", "--profile", "test", "--examples-root", str(tmp_path / "nothing"), "--quiet"))
    assert "no training_examples table under" in line and "mgoe build" in line


def test_kmeans_data_errors_are_mapped_to_one_line_and_bugs_are_not(spark, capsys):
    from mgoe_spark.kmeans import WeightedKMeans

    rows = [(i, [0.0, 0.0], 1.0) for i in range(1, 9)]
    zeros = spark.createDataFrame(rows, "node_id long, vector array<float>, weight double")
    assert run_guarded(lambda _args: WeightedKMeans(k=2, seed=0).fit(zeros), None) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgoe: error: all 8 node vectors are zero") and "lower kmeans.k_" in err and "\n" not in err
    assert user_error_line(ValueError("an internal bug")) is None  # a plain bug keeps its traceback
