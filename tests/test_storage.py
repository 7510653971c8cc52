"""Atomic, idempotent per-run-date Parquet writes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from jobs import storage
from jobs.storage import TableNotFound, list_run_dates, read_table, write_table
from schemas import VOCAB_USERS


def _vocab(spark, n: int, offset: int = 0):
    return spark.range(n).selectExpr(f"cast(id + {offset} as string) as raw_id", "id + 1 as id")


def test_rerun_replaces_exactly_its_date(spark, tmp_path):
    root = str(tmp_path)
    write_table(_vocab(spark, 10), VOCAB_USERS, root, "2026-01-01")
    write_table(_vocab(spark, 7), VOCAB_USERS, root, "2026-01-02")
    write_table(_vocab(spark, 3, offset=100), VOCAB_USERS, root, "2026-01-01")  # re-run of day 1
    assert list_run_dates(spark, VOCAB_USERS, root) == ["2026-01-01", "2026-01-02"]
    day1 = read_table(spark, VOCAB_USERS, root, "2026-01-01")
    assert sorted(r.raw_id for r in day1.collect()) == ["100", "101", "102"]
    both = read_table(spark, VOCAB_USERS, root, ["2026-01-01", "2026-01-02"])
    assert dict(both.groupBy("run_date").count().collect()) == {"2026-01-01": 3, "2026-01-02": 7}
    # Nothing left behind in staging or trash.
    assert not list((tmp_path / "vocab_users" / "_staging").iterdir())
    assert not list((tmp_path / "vocab_users" / "_trash").iterdir())


def test_crash_before_publish_keeps_previous_version(spark, tmp_path, monkeypatch):
    root = str(tmp_path)
    write_table(_vocab(spark, 5), VOCAB_USERS, root, "2026-01-01")
    real_fs = storage._fs

    def crashing_fs(spark_, path):
        if "_staging" not in path:  # the publish step looks up the target: simulate a kill right there
            raise KeyboardInterrupt("killed")
        return real_fs(spark_, path)

    monkeypatch.setattr(storage, "_fs", crashing_fs)
    with pytest.raises(KeyboardInterrupt):
        write_table(_vocab(spark, 50), VOCAB_USERS, root, "2026-01-01")
    monkeypatch.setattr(storage, "_fs", real_fs)
    assert read_table(spark, VOCAB_USERS, root, "2026-01-01").count() == 5  # old version intact, no mix


def test_schema_is_enforced_and_row_groups_capped(spark, tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns \['id'\]"):
        write_table(spark.range(3).selectExpr("cast(id as string) raw_id"), VOCAB_USERS, str(tmp_path), "2026-01-01")
    path = write_table(_vocab(spark, 5000).coalesce(1), VOCAB_USERS, str(tmp_path), "2026-01-01", row_group_rows=1000)
    files = [p for p in (tmp_path / "vocab_users" / "run_date=2026-01-01").glob("*.parquet")]
    meta = pq.ParquetFile(files[0]).metadata
    assert path.endswith("run_date=2026-01-01")
    assert (meta.num_rows, meta.num_row_groups) == (5000, 5)
    assert pq.read_schema(files[0]).remove_metadata() == VOCAB_USERS.arrow(with_partition=False).remove_metadata()


def test_missing_partition_names_the_stage(spark, tmp_path):
    with pytest.raises(TableNotFound, match="table 'vocab_users' has no partition"):
        read_table(spark, VOCAB_USERS, str(tmp_path), "2030-01-01")
