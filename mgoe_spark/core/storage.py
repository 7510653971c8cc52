"""Reading and writing the contract tables: atomic and idempotent per run date, as Parquet or Delta.

**Parquet** (``output.format=parquet``, the default). Layout: ``<root>/<table>/run_date=YYYY-MM-DD/part-*``.
A write for a run date goes to a hidden staging directory (``<root>/<table>/_staging/...``; Spark and
pyarrow skip ``_``-prefixed paths), then is swapped in with two renames: the old partition (if any) moves to
``_trash``, the staged one takes its place, the trash is deleted. So a job killed mid-write leaves the
previous partition readable and no partial new one, and a re-run for a date replaces exactly that date.
What a killed driver leaves behind (its staging directory, or a trashed old partition when it died between
the two renames) is cleaned by the next write of the same table and run date (:func:`recover_partition`);
leftovers of other run dates are never touched, so runs of different dates can write one root at once.
(On object stores without atomic rename, use the Delta format instead.)

**Delta** (``output.format=delta``). Spark's own ``format("delta")`` needs the delta-spark jars, which
cannot be fetched on an offline machine, so the commit is done by delta-rs (the ``deltalake`` package)
on the driver, and only file METADATA crosses to the driver:

1. Spark writes plain Parquet files of the new version into a fresh directory of the Delta table,
   ``<root>/<table>/run_date=D/<token>/part-*.parquet`` (``token`` unique per write attempt).
2. The driver lists those files (name, size, modification time; O(files)), reads each file's footer for
   the Delta statistics (``numRecords``, per-column min / max / nullCount of scalar columns), and commits
   one transaction with an ``AddAction`` per file, ``mode="overwrite"`` and the partition filter
   ``run_date = D``: the same commit removes every earlier file of date D and nothing else.

Until the commit the new files are not in the log, so readers (which always go through the log) do not
see them: a crash before the commit leaves the previous version of D readable and no partial new one; a
re-run replaces exactly its date. Files of a crashed attempt are unreferenced and removed by
``DeltaTable(path).vacuum()`` (delta-rs) or ``VACUUM`` (delta-spark) after the retention period.
Never read a Delta directory with ``spark.read.parquet(dir)`` (it would see uncommitted and removed
files); :func:`read_table` lists the live files of the wanted dates from the log
(``DeltaTable.file_uris(partition_filters)``) and reads exactly those.

*On a cluster with the delta-spark jars* (``spark-submit --packages io.delta:delta-spark_2.13:<ver>``,
``spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension``, ``spark.sql.catalog.spark_catalog=
org.apache.spark.sql.delta.catalog.DeltaCatalog``) the same tables are ordinary Delta tables:
``spark.read.format("delta").load(f"{root}/{table}").where("run_date = 'D'")`` reads them, ``VACUUM``,
``DESCRIBE HISTORY`` and time travel work, and a job may equally write them with
``df.write.format("delta").mode("overwrite").option("replaceWhere", "run_date = 'D'")`` -- the same
overwrite-one-date semantics as here. The log written by delta-rs uses protocol (reader 1, writer 2), which
every delta-spark 2.x+ reads.

All Parquet paths go through Hadoop's FileSystem API, so the same code works on local disk, HDFS and
S3A/GCS (for Delta on object stores, delta-rs needs ``s3://`` URIs and credentials in its environment).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config.sections import OUTPUT_FORMATS, OutputFormat
from mgoe_spark.core.errors import UserError, one_line
from mgoe_spark.core.names import WRITTEN_BY
from schemas import RUN_DATE, TableSchema
from schemas import core as layout


class TableNotFound(UserError, FileNotFoundError):
    """A table or run-date partition that a stage needs does not exist; the hint names the command that
    writes it (:data:`~mgoe_spark.core.names.WRITTEN_BY`)."""

    def user_message(self) -> str:
        text = one_line(self)
        table = next((t for t in WRITTEN_BY if f"table '{t}'" in text), None)
        return f"{text} (`{WRITTEN_BY[table]} --run-date D` writes it)" if table else text


class StorageError(UserError, ValueError):
    """The output root holds something this write cannot go with (e.g. another table format)."""


DELTA_LOG = "_delta_log"


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _fs(spark, path)
    return bool(fs.exists(hpath))


def table_path(root: str, schema: TableSchema) -> str:
    """``<root>/<table>`` (:func:`schemas.table_path`: the one definition of the layout)."""
    return layout.table_path(root, schema.name)


def partition_path(root: str, schema: TableSchema, run_date: str) -> str:
    """``<root>/<table>/run_date=D`` (:func:`schemas.partition_path`)."""
    return layout.partition_path(root, schema.name, run_date)


def conform(df: DataFrame, schema: TableSchema) -> DataFrame:
    """Select and cast ``df`` to the table's columns (without ``run_date``), in contract order.

    Raises ValueError naming the missing columns: a stage that forgets one fails here, not in the trainer.
    """
    missing = [c for c in schema.column_names if c not in df.columns]
    if missing:
        raise ValueError(f"table {schema.name}: DataFrame lacks columns {missing}; has {df.columns}")
    spark_schema = schema.spark(with_partition=False)
    return df.select([F.col(f.name).cast(_nullable_elements(f.dataType)).alias(f.name) for f in spark_schema.fields])


def _nullable_elements(dtype):
    """``dtype`` with nullable array elements: Spark cannot cast an array that MAY hold nulls to one that
    may not (e.g. a literal ``array<float>`` column), while every writer here produces no null elements;
    the pyarrow contract has nullable list items anyway, and Spark reads files as nullable."""
    from pyspark.sql.types import ArrayType

    if isinstance(dtype, ArrayType):
        return ArrayType(_nullable_elements(dtype.elementType), containsNull=True)
    return dtype


def _check_format(spark: SparkSession, schema: TableSchema, root: str, fmt: str) -> None:
    """Refuse to mix formats in one table directory (reading Delta files as plain Parquet would show
    uncommitted and removed files)."""
    if fmt not in OUTPUT_FORMATS:
        raise StorageError(f"output.format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    base = table_path(root, schema)
    is_delta = path_exists(spark, f"{base}/{DELTA_LOG}")
    if fmt == "parquet" and is_delta:
        raise StorageError(
            f"table '{schema.name}' at {base} is a Delta table; use output.format=delta (or another --output)"
        )
    if fmt == "delta" and not is_delta and _has_plain_parquet(spark, base):
        raise StorageError(
            f"table '{schema.name}' at {base} holds plain Parquet partitions; use output.format=parquet "
            "(or another --output)"
        )


def _has_plain_parquet(spark: SparkSession, base: str) -> bool:
    """True if some ``run_date=`` directory holds files directly (the Parquet layout; Delta data files sit
    one level deeper, so a Delta table whose first commit crashed is not mistaken for Parquet)."""
    fs, base_h = _fs(spark, base)
    if not fs.exists(base_h):
        return False
    for st in fs.listStatus(base_h):
        if st.isDirectory() and st.getPath().getName().startswith(f"{RUN_DATE}="):
            if any(c.isFile() for c in fs.listStatus(st.getPath())):
                return True
    return False


def _parquet_writer(df: DataFrame, schema: TableSchema, row_group_rows: int | None, sort_by: Iterable[str]):
    out = conform(df, schema)
    sort_cols = list(sort_by) or list(schema.sort_within_partitions)
    if sort_cols:
        out = out.sortWithinPartitions(*sort_cols)
    writer = out.write.mode("error")
    rows = row_group_rows or schema.row_group_rows
    if rows:
        # Parquet sizes row groups in bytes; cap the rows per group as well so streaming readers get
        # predictable batches (parquet-mr's block row-count limit).
        writer = writer.option("parquet.block.row.count.limit", str(rows))
    return writer


def write_table(
    df: DataFrame,
    schema: TableSchema,
    root: str,
    run_date: str,
    *,
    row_group_rows: int | None = None,
    sort_by: Iterable[str] = (),
    format: OutputFormat = "parquet",
) -> str:
    """Atomically write ``df`` as the ``run_date`` partition of ``schema``'s table under ``root``.

    ``format``: ``parquet`` (staging directory + rename) or ``delta`` (Parquet files + a delta-rs commit).
    Returns the partition path (Parquet) or the table path (Delta). Cost: one pass over ``df`` (plus a
    local sort by ``sort_by`` or the schema's ``sort_within_partitions``); the driver handles O(files).
    """
    spark = df.sparkSession
    _check_format(spark, schema, root, format)
    writer = _parquet_writer(df, schema, row_group_rows, sort_by)
    if format == "delta":
        return _write_delta(spark, writer, schema, root, run_date)
    base = table_path(root, schema)
    recover_partition(spark, base, run_date)
    token = uuid.uuid4().hex[:12]
    staging = f"{base}/_staging/{RUN_DATE}={run_date}.{token}"
    writer.parquet(staging)
    return _publish_parquet(spark, base, staging, run_date, token)


def recover_partition(spark: SparkSession, base: str, run_date: str) -> list[str]:
    """Clean what an earlier, killed write of ``run_date`` left under ``base``: if the partition is missing
    but a trashed copy exists (killed between the two renames of :func:`swap_directory`), move the newest
    trashed copy back first, so the previous version is readable again; then delete the leftover staging
    and trash directories of this run date. Returns the deleted paths. O(leftovers) file-system calls."""
    fs, target_h = _fs(spark, f"{base}/{RUN_DATE}={run_date}")
    jvm = spark.sparkContext._jvm

    def leftovers(kind: str) -> list:
        found = fs.globStatus(jvm.org.apache.hadoop.fs.Path(f"{base}/{kind}/{RUN_DATE}={run_date}.*"))
        return sorted(found or [], key=lambda st: st.getModificationTime())

    trashed = leftovers("_trash")
    if trashed and not fs.exists(target_h):
        fs.rename(trashed.pop().getPath(), target_h)
    removed = []
    for st in leftovers("_staging") + trashed:
        fs.delete(st.getPath(), True)
        removed.append(str(st.getPath()))
    return removed


def _publish_parquet(spark: SparkSession, base: str, staging: str, run_date: str, token: str) -> str:
    """Swap the staged directory in as ``run_date=...`` (two renames; the old partition is trashed)."""
    target = f"{base}/{RUN_DATE}={run_date}"
    swap_directory(spark, staging, target, f"{base}/_trash/{RUN_DATE}={run_date}.{token}")
    return target


def swap_directory(spark: SparkSession, staging: str, target: str, trash: str) -> None:
    """Publish the fully written directory ``staging`` as ``target``: the old ``target`` (if any) is renamed
    to ``trash``, ``staging`` is renamed to ``target``, then the trash is deleted. A crash at any point
    leaves either the old or the new directory complete at ``target`` (or, between the two renames, none)."""
    fs, target_h = _fs(spark, target)
    jvm = spark.sparkContext._jvm
    trash_h = jvm.org.apache.hadoop.fs.Path(trash)
    staging_h = jvm.org.apache.hadoop.fs.Path(staging)
    fs.mkdirs(trash_h.getParent())
    had_old = fs.exists(target_h)
    if had_old and not fs.rename(target_h, trash_h):
        raise OSError(f"could not move the old {target} aside")
    if not fs.rename(staging_h, target_h):
        if had_old:
            fs.rename(trash_h, target_h)
        raise OSError(f"could not publish {staging} as {target}")
    if had_old:
        fs.delete(trash_h, True)


# ---- Delta --------------------------------------------------------------------------------------------


def delta_uri(path: str) -> str:
    """The delta-rs URI of a Hadoop path: local paths absolute, ``file:`` stripped, ``s3a://`` -> ``s3://``."""
    if path.startswith("file:"):
        path = path[len("file:") :]
        while path.startswith("//"):
            path = path[1:]
        return path
    if "://" not in path:
        return os.path.abspath(path)
    if path.startswith(("s3a://", "s3n://")):
        return "s3://" + path.split("://", 1)[1]
    return path


def spark_path(uri: str) -> str:
    """Inverse of :func:`delta_uri` for the file URIs delta-rs returns (``s3://`` -> ``s3a://``)."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


_SCALAR_STATS = {"int8", "int32", "int64", "float32", "float64", "string"}


def _file_stats(uri: str, schema: TableSchema) -> str:
    """Delta statistics JSON of one Parquet file from its footer: numRecords, and min / max / nullCount of
    the scalar columns whose row groups all carry exact min/max. Reads only the footer."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    stats: dict = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for col in schema.columns:
        if col.type not in _SCALAR_STATS or col.name not in names:
            continue
        idx = names.index(col.name)
        mins, maxs, nulls, exact = [], [], 0, True
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(idx).statistics
            if st is None or not st.has_null_count:
                nulls = None
                break
            nulls += st.null_count
            # min/max only if EVERY row group has exact ones (a writer drops them for huge values, and
            # a partial min/max would make Delta readers skip a file that does hold matching rows)
            if st.has_min_max and getattr(st, "is_min_value_exact", True) and getattr(st, "is_max_value_exact", True):
                mins.append(st.min)
                maxs.append(st.max)
            elif st.num_values > 0:  # non-null values (pyarrow's num_values) without exact min/max
                exact = False
        if nulls is None:
            continue
        stats["nullCount"][col.name] = nulls
        if mins and exact:
            lo, hi = min(mins), max(maxs)
            if isinstance(lo, bytes):
                lo, hi = lo.decode(), hi.decode()
            stats["minValues"][col.name] = lo
            stats["maxValues"][col.name] = hi
    return json.dumps(stats)


def _write_delta(spark: SparkSession, writer, schema: TableSchema, root: str, run_date: str) -> str:
    from deltalake.transaction import AddAction

    base = table_path(root, schema)
    rel_dir = f"{RUN_DATE}={run_date}/{uuid.uuid4().hex[:16]}"
    writer.parquet(f"{base}/{rel_dir}")
    fs, dir_h = _fs(spark, f"{base}/{rel_dir}")
    actions = []
    for st in fs.listStatus(dir_h):
        name = st.getPath().getName()
        if not st.isFile() or name.startswith(("_", ".")) or not name.endswith(".parquet"):
            continue
        actions.append(
            AddAction(
                path=f"{rel_dir}/{name}",
                size=int(st.getLen()),
                partition_values={RUN_DATE: run_date},
                modification_time=int(st.getModificationTime()),
                data_change=True,
                stats=_file_stats(delta_uri(f"{base}/{rel_dir}/{name}"), schema),
            )
        )
    _commit_delta(base, schema, run_date, actions)
    return base


def _commit_delta(base: str, schema: TableSchema, run_date: str, actions: list) -> None:
    """One Delta commit: add ``actions``' files, remove every earlier file of ``run_date``."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    uri = delta_uri(base)
    delta_schema = Schema.from_arrow(schema.arrow())
    props = CommitProperties(custom_metadata={"mgoe.table": schema.name, RUN_DATE: run_date})
    if DeltaTable.is_deltatable(uri):
        DeltaTable(uri).create_write_transaction(
            actions,
            mode="overwrite",
            schema=delta_schema,
            partition_by=[RUN_DATE],
            partition_filters=[(RUN_DATE, "=", run_date)],
            commit_properties=props,
        )
    else:
        create_table_with_add_actions(
            uri,
            delta_schema,
            actions,
            mode="error",
            partition_by=[RUN_DATE],
            name=schema.name,
            description=schema.doc[:500],
            commit_properties=props,
        )


def _read_delta(spark: SparkSession, schema: TableSchema, root: str, dates: list[str]) -> DataFrame:
    from deltalake import DeltaTable

    base = table_path(root, schema)
    uri = delta_uri(base)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFound(f"table '{schema.name}' has no Delta table at {base}; run the stage that writes it")
    table = DeltaTable(uri)
    present = {p[RUN_DATE] for p in table.partitions()}
    missing = [d for d in dates if d not in present]
    if missing:
        raise TableNotFound(f"Delta table '{schema.name}' at {base} has no run_date {missing}; run the stage")
    frames = []
    for d in dates:
        files = [spark_path(u) for u in table.file_uris(file_pruning_predicate=[(RUN_DATE, "=", d)])]
        df = spark.read.schema(schema.spark(with_partition=False)).parquet(*files)
        frames.append(df.withColumn(RUN_DATE, F.lit(d)))
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def read_table(
    spark: SparkSession,
    schema: TableSchema,
    root: str,
    run_date: str | list[str],
    *,
    format: OutputFormat = "parquet",
) -> DataFrame:
    """Read the given run-date partition(s) of a table, with the contract schema (``run_date`` included).

    Delta tables are read through their log (only the committed files of those dates)."""
    dates = [run_date] if isinstance(run_date, str) else list(run_date)
    if format not in OUTPUT_FORMATS:
        raise StorageError(f"output.format must be one of {OUTPUT_FORMATS}, got {format!r}")
    if format == "delta":
        return _read_delta(spark, schema, root, dates)
    paths = [partition_path(root, schema, d) for d in dates]
    for p in paths:
        if not path_exists(spark, p):
            raise TableNotFound(f"table '{schema.name}' has no partition at {p}; run the stage that writes it")
    df = spark.read.schema(schema.spark(with_partition=False)).parquet(*paths)
    if len(dates) == 1:
        return df.withColumn(RUN_DATE, F.lit(dates[0]))
    return df.withColumn(RUN_DATE, F.regexp_extract(F.input_file_name(), f"{RUN_DATE}=([0-9-]+)", 1))


def list_run_dates(spark: SparkSession, schema: TableSchema, root: str, format: OutputFormat = "parquet") -> list[str]:
    """Run dates for which the table has a published partition (committed, for Delta), sorted."""
    if format == "delta":
        from deltalake import DeltaTable

        uri = delta_uri(table_path(root, schema))
        if not DeltaTable.is_deltatable(uri):
            return []
        return sorted({p[RUN_DATE] for p in DeltaTable(uri).partitions()})
    fs, base_h = _fs(spark, table_path(root, schema))
    if not fs.exists(base_h):
        return []
    prefix = f"{RUN_DATE}="
    names = [s.getPath().getName() for s in fs.listStatus(base_h) if s.isDirectory()]
    return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))


@dataclass(frozen=True)
class TableStore:
    """The tables of one output root in one format: what every job reads and writes through.

    >>> store = TableStore.of(spark, cfg)                    # doctest: +SKIP
    >>> store.write(df, INTERACTIONS, "2026-11-23")          # doctest: +SKIP
    """

    spark: SparkSession
    root: str
    format: OutputFormat = "parquet"

    @classmethod
    def of(cls, spark: SparkSession, cfg) -> TableStore:
        return cls(spark, cfg.output.root, cfg.output.format)

    def write(self, df: DataFrame, schema: TableSchema, run_date: str, **kwargs) -> str:
        return write_table(df, schema, self.root, run_date, format=self.format, **kwargs)

    def read(self, schema: TableSchema, run_date: str | list[str]) -> DataFrame:
        return read_table(self.spark, schema, self.root, run_date, format=self.format)

    def run_dates(self, schema: TableSchema) -> list[str]:
        return list_run_dates(self.spark, schema, self.root, self.format)

    def latest_before(self, schema: TableSchema, run_date: str) -> str | None:
        earlier = [d for d in self.run_dates(schema) if d < run_date]
        return earlier[-1] if earlier else None
