"""Reading and writing the contract tables: atomic and idempotent per run date.

Layout: ``<root>/<table>/run_date=YYYY-MM-DD/part-*.parquet``. A write for a run date goes to a hidden
staging directory (``<root>/<table>/_staging/...``; Spark and pyarrow skip ``_``-prefixed paths), then is
swapped in with two renames: the old partition (if any) moves to ``_trash``, the staged one takes its place,
the trash is deleted. So a job killed mid-write leaves the previous partition readable and no partial new
one, and a re-run for a date replaces exactly that date. (On object stores without atomic rename, use the
Delta format instead.) Readers always name the partitions they read; they never glob a table directory.

All paths go through Hadoop's FileSystem API, so the same code works on local disk, HDFS and S3A/GCS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas import RUN_DATE, TableSchema


class TableNotFound(FileNotFoundError):
    """A table or run-date partition that a stage needs does not exist."""


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _fs(spark, path)
    return bool(fs.exists(hpath))


def table_path(root: str, schema: TableSchema) -> str:
    return f"{root.rstrip('/')}/{schema.name}"


def partition_path(root: str, schema: TableSchema, run_date: str) -> str:
    return f"{table_path(root, schema)}/{RUN_DATE}={run_date}"


def conform(df: DataFrame, schema: TableSchema) -> DataFrame:
    """Select and cast ``df`` to the table's columns (without ``run_date``), in contract order.

    Raises ValueError naming the missing columns: a stage that forgets one fails here, not in the trainer.
    """
    missing = [c for c in schema.column_names if c not in df.columns]
    if missing:
        raise ValueError(f"table {schema.name}: DataFrame lacks columns {missing}; has {df.columns}")
    spark_schema = schema.spark(with_partition=False)
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in spark_schema.fields])


def write_table(
    df: DataFrame,
    schema: TableSchema,
    root: str,
    run_date: str,
    *,
    row_group_rows: int | None = None,
    sort_by: Iterable[str] = (),
) -> str:
    """Atomically write ``df`` as the ``run_date`` partition of ``schema``'s table under ``root``.

    Returns the partition path. Cost: one pass over ``df`` (plus a local sort if ``sort_by`` is given).
    """
    spark = df.sparkSession
    out = conform(df, schema)
    sort_cols = list(sort_by) or list(schema.sort_within_partitions)
    if sort_cols:
        out = out.sortWithinPartitions(*sort_cols)
    base = table_path(root, schema)
    target = partition_path(root, schema, run_date)
    token = uuid.uuid4().hex[:12]
    staging = f"{base}/_staging/{RUN_DATE}={run_date}.{token}"
    writer = out.write.mode("error")
    rows = row_group_rows or schema.row_group_rows
    if rows:
        # Parquet sizes row groups in bytes; cap the rows per group through the page-size-check knobs
        # so streaming readers get predictable batches.
        writer = writer.option("parquet.block.row.count.limit", str(rows))
    writer.parquet(staging)
    fs, target_h = _fs(spark, target)
    jvm = spark.sparkContext._jvm
    trash_h = jvm.org.apache.hadoop.fs.Path(f"{base}/_trash/{RUN_DATE}={run_date}.{token}")
    staging_h = jvm.org.apache.hadoop.fs.Path(staging)
    fs.mkdirs(trash_h.getParent())
    had_old = fs.exists(target_h)
    if had_old and not fs.rename(target_h, trash_h):
        raise OSError(f"could not move old partition {target} aside")
    if not fs.rename(staging_h, target_h):
        if had_old:
            fs.rename(trash_h, target_h)
        raise OSError(f"could not publish {staging} as {target}")
    if had_old:
        fs.delete(trash_h, True)
    return target


def read_table(spark: SparkSession, schema: TableSchema, root: str, run_date: str | list[str]) -> DataFrame:
    """Read the given run-date partition(s) of a table, with the contract schema (``run_date`` included)."""
    dates = [run_date] if isinstance(run_date, str) else list(run_date)
    paths = [partition_path(root, schema, d) for d in dates]
    for p in paths:
        if not path_exists(spark, p):
            raise TableNotFound(f"table '{schema.name}' has no partition at {p}; run the stage that writes it")
    df = spark.read.schema(schema.spark(with_partition=False)).parquet(*paths)
    if len(dates) == 1:
        return df.withColumn(RUN_DATE, F.lit(dates[0]))
    return df.withColumn(RUN_DATE, F.regexp_extract(F.input_file_name(), f"{RUN_DATE}=([0-9-]+)", 1))


def list_run_dates(spark: SparkSession, schema: TableSchema, root: str) -> list[str]:
    """Run dates for which the table has a published partition, sorted."""
    fs, base_h = _fs(spark, table_path(root, schema))
    if not fs.exists(base_h):
        return []
    prefix = f"{RUN_DATE}="
    names = [s.getPath().getName() for s in fs.listStatus(base_h) if s.isDirectory()]
    return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))
