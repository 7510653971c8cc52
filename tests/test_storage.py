"""Atomic, idempotent per-run-date Parquet writes."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from mgoe_spark.core import storage
from mgoe_spark.core.lease import Lease
from mgoe_spark.core.storage import TableNotFound, Transaction, list_run_dates, read_table, write_table
from schemas import VOCAB_USERS


def _vocab(spark, n: int, offset: int = 0):
    return spark.range(n).selectExpr(
        f"cast(id + {offset} as string) as raw_id", "id + 1 as id", "'2026-01-01' as first_run_date"
    )


def _leftovers(tmp_path, table="vocab_users") -> list[str]:
    base = tmp_path / table
    return sorted(p.name for kind in ("_staging", "_prev") if (base / kind).exists() for p in (base / kind).iterdir())


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
    assert _leftovers(tmp_path) == []  # nothing left behind in staging or _prev
    assert not (tmp_path / "_leases" / "run_date=2026-01-01").exists()  # the lease is released


def _parquet_rows(directory) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.rglob("*.parquet"))


def _die_in(monkeypatch, where: str) -> None:
    """Make the next write die in ``Transaction.<where>`` as a killed driver would: no cleanup, no release of
    its lease (which then stops being renewed)."""

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Transaction, where, killed)
    monkeypatch.setattr(Transaction, "_discard", lambda self: None)
    monkeypatch.setattr(Lease, "release", lambda self: self._stop.set())


def test_kill_after_staging_keeps_previous_version_and_next_write_cleans_up(spark, tmp_path, monkeypatch):
    """The new version is fully written to staging, then the job dies before publishing: readers still see
    the previous version (never a mix), and the next write of that date (once the dead run's lease is
    stale) removes the leftover staging."""
    root = str(tmp_path)
    write_table(_vocab(spark, 5), VOCAB_USERS, root, "2026-01-01")
    write_table(_vocab(spark, 4), VOCAB_USERS, root, "2026-01-02")
    _die_in(monkeypatch, "_publish_parquet")
    with pytest.raises(KeyboardInterrupt):
        write_table(_vocab(spark, 50), VOCAB_USERS, root, "2026-01-01", lease_seconds=2)
    monkeypatch.undo()
    staging = tmp_path / "vocab_users" / "_staging"
    (left,) = staging.iterdir()
    assert left.name.startswith("run_date=2026-01-01.") and _parquet_rows(left) == 50  # the new rows were written
    assert read_table(spark, VOCAB_USERS, root, "2026-01-01").count() == 5  # ... but not published
    assert list_run_dates(spark, VOCAB_USERS, root) == ["2026-01-01", "2026-01-02"]

    write_table(_vocab(spark, 7), VOCAB_USERS, root, "2026-01-02")  # another date: the leftover stays
    assert [p.name for p in staging.iterdir()] == [left.name]
    with pytest.raises(storage.ConcurrentWriteError, match="held by another run"):  # the dead run's lease is fresh
        write_table(_vocab(spark, 9), VOCAB_USERS, root, "2026-01-01", lease_seconds=2)
    time.sleep(2.5)
    write_table(_vocab(spark, 9), VOCAB_USERS, root, "2026-01-01", lease_seconds=2)  # stale: taken over, cleaned
    assert not list(staging.iterdir())
    assert read_table(spark, VOCAB_USERS, root, "2026-01-01").count() == 9


def test_kill_between_the_two_renames_keeps_the_previous_version(spark, tmp_path, monkeypatch):
    """Killed after the old partition was moved aside but before the new one took its place: readers see the
    kept previous version, and the next write of the date restores it before staging its own."""
    root = str(tmp_path)
    write_table(_vocab(spark, 5), VOCAB_USERS, root, "2026-01-01")
    real_rename = storage.HadoopFiles.rename

    def first_rename_only(self, src, dst):
        if "_staging" in str(src):  # the second rename: the kill lands here
            raise KeyboardInterrupt("killed")
        return real_rename(self, src, dst)

    _die_in(monkeypatch, "_prune_manifests")
    monkeypatch.setattr(storage.HadoopFiles, "rename", first_rename_only)
    with pytest.raises(KeyboardInterrupt):
        write_table(_vocab(spark, 50), VOCAB_USERS, root, "2026-01-01", lease_seconds=2)
    monkeypatch.undo()
    assert not (tmp_path / "vocab_users" / "run_date=2026-01-01").exists()  # the kill hit between the renames
    assert read_table(spark, VOCAB_USERS, root, "2026-01-01").count() == 5  # read from _prev
    assert list_run_dates(spark, VOCAB_USERS, root) == ["2026-01-01"]
    time.sleep(2.5)
    with Transaction(spark, root, "2026-01-01", stage="t", lease_seconds=2) as tx:
        tx._recover(VOCAB_USERS)  # what the next write does first
        assert (tmp_path / "vocab_users" / "run_date=2026-01-01").exists()
        assert _leftovers(tmp_path) == []
    assert read_table(spark, VOCAB_USERS, root, "2026-01-01").count() == 5


def test_schema_is_enforced_and_row_groups_capped(spark, tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns \['id'\]"):
        no_id = spark.range(3).selectExpr("cast(id as string) raw_id", "'2026-01-01' first_run_date")
        write_table(no_id, VOCAB_USERS, str(tmp_path), "2026-01-01")
    path = write_table(_vocab(spark, 5000).coalesce(1), VOCAB_USERS, str(tmp_path), "2026-01-01", row_group_rows=1000)
    files = [p for p in (tmp_path / "vocab_users" / "run_date=2026-01-01").glob("*.parquet")]
    meta = pq.ParquetFile(files[0]).metadata
    assert path.endswith("run_date=2026-01-01")
    assert (meta.num_rows, meta.num_row_groups) == (5000, 5)
    assert pq.read_schema(files[0]).remove_metadata() == VOCAB_USERS.arrow(with_partition=False).remove_metadata()


def test_missing_partition_names_the_stage(spark, tmp_path):
    with pytest.raises(TableNotFound, match="table 'vocab_users' has no partition"):
        read_table(spark, VOCAB_USERS, str(tmp_path), "2030-01-01")
