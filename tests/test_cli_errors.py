"""Mistakes in the user's data, config or environment through the `mgoe` command's entry point
(``jobs.cli.main``, in this process on the tests' one Spark session): one line on stderr with a hint, exit
code 2, no traceback. That the installed command's process exits 2 with nothing else on stderr is checked
through a real subprocess in tests/test_cli_end_to_end.py; here a JVM start per case would add ~10 s each."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.common import run_guarded, user_error_line
from schemas import INTERACTIONS, WINDOWS, TableSchema

RUN_DATE = "2026-11-23"
DAY = int(dt.datetime(2019, 6, 17, tzinfo=dt.UTC).timestamp())


@pytest.fixture()
def mgoe(spark, capsys):
    """``mgoe(*args)`` -> (exit code, stderr) of the entry point, run on the shared session."""

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().err

    return run


def one_line_error(result: tuple[int, str]) -> str:
    code, err = result
    assert code == 2, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("mgoe: error: ")
    return lines[0]


def write_partition(root: Path, schema: TableSchema, columns: dict) -> None:
    part = root / schema.name / f"run_date={RUN_DATE}"
    part.mkdir(parents=True)
    pq.write_table(pa.table(columns, schema=schema.arrow(with_partition=False)), part / "part-00000.parquet")


def test_day_log_with_two_days_suggests_date_windows(mgoe, tmp_path):
    log = tmp_path / "UserBehavior.csv"
    rows = [f"{u},{i},7,pv,{DAY + 86_400 * (u % 2)}" for u in range(1, 40) for i in range(1, 6)]
    log.write_text("\n".join(rows) + "\n")
    line = one_line_error(mgoe("build", "--input", str(log), "--profile", "test", "--output", str(tmp_path / "out")))
    assert "cannot split the log (2019-06-17 .. 2019-06-18)" in line
    assert "--set windows.mode=dates --set windows.train_cutoff=" in line


@pytest.fixture()
def ingested(tmp_path) -> Path:
    """An interactions table of ten days (written with pyarrow)."""
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


def test_features_with_other_windows_than_nodes_chose(mgoe, ingested):
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
            "valid_cutoff": [None],
            "valid_share": [None],
        },
    )
    common = ["--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested)]
    line = one_line_error(mgoe("features", *common, "--set", "windows.q2=0.95"))
    chosen = "windows.mode=quantile windows.q1=0.8 windows.q2=0.9"
    assert f"`mgoe nodes` chose the windows of 2026-11-23 with {chosen}," in line
    assert "asks for windows.mode=quantile windows.q1=0.8 windows.q2=0.95" in line


def test_date_windows_after_the_log_name_the_empty_window(mgoe, ingested):
    dates = ["--set", "windows.mode=dates", "--set", "windows.train_cutoff=2019-06-20"]
    dates += ["--set", "windows.test_cutoff=2019-07-30"]
    line = one_line_error(mgoe("nodes", "--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested), *dates))
    assert "the test sample window is empty" in line and "features <= 2019-06-20" in line


def test_parquet_root_written_as_delta(mgoe, ingested):
    # ingest would add to a root whose tables are plain Parquet, as Delta
    log = ingested.parent / "log.csv"
    log.write_text("".join(f"{u},1,7,pv,{DAY + u}\n" for u in range(1, 30)))
    args = ["ingest", "--input", str(log), "--profile", "test", "--run-date", RUN_DATE, "--output", str(ingested)]
    line = one_line_error(mgoe(*args, "--set", "output.format=delta"))
    assert "holds plain Parquet partitions; use output.format=parquet" in line


def test_trainer_without_examples_gets_a_hint(mgoe, tmp_path):
    line = one_line_error(mgoe("train", "--profile", "test", "--examples-root", str(tmp_path / "nothing"), "--quiet"))
    assert "no training_examples table under" in line and "mgoe build" in line


def test_kmeans_data_errors_are_mapped_to_one_line_and_bugs_are_not(spark, capsys):
    from mgoe_spark.nodes.kmeans import WeightedKMeans

    rows = [(i, [0.0, 0.0], 1.0) for i in range(1, 9)]
    zeros = spark.createDataFrame(rows, "node_id long, vector array<float>, weight double")
    assert run_guarded(lambda _args: WeightedKMeans(k=2, seed=0).fit(zeros), None) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgoe: error: all 8 node vectors are zero") and "lower kmeans.k_" in err and "\n" not in err
    assert user_error_line(ValueError("an internal bug")) is None  # a plain bug keeps its traceback


def test_input_format_errors_carry_their_hint_whatever_function_raised_them(mgoe, tmp_path):
    # A generic CSV whose header lacks the configured columns: the parser's InputFormatError names the
    # columns and carries its hint (no lookup by the raising function's name, so a rename changes nothing).
    log = tmp_path / "events.csv"
    log.write_text("a,b\n1,2\n")
    out = str(tmp_path / "out")
    args = ["ingest", "--profile", "test", "--input", str(log), "--output", out, "--set", "input.format=generic_csv"]
    line = one_line_error(mgoe(*args))
    assert "input has no column(s) ['user_id', 'item_id', 'behavior', 'timestamp']" in line
    assert line.endswith("; check input.format and the input.*_column settings against the file")


def test_every_user_error_type_is_one_line_with_its_hint():
    from mgoe_spark.config import ConfigError
    from mgoe_spark.core.errors import InputFormatError, UserError
    from mgoe_spark.core.session import EnvironmentProblem
    from mgoe_spark.core.storage import StorageError, TableNotFound
    from mgoe_spark.nodes.kmeans.loop import FitInputError
    from mgoe_spark.windows.cutoffs import WindowError
    from model.data import DataError

    for kind in (ConfigError, EnvironmentProblem, StorageError, TableNotFound, WindowError, FitInputError, DataError):
        assert issubclass(kind, UserError), kind
        assert user_error_line(kind("two\nlines")).startswith("mgoe: error: two lines")
    assert (
        user_error_line(InputFormatError("bad"))
        == "mgoe: error: bad; check input.format and the input.*_column settings"
    )
    assert user_error_line(FitInputError("x")).endswith(
        "; check the input log and the feature window (windows.*), or lower kmeans.k_*"
    )
    table = user_error_line(TableNotFound("table 'centroids' has no partition at /x"))
    assert table.endswith("(`mgoe nodes --run-date D` writes it)")
    assert user_error_line(DataError("no table")).endswith("or point --examples-root there")
