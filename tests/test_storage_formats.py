"""Table writing as Parquet and Delta: round trip, re-run of a date, crash before publish/commit,
row-group caps, and the Delta table read by delta-rs itself."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from mgoe_spark.core import storage
from schemas import TASK_LOOKUP, TRAINING_EXAMPLES

FORMATS = ["parquet", "delta"]


def example_rows(n: int, offset: int = 0) -> list[tuple]:
    """TRAINING_EXAMPLES rows (without run_date) that differ with ``offset``."""
    rows = []
    for r in range(n):
        u = r + offset
        rows.append(
            (
                u + 1,
                (u * 7) % 5 + 1,
                ["train", "valid", "test"][r % 3],
                [float(r % 2), 0.0],
                u % 3,
                (u + 1) % 3,
                [[0.5 * u, 1.0, 0.0], [1.0, 2.0, float(r)]],
                [[1.0, 0.0, 0.0], [0.0, 0.25, 0.75]],
                [[u + 1, 0], [0, 0]],
                [[3, 2], [1, 0]],
                [0.25, 0.0],
                r % 4 == 0,
            )
        )
    return rows


def frame(spark, rows, schema=TRAINING_EXAMPLES):
    return spark.createDataFrame(rows, schema.spark(with_partition=False))


def as_set(df) -> set:
    return {tuple(_freeze(v) for v in row) for row in df.collect()}


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def delta_rows(path: str, run_date: str | None = None) -> set:
    table = DeltaTable(path).to_pyarrow_table()
    out = set()
    for rec in table.to_pylist():
        if run_date is None or rec["run_date"] == run_date:
            out.add(tuple(_freeze(rec[c]) for c in TRAINING_EXAMPLES.column_names + ["run_date"]))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_schema_and_rows(spark, tmp_path, fmt):
    root = str(tmp_path / "out")
    rows = example_rows(7)
    storage.write_table(frame(spark, rows), TRAINING_EXAMPLES, root, "2026-01-02", format=fmt)
    back = storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-02", format=fmt)
    assert back.schema.simpleString() == TRAINING_EXAMPLES.spark().simpleString()
    expected = {tuple(_freeze(v) for v in r) + ("2026-01-02",) for r in rows}
    assert as_set(back) == expected
    assert storage.list_run_dates(spark, TRAINING_EXAMPLES, root, fmt) == ["2026-01-02"]
    if fmt == "delta":
        # delta-rs reads the table on its own, with the partition column from the log
        path = storage.table_path(root, TRAINING_EXAMPLES)
        assert delta_rows(path) == expected
        actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
        assert sum(a["num_records"] for a in actions) == len(rows)
        with_rows = [a for a in actions if a["num_records"]]
        assert all(a["min.user_id"] <= a["max.user_id"] for a in with_rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rerun_replaces_exactly_its_date(spark, tmp_path, fmt):
    root = str(tmp_path / "out")
    first, other, second = example_rows(4), example_rows(3, offset=100), example_rows(5, offset=200)
    storage.write_table(frame(spark, first), TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    storage.write_table(frame(spark, other), TRAINING_EXAMPLES, root, "2026-01-02", format=fmt)
    storage.write_table(frame(spark, second), TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    d1 = storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    both = storage.read_table(spark, TRAINING_EXAMPLES, root, ["2026-01-01", "2026-01-02"], format=fmt)
    assert as_set(d1) == {tuple(_freeze(v) for v in r) + ("2026-01-01",) for r in second}
    assert both.count() == len(second) + len(other)
    assert storage.list_run_dates(spark, TRAINING_EXAMPLES, root, fmt) == ["2026-01-01", "2026-01-02"]
    if fmt == "delta":
        path = storage.table_path(root, TRAINING_EXAMPLES)
        assert len(delta_rows(path, "2026-01-01")) == len(second)
        assert len(delta_rows(path, "2026-01-02")) == len(other)


@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_before_publish_leaves_previous_version(spark, tmp_path, fmt, monkeypatch):
    root = str(tmp_path / "out")
    old = example_rows(4)
    storage.write_table(frame(spark, old), TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after the data files were written")

    if fmt == "delta":
        monkeypatch.setattr(storage, "_commit_delta", crash)
    else:
        monkeypatch.setattr(storage.Transaction, "_publish_parquet", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        storage.write_table(frame(spark, example_rows(6, offset=50)), TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    monkeypatch.undo()
    back = storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    expected = {tuple(_freeze(v) for v in r) + ("2026-01-01",) for r in old}
    assert as_set(back) == expected  # previous version, nothing of the crashed one
    if fmt == "delta":
        assert delta_rows(storage.table_path(root, TRAINING_EXAMPLES)) == expected
        # the failed attempt deleted its own data files (a killed one would leave them outside the log)
        files = list((tmp_path / "out" / "training_examples").rglob("*.parquet"))
        assert len({f.parent for f in files}) == 1
    # a later successful re-run works normally
    storage.write_table(frame(spark, example_rows(2, offset=9)), TRAINING_EXAMPLES, root, "2026-01-01", format=fmt)
    assert storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-01", format=fmt).count() == 2


def test_first_delta_write_crashing_leaves_no_table(spark, tmp_path, monkeypatch):
    root = str(tmp_path / "out")
    monkeypatch.setattr(storage, "_commit_delta", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        storage.write_table(frame(spark, example_rows(3)), TRAINING_EXAMPLES, root, "2026-01-01", format="delta")
    monkeypatch.undo()
    with pytest.raises(storage.TableNotFound):
        storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-01", format="delta")
    # the retry is not mistaken for a plain-Parquet table
    storage.write_table(frame(spark, example_rows(3)), TRAINING_EXAMPLES, root, "2026-01-01", format="delta")
    assert storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-01-01", format="delta").count() == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_row_groups_are_capped(spark, tmp_path, fmt):
    root = str(tmp_path / "out")
    rows = [(u, "click", m, 0.5) for u in range(1, 24) for m in (1, 2)]
    df = spark.createDataFrame(rows, "user_id long, task string, macro_id int, value double").coalesce(1)
    df = df.selectExpr("'train' as snapshot", "*")
    storage.write_table(df, TASK_LOOKUP, root, "2026-01-01", row_group_rows=5, format=fmt)
    files = list((tmp_path / "out" / "task_lookup").rglob("*.parquet"))
    assert len(files) == 1
    meta = pq.ParquetFile(files[0]).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(sizes) == len(rows) and max(sizes) <= 5 and len(sizes) >= len(rows) // 5
    # sorted within the file by the schema's sort keys
    table = pq.read_table(files[0])
    keys = list(zip(table["user_id"].to_pylist(), table["macro_id"].to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_formats_cannot_be_mixed_and_bad_format_is_named(spark, tmp_path):
    root = str(tmp_path / "out")
    storage.write_table(frame(spark, example_rows(2)), TRAINING_EXAMPLES, root, "2026-01-01", format="delta")
    with pytest.raises(ValueError, match="is a Delta table"):
        storage.write_table(frame(spark, example_rows(2)), TRAINING_EXAMPLES, root, "2026-01-02", format="parquet")
    root2 = str(tmp_path / "out2")
    storage.write_table(frame(spark, example_rows(2)), TRAINING_EXAMPLES, root2, "2026-01-01")
    with pytest.raises(ValueError, match="plain Parquet"):
        storage.write_table(frame(spark, example_rows(2)), TRAINING_EXAMPLES, root2, "2026-01-02", format="delta")
    with pytest.raises(ValueError, match="output.format"):
        storage.write_table(frame(spark, example_rows(2)), TRAINING_EXAMPLES, root2, "2026-01-02", format="orc")
    with pytest.raises(storage.TableNotFound):
        storage.read_table(spark, TRAINING_EXAMPLES, root, "2026-02-02", format="delta")


def test_delta_uri_mapping():
    assert storage.delta_uri("file:///tmp/x") == "/tmp/x"
    assert storage.delta_uri("s3a://b/p") == "s3://b/p"
    assert storage.spark_path("s3://b/p/f.parquet") == "s3a://b/p/f.parquet"
    assert storage.delta_uri("hdfs://nn/p") == "hdfs://nn/p"
