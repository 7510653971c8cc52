"""A stage's tables appear together, and two writers of one run date cannot corrupt each other.

- a driver killed (SIGKILL, a real process) between the publishes of two tables of one stage: every reader
  (Spark's, the trainer's) sees the previous complete set, and the next run of the date rolls back and
  completes;
- two writers racing on one table and date: one publishes, the other fails with a clear error before it
  touches anything, and what is read back is exactly one complete version;
- a lost compare-and-swap on the manifest leaves the new tables unseen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mgoe_spark.core import manifest, storage
from mgoe_spark.core.storage import ConcurrentWriteError, TableStore, Transaction, read_table
from model import data
from schemas import VOCAB_ITEMS, VOCAB_USERS
from tests.support import JVM_OPTIONS, REPO

D = "2026-01-01"


def _vocab(spark, n: int, offset: int = 0):
    return spark.range(n).selectExpr(
        f"cast(id + {offset} as string) as raw_id", "id + 1 as id", f"'{D}' as first_run_date"
    )


def _raw_ids(spark, root, schema, run_date: str = D) -> list[str]:
    return sorted(r.raw_id for r in read_table(spark, schema, root, run_date).collect())


def _trainer_raw_ids(root, schema) -> list[str]:
    import pyarrow.parquet as pq

    fs, files = data.partition_files(root, D, schema.name)
    return sorted(v for f in files for v in pq.read_table(f, filesystem=fs).column("raw_id").to_pylist())


KILLED_STAGE = """
import os, sys, time
from mgoe_spark.core import storage
from mgoe_spark.core.session import get_spark
from mgoe_spark.config import load_config
from schemas import VOCAB_ITEMS, VOCAB_USERS

root, marker = sys.argv[1], sys.argv[2]
published = storage.Transaction._publish_parquet

def publish_then_hang(self, staged):
    moved = published(self, staged)
    if staged.schema.name == VOCAB_USERS.name:  # the first table is out: tell the test, wait for the kill
        open(marker, "w").close()
        time.sleep(600)
    return moved

storage.Transaction._publish_parquet = publish_then_hang
spark = get_spark(load_config(profile="test").spark, "killed-between-publishes")
store = storage.TableStore(spark, root, lease_seconds=3)
with store.transaction("2026-01-01", stage="ingest"):
    cols = ("cast(id + 500 as string) raw_id", "id + 1 as id", "'2026-01-01' as first_run_date")
    store.write(spark.range(4).selectExpr(*cols), VOCAB_USERS, "2026-01-01")
    store.write(spark.range(6).selectExpr(*cols), VOCAB_ITEMS, "2026-01-01")
"""


def test_driver_killed_between_two_publishes_leaves_the_previous_set(spark, tmp_path):
    root = str(tmp_path / "out")
    store = TableStore(spark, root, lease_seconds=3)
    with store.transaction(D, stage="ingest"):  # the previous complete set: 3 users, 2 items
        store.write(_vocab(spark, 3), VOCAB_USERS, D)
        store.write(_vocab(spark, 2), VOCAB_ITEMS, D)
    before = {s.name: _raw_ids(spark, root, s) for s in (VOCAB_USERS, VOCAB_ITEMS)}

    marker = tmp_path / "published-one"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAVA_TOOL_OPTIONS": JVM_OPTIONS}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, root, str(marker)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the stage never reached its first publish"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies between the two publishes
    finally:
        proc.kill()
        proc.wait()

    partition = tmp_path / "out" / "vocab_users" / f"run_date={D}"
    assert sorted(p.name for p in partition.glob("*.parquet")) and (partition / manifest.VERSION_MARKER).exists()
    for schema in (VOCAB_USERS, VOCAB_ITEMS):  # the new vocab_users IS on disk, yet every reader sees the old set
        assert _raw_ids(spark, root, schema) == before[schema.name]
        assert _trainer_raw_ids(root, schema) == before[schema.name]
    assert data.available_run_dates(root, VOCAB_USERS.name) == [D]

    with pytest.raises(ConcurrentWriteError):  # the dead driver's lease is still fresh
        with store.transaction(D, stage="ingest"):
            pass
    time.sleep(3.5)  # not renewed for lease_seconds: stale
    with store.transaction(D, stage="ingest"):  # the rerun: rolls the orphan back, then completes
        store.write(_vocab(spark, 5, offset=900), VOCAB_USERS, D)
        assert _raw_ids(spark, root, VOCAB_ITEMS) == before[VOCAB_ITEMS.name]  # not published yet
        store.write(_vocab(spark, 7, offset=900), VOCAB_ITEMS, D)
    assert len(_raw_ids(spark, root, VOCAB_USERS)) == 5 and len(_trainer_raw_ids(root, VOCAB_ITEMS)) == 7
    assert not list((tmp_path / "out" / "vocab_users" / "_prev").iterdir())


def test_readers_see_no_table_of_a_stage_until_its_end(spark, tmp_path):
    root = str(tmp_path)
    store = TableStore(spark, root)
    store.write(_vocab(spark, 3), VOCAB_USERS, D)
    store.write(_vocab(spark, 2), VOCAB_ITEMS, D)
    with store.transaction(D, stage="ingest"):
        store.write(_vocab(spark, 8, offset=100), VOCAB_USERS, D)
        assert len(_raw_ids(spark, root, VOCAB_USERS)) == 8  # the stage itself reads what it staged ...
        seen = {}
        reader = threading.Thread(target=lambda: seen.update(users=len(_raw_ids(spark, root, VOCAB_USERS))))
        reader.start()
        reader.join()
        assert seen == {"users": 3}  # ... another reader (thread) sees the published version
        assert len(_trainer_raw_ids(root, VOCAB_USERS)) == 3
        store.write(_vocab(spark, 9, offset=100), VOCAB_ITEMS, D)
    assert (len(_raw_ids(spark, root, VOCAB_USERS)), len(_trainer_raw_ids(root, VOCAB_ITEMS))) == (8, 9)


def test_two_writers_racing_on_one_date_publish_exactly_one_version(spark, tmp_path):
    """Writer A is slow (its job sleeps while it writes); writer B starts while A is writing. B fails at once
    with a one-line error and touches nothing; A publishes; the table reads back as exactly A's rows."""
    root = str(tmp_path)
    write_table = storage.write_table
    write_table(_vocab(spark, 2), VOCAB_USERS, root, D)
    from pyspark.sql import functions as F

    slow = F.udf(lambda x: (time.sleep(0.5), x)[1], "string")
    a_rows = _vocab(spark, 40, offset=1000).repartition(4).withColumn("raw_id", slow("raw_id"))
    outcome = {}

    def writer_a():
        outcome["a"] = write_table(a_rows, VOCAB_USERS, root, D)

    a = threading.Thread(target=writer_a)
    a.start()
    lease = tmp_path / "_leases" / f"run_date={D}"
    while not lease.exists():
        time.sleep(0.05)
    with pytest.raises(ConcurrentWriteError) as err:
        write_table(_vocab(spark, 30, offset=2000), VOCAB_USERS, root, D)
    a.join()
    assert "held by another run" in err.value.user_message() and "\n" not in err.value.user_message()
    assert "lease_seconds" in err.value.user_message()  # the hint
    assert _raw_ids(spark, root, VOCAB_USERS) == sorted(str(i) for i in range(1000, 1040))
    assert not (tmp_path / "vocab_users" / "_staging").exists() or not list(
        (tmp_path / "vocab_users" / "_staging").iterdir()
    )


def test_a_lost_manifest_swap_leaves_the_new_tables_unseen(spark, tmp_path, monkeypatch):
    root = str(tmp_path)
    storage.write_table(_vocab(spark, 3), VOCAB_USERS, root, D)
    real_latest = manifest.latest

    def another_run_committed_meanwhile(files, root_, run_date):
        current = real_latest(files, root_, run_date)
        files.create_exclusive(manifest.manifest_path(root_, run_date, current.seq + 1), current.to_json())
        return current

    monkeypatch.setattr(manifest, "latest", another_run_committed_meanwhile)
    with pytest.raises(ConcurrentWriteError, match="written by another run"):
        with Transaction(spark, root, D, stage="ingest"):
            storage.write_table(_vocab(spark, 9), VOCAB_USERS, root, D)
    monkeypatch.undo()
    assert len(_raw_ids(spark, root, VOCAB_USERS)) == 3


@pytest.mark.parametrize("root", ["s3a://bucket/mgoe", "gs://bucket/mgoe", "abfss://c@acct.dfs.core.windows.net/m"])
def test_parquet_on_an_object_store_is_refused_in_one_line(spark, root):
    from mgoe_spark.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="use output.format=delta") as err:
        load_config(profile="test", overrides=[f"output.root={root}"])
    assert "\n" not in err.value.user_message()
    load_config(profile="test", overrides=[f"output.root={root}", "output.format=delta"])  # Delta is fine
    with pytest.raises(storage.StorageError, match="use output.format=delta"):
        storage.write_table(_vocab(spark, 2), VOCAB_USERS, root, D)


def test_two_ingests_into_one_root_run_one_at_a_time(spark, tmp_path):
    """The vocabulary is one numbering across run dates: while one ingest holds the root's vocabulary lease
    (from before it reads the vocabulary until it has published), an ingest of ANOTHER date fails at once,
    with one line, and publishes nothing."""
    from mgoe_spark.config import load_config
    from mgoe_spark.ingest.run import VOCABULARY_LEASE, run_ingest

    log = tmp_path / "log.csv"
    log.write_text("1,10,1,pv,1511700000\n2,11,1,buy,1511700100\n")
    cfg = load_config(profile="test", overrides=[f"output.root={tmp_path / 'out'}"])
    store = TableStore.of(spark, cfg)
    with store.lease(VOCABULARY_LEASE):  # another ingest, mid-way
        with pytest.raises(ConcurrentWriteError, match="_leases/vocabulary is held by another run"):
            run_ingest(spark, cfg, str(log), "2017-11-27")
    assert not (tmp_path / "out" / "vocab_users").exists()
    run_ingest(spark, cfg, str(log), "2017-11-27")  # released: the ingest runs
    assert len(_raw_ids(spark, cfg.output.root, VOCAB_USERS, "2017-11-27")) == 2
