"""The trainer's reader and the Delta commit on an S3-compatible object store: a ``moto`` server this test
starts on 127.0.0.1 (skipped if moto is not installed). Spark itself cannot write ``s3a://`` here (no
hadoop-aws jar offline), so the Parquet files are written locally by Spark and uploaded; everything after
that -- footer statistics, the delta-rs commit, the manifest, and every read -- goes through the object
store with the URI a Spark user writes (``s3a://``) and ``output.storage_options``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mgoe_spark.config import load_config
from mgoe_spark.core import manifest, storage
from model import data
from schemas import TRAINING_EXAMPLES
from tests.test_storage_formats import example_rows, frame

pytest.importorskip("moto")

D = "2026-01-01"
BUCKET = "mgoe-test"


@pytest.fixture(scope="module")
def s3():
    """(pyarrow S3FileSystem, storage_options) of a moto server on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto_server did not start"
                time.sleep(0.1)
        options = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # moto has no DynamoDB lock; one writer here
        }
        fs = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield fs, options
    finally:
        proc.terminate()
        proc.wait()
        data.configure_storage({})


def _rows(root: str) -> list:
    fs, files = data.partition_files(root, D)
    return sorted(
        (r["user_id"], r["item_id"], r["split"]) for f in files for r in pq.read_table(f, filesystem=fs).to_pylist()
    )


def test_trainer_reads_a_parquet_root_given_as_s3a(spark, tmp_path, s3):
    fs, options = s3
    local = str(tmp_path / "out")
    storage.write_table(frame(spark, example_rows(30)), TRAINING_EXAMPLES, local, D)
    storage.write_table(frame(spark, example_rows(12, offset=40)), TRAINING_EXAMPLES, local, D)  # a re-run
    prefix = f"{BUCKET}/parquet-{uuid.uuid4().hex[:6]}"
    pafs.copy_files(local, prefix, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    cfg = load_config(profile="test", overrides=[f"output.root=s3a://{prefix}", "output.format=delta"])
    cfg.output.storage_options = options
    data.configure_storage(cfg.output.storage_options)
    root = f"s3a://{prefix}"
    assert data.available_run_dates(root) == data.available_run_dates(local) == [D]
    assert _rows(root) == _rows(local) and len(_rows(root)) == 12  # the manifest's version, not the first one
    assert data.read_meta(root, D) == data.read_meta(local, D)
    stream, local_stream = (
        data.ExampleStream(r, D, "train", data.read_meta(local, D), batch_size=4) for r in (root, local)
    )
    assert [b["user_id"].tolist() for b in stream] == [b["user_id"].tolist() for b in local_stream]


def test_delta_commit_and_trainer_read_on_s3(spark, tmp_path, s3):
    """The Delta writer's driver half on S3: footer statistics read through pyarrow's S3 file system, one
    delta-rs commit with the storage options, the manifest naming its log version; then the trainer reads
    the ``s3a://`` root at that version, and a second commit of the date that no manifest names is unseen."""
    from deltalake.transaction import AddAction

    fs, options = s3
    data.configure_storage(options)
    local = tmp_path / "files"
    frame(spark, example_rows(20)).coalesce(2).write.parquet(str(local))
    prefix = f"{BUCKET}/delta-{uuid.uuid4().hex[:6]}"
    root = f"s3a://{prefix}"
    base = f"{root}/{TRAINING_EXAMPLES.name}"

    def commit(rows_dir: Path) -> int:
        rel = f"run_date={D}/{uuid.uuid4().hex[:12]}"
        actions = []
        for i, f in enumerate(sorted(rows_dir.glob("*.parquet"))):
            key = f"{prefix}/{TRAINING_EXAMPLES.name}/{rel}/part-{i}.parquet"
            pafs.copy_files(str(f), key, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            info = fs.get_file_info(key)
            stats = storage._file_stats(f"s3://{key}", TRAINING_EXAMPLES, options)
            actions.append(
                AddAction(
                    f"{rel}/part-{i}.parquet", info.size, {"run_date": D}, int(info.mtime_ns // 10**6), True, stats
                )
            )
        return storage._commit_delta(base, TRAINING_EXAMPLES, D, actions, options)

    version = commit(local)
    named = manifest.Manifest(D, 0).with_entries(
        {TRAINING_EXAMPLES.name: manifest.Entry("delta", "t1", version)}, "features"
    )
    with fs.open_output_stream(f"{manifest.manifest_path(prefix, D, named.seq)}") as out:
        out.write(named.to_json().encode())
    assert data.is_delta(f"{root}/{TRAINING_EXAMPLES.name}")
    assert data.available_run_dates(root) == [D]
    expected = sorted((r[0], r[1], r[2]) for r in example_rows(20))
    assert _rows(root) == expected

    other = tmp_path / "other"
    frame(spark, example_rows(5, offset=70)).coalesce(1).write.parquet(str(other))
    assert commit(other) == version + 1  # committed, but no manifest names it: a run that never finished
    assert _rows(root) == expected
