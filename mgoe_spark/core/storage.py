"""Reading and writing the contract tables: atomic and idempotent per run date, as Parquet or Delta.

Every write happens in a :class:`Transaction` of one output root and run date (a stage opens one around
all its tables; a lone write is a transaction of its own), which holds the date's lease (one writer per
date, :mod:`.lease`) and ends by writing the date's manifest (:mod:`.manifest`): readers -- the next stage,
the quality gates, the trainer -- see each table at the version the newest manifest names, so a stage's
tables appear together, and a killed driver leaves the previous complete set readable.

**Parquet** (``output.format=parquet``, the default). Layout: ``<root>/<table>/run_date=YYYY-MM-DD/part-*``.
A write goes to the writer's own staging directory (``<root>/<table>/_staging/run_date=D.<token>``; Spark
and pyarrow skip ``_``-prefixed paths) with a version marker; at commit the old partition moves to
``<table>/_prev/run_date=D.<its token>`` and the staged one takes its place, for each table, then the
manifest is written and the ``_prev`` copies are deleted. What a killed driver leaves behind (staging
directories, partitions no manifest names) is cleaned, and rolled back, by the next writer of the same run
date once the dead run's lease has expired; other run dates are never touched, so runs of different dates
can write one root at once. Parquet output is refused on object stores (``s3a://``, ``gs://``, ``abfs://``
...), where a rename is a copy and a delete: use Delta there.

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
(``DeltaTable.file_uris``, at the version the manifest names) and reads exactly those.

*On a cluster with the delta-spark jars* (``spark-submit --packages io.delta:delta-spark_2.13:<ver>``,
``spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension``, ``spark.sql.catalog.spark_catalog=
org.apache.spark.sql.delta.catalog.DeltaCatalog``) the same tables are ordinary Delta tables:
``spark.read.format("delta").load(f"{root}/{table}").where("run_date = 'D'")`` reads them, ``VACUUM``,
``DESCRIBE HISTORY`` and time travel work, and a job may equally write them with
``df.write.format("delta").mode("overwrite").option("replaceWhere", "run_date = 'D'")`` -- the same
overwrite-one-date semantics as here. The log written by delta-rs uses protocol (reader 1, writer 2), which
every delta-spark 2.x+ reads.

All paths go through Hadoop's FileSystem API (Spark's side) or pyarrow (footers, the trainer), so the
same code works on local disk, HDFS and, for Delta, object stores: ``s3a://`` roots are handed to delta-rs
as ``s3://`` with ``output.storage_options`` (:mod:`.uris`).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config.sections import OBJECT_STORE_SCHEMES, OUTPUT_FORMATS, OutputFormat
from mgoe_spark.core import manifest
from mgoe_spark.core.errors import UserError, one_line
from mgoe_spark.core.lease import DEFAULT_LEASE_SECONDS, LEASES, ConcurrentWriteError, HadoopFiles, Lease
from mgoe_spark.core.names import WRITTEN_BY
from mgoe_spark.core.uris import delta_uri, open_uri, spark_path
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
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    storage_options: dict[str, str] | None = None,
) -> str:
    """Atomically write ``df`` as the ``run_date`` partition of ``schema``'s table under ``root``.

    Inside an open :class:`Transaction` of the same root and date (a stage's), the table joins it and is
    published with the stage's other tables at its end; otherwise it is a transaction of its own (lease,
    write, publish, manifest). ``format``: ``parquet`` (staging directory + rename) or ``delta`` (Parquet
    files + a delta-rs commit). Returns where the table is published: the partition path (Parquet) or the
    table path (Delta). Cost: one pass over ``df`` (plus a local
    sort by ``sort_by`` or the schema's ``sort_within_partitions``); the driver handles O(files).

    >>> write_table(df, VOCAB_USERS, "/data/mgoe", "2026-11-23")   # doctest: +SKIP
    '/data/mgoe/vocab_users/run_date=2026-11-23'
    """
    store = TableStore(df.sparkSession, root, format, lease_seconds, dict(storage_options or {}))
    return store.write(df, schema, run_date, row_group_rows=row_group_rows, sort_by=sort_by)


# ---- transactions ---------------------------------------------------------------------------------------

_OPEN = threading.local()
"""The transaction each thread has open, by (root, run date): writes and reads of that date join it."""


def _open_transaction(root: str, run_date: str) -> Transaction | None:
    return getattr(_OPEN, "by_key", {}).get((root, run_date))


@dataclass
class _Staged:
    """A table written in an open transaction, not yet published: its staging directory (Parquet) or its
    data files and their Delta add actions (Delta)."""

    schema: TableSchema
    token: str
    path: str
    actions: list = field(default_factory=list)


class Transaction:
    """Write several tables of one output root and run date so that readers see all or none of them.

    Enter: take the date's :class:`~mgoe_spark.core.lease.Lease` (one writer per date; a second one fails
    at once with :class:`ConcurrentWriteError`). :meth:`write` stages a table: Parquet into
    ``<table>/_staging/run_date=D.<token>`` (with the version marker), Delta as data files outside the log;
    reads of a staged table in this transaction read the staged files. Exit without an exception:
    :meth:`commit` publishes every staged table, then writes the date's next manifest
    (:mod:`mgoe_spark.core.manifest`): until then readers resolve every table to its previous version. Exit
    with an exception: the staged files are deleted, nothing is published. A killed driver leaves its
    staging, and possibly some published partitions no manifest names; the next writer of the date rolls
    those back (:meth:`_recover`).

    Cost: O(tables) file-system operations and one small file per commit, besides the writes themselves.

    >>> with Transaction(spark, "/data/mgoe", "2026-11-23", stage="ingest") as tx:  # doctest: +SKIP
    ...     tx.write(vocab_users, VOCAB_USERS)
    ...     vocab = tx.read(VOCAB_USERS)          # the staged version
    ...     tx.write(interactions, INTERACTIONS)  # both appear at the end of the block
    """

    def __init__(
        self,
        spark: SparkSession,
        root: str,
        run_date: str,
        format: OutputFormat = "parquet",
        *,
        stage: str,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        storage_options: dict[str, str] | None = None,
    ):
        if format not in OUTPUT_FORMATS:
            raise StorageError(f"output.format must be one of {OUTPUT_FORMATS}, got {format!r}")
        self.spark, self.root, self.run_date, self.format, self.stage = spark, root, run_date, format, stage
        self.files = HadoopFiles(spark)
        self.lease = Lease(self.files, f"{root.rstrip('/')}/{LEASES}/{RUN_DATE}={run_date}", lease_seconds)
        self.staged: dict[str, _Staged] = {}
        self.options = dict(storage_options or {}) or None

    def __enter__(self) -> Transaction:
        refuse_parquet_on_object_store(self.root, self.format)
        self.lease.acquire()
        by_key = getattr(_OPEN, "by_key", None)
        if by_key is None:
            by_key = _OPEN.by_key = {}
        by_key[(self.root, self.run_date)] = self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.commit()
                except Exception:
                    self._discard()  # what was published without a manifest is rolled back by the next writer
                    raise
            else:
                self._discard()
        finally:
            _OPEN.by_key.pop((self.root, self.run_date), None)
            self.lease.release()

    def write(self, df: DataFrame, schema: TableSchema, *, row_group_rows=None, sort_by: Iterable[str] = ()) -> str:
        """Stage ``df`` as this date's version of ``schema``'s table; returns where it is published on commit
        (the partition path for Parquet, the table path for Delta)."""
        _check_format(self.spark, schema, self.root, self.format)
        if schema.name in self.staged:
            self.files.delete(self.staged.pop(schema.name).path)
        else:
            self._recover(schema)
        writer = _parquet_writer(df, schema, row_group_rows, sort_by)
        token = uuid.uuid4().hex[:12]
        base = table_path(self.root, schema)
        if self.format == "delta":
            path = f"{base}/{RUN_DATE}={self.run_date}/{token}"
            writer.parquet(path)
            actions = _delta_actions(self.spark, schema, base, path, self.options)
            self.staged[schema.name] = _Staged(schema, token, path, actions)
            return base
        path = f"{base}/_staging/{RUN_DATE}={self.run_date}.{token}"
        writer.parquet(path)
        if not self.files.create_exclusive(f"{path}/{manifest.VERSION_MARKER}", token):
            raise OSError(f"could not mark {path}")
        self.staged[schema.name] = _Staged(schema, token, path)
        return partition_path(self.root, schema, self.run_date)

    def read(self, schema: TableSchema) -> DataFrame | None:
        """The staged version of ``schema``'s table, or None if this transaction has not written it."""
        staged = self.staged.get(schema.name)
        if staged is None:
            return None
        files = [f"{table_path(self.root, schema)}/{a.path}" for a in staged.actions] or [staged.path]
        df = self.spark.read.schema(schema.spark(with_partition=False)).parquet(*files)
        return df.withColumn(RUN_DATE, F.lit(self.run_date))

    def commit(self) -> manifest.Manifest | None:
        """Publish every staged table, then the manifest naming them (see the class docstring)."""
        if not self.staged:
            return None
        if not self.lease.held():
            raise ConcurrentWriteError(
                f"{self.lease.path} was taken over by another run; nothing of this one is published"
            )
        entries, replaced = {}, []
        for name, staged in self.staged.items():
            if self.format == "delta":
                entries[name] = manifest.Entry("delta", staged.token, self._commit_delta(staged))
            else:
                replaced += self._publish_parquet(staged)
                entries[name] = manifest.Entry("parquet", staged.token)
        current = manifest.latest(self.files, self.root, self.run_date) or manifest.Manifest(self.run_date, 0)
        new = current.with_entries(entries, self.stage)
        path = manifest.manifest_path(self.root, self.run_date, new.seq)
        if not self.files.create_exclusive(path, new.to_json()):
            raise ConcurrentWriteError(
                f"{path} was written by another run meanwhile; this run's tables are not visible"
            )
        self.staged = {}
        for path in replaced:  # no manifest names them any more
            self.files.delete(path)
        self._prune_manifests(new.seq)
        return new

    def _publish_parquet(self, staged: _Staged) -> list[str]:
        """Move the current partition to ``_prev`` (named by its own version) and the staged one in its place;
        returns the moved-aside path (deleted once the new manifest is written)."""
        name = staged.schema.name
        target = partition_path(self.root, staged.schema, self.run_date)
        old_version = (self.files.read_text(f"{target}/{manifest.VERSION_MARKER}") or manifest.LEGACY).strip()
        aside = manifest.previous_path(self.root, name, self.run_date, old_version)
        moved = []
        if self.files.exists(target):
            if self.files.exists(aside):
                self.files.delete(aside)
            if not self.files.rename(target, aside):
                raise OSError(f"could not move {target} aside")
            moved.append(aside)
        if not self.files.rename(staged.path, target):
            raise OSError(f"could not publish {staged.path} as {target}")
        return moved

    def _commit_delta(self, staged: _Staged) -> int:
        base = table_path(self.root, staged.schema)
        return _commit_delta(base, staged.schema, self.run_date, staged.actions, self.options)

    def _recover(self, schema: TableSchema) -> None:
        """Before this transaction writes ``schema``'s table (holding the lease, so any other writer of the
        date is dead): delete leftover staging, and roll a partition that no manifest names back to the
        version the manifest names (or remove it, if none does). O(leftovers) file-system operations."""
        if self.format == "delta":
            return  # uncommitted data files are invisible; VACUUM removes them
        base, name = table_path(self.root, schema), schema.name
        for path in self.files.glob(f"{base}/_staging/{RUN_DATE}={self.run_date}.*"):
            self.files.delete(path)
        current = manifest.latest(self.files, self.root, self.run_date)
        entry = current.entries.get(name) if current else None
        target = partition_path(self.root, schema, self.run_date)
        marker = self.files.read_text(f"{target}/{manifest.VERSION_MARKER}")
        keep = entry.version if entry else manifest.LEGACY
        if (marker or manifest.LEGACY).strip() != keep:
            kept = manifest.previous_path(self.root, name, self.run_date, keep)
            if self.files.exists(kept) or marker is not None:
                self.files.delete(target)
            if self.files.exists(kept):
                self.files.rename(kept, target)
        for path in self.files.glob(f"{base}/{manifest.PREVIOUS}/{RUN_DATE}={self.run_date}.*"):
            self.files.delete(path)
        for path in self.files.glob(f"{base}/_trash/{RUN_DATE}={self.run_date}.*"):  # the layout before manifests
            self.files.delete(path)

    def _discard(self) -> None:
        for staged in self.staged.values():
            try:
                self.files.delete(staged.path)
            except Exception:  # noqa: BLE001 - best effort: the next writer of the date cleans up anyway
                pass
        self.staged = {}

    def _prune_manifests(self, seq: int) -> None:
        for old in range(max(0, seq - 16), seq - manifest.KEEP_MANIFESTS + 1):
            path = manifest.manifest_path(self.root, self.run_date, old)
            if self.files.exists(path):
                self.files.delete(path)


def swap_directory(spark: SparkSession, staging: str, target: str, trash: str) -> None:
    """Publish the fully written directory ``staging`` as ``target``: the old ``target`` (if any) is renamed
    to ``trash``, ``staging`` is renamed to ``target``, then the trash is deleted. A crash at any point
    leaves either the old or the new directory complete at ``target`` (or, between the two renames, none).
    Used for files that are not tables (the generated log)."""
    files = HadoopFiles(spark)
    had_old = files.exists(target)
    if had_old and not files.rename(target, trash):
        raise OSError(f"could not move the old {target} aside")
    if not files.rename(staging, target):
        if had_old:
            files.rename(trash, target)
        raise OSError(f"could not publish {staging} as {target}")
    if had_old:
        files.delete(trash)


def refuse_parquet_on_object_store(root: str, format: str) -> None:
    """StorageError if ``root`` is on an object store and ``format`` is Parquet: its staging + rename publish
    would not be atomic there (readers could see half a partition)."""
    scheme = root.split("://", 1)[0].lower() if "://" in root else ""
    if format == "parquet" and scheme in OBJECT_STORE_SCHEMES:
        raise StorageError(
            f"output.root {root} is on an object store ({scheme}://), where Parquet output cannot be published "
            "atomically (a rename is a copy and a delete); use output.format=delta there"
        )


# ---- Delta --------------------------------------------------------------------------------------------


_SCALAR_STATS = {"int8", "int32", "int64", "float32", "float64", "string"}


def _file_stats(uri: str, schema: TableSchema, options: dict | None = None) -> str:
    """Delta statistics JSON of one Parquet file from its footer: numRecords, and min / max / nullCount of
    the scalar columns whose row groups all carry exact min/max. Reads only the footer."""
    import pyarrow.parquet as pq

    fs, path = open_uri(uri, options)
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


def _delta_actions(spark: SparkSession, schema: TableSchema, base: str, data_dir: str, options=None) -> list:
    """One delta-rs AddAction per Parquet file Spark wrote under ``data_dir`` (a directory of the table
    ``base``): path relative to the table, size, modification time, partition value, footer statistics.
    O(files) listing and footer reads on the driver."""
    from deltalake.transaction import AddAction

    rel_dir = data_dir[len(base) + 1 :]
    run_date = rel_dir.split("/", 1)[0].split("=", 1)[1]
    fs, dir_h = _fs(spark, data_dir)
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
                stats=_file_stats(delta_uri(f"{data_dir}/{name}"), schema, options),
            )
        )
    return actions


def _commit_delta(base: str, schema: TableSchema, run_date: str, actions: list, options: dict | None = None) -> int:
    """One Delta commit: add ``actions``' files, remove every earlier file of ``run_date``; returns the log
    version that holds it (a later commit of another date may have followed: it leaves date D as is)."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    uri = delta_uri(base)
    delta_schema = Schema.from_arrow(schema.arrow())
    props = CommitProperties(custom_metadata={"mgoe.table": schema.name, RUN_DATE: run_date})
    if DeltaTable.is_deltatable(uri, storage_options=options):
        DeltaTable(uri, storage_options=options).create_write_transaction(
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
            storage_options=options,
        )
    return int(DeltaTable(uri, storage_options=options).version())


def _read_delta(spark: SparkSession, schema: TableSchema, root: str, dates: list[str], options=None) -> DataFrame:
    """The committed files of ``dates``, each at the Delta log version its run date's manifest names."""
    from deltalake import DeltaTable

    base = table_path(root, schema)
    uri = delta_uri(base)
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        raise TableNotFound(f"table '{schema.name}' has no Delta table at {base}; run the stage that writes it")
    files = HadoopFiles(spark)
    frames = []
    for d in dates:
        readable, version = manifest.delta_version(files, root, schema.name, d)
        table = DeltaTable(uri, version=version, storage_options=options)
        uris = table.file_uris(file_pruning_predicate=[(RUN_DATE, "=", d)]) if readable else []
        if not readable or d not in {p[RUN_DATE] for p in table.partitions()}:
            raise TableNotFound(f"Delta table '{schema.name}' at {base} has no run_date {d}; run the stage")
        df = spark.read.schema(schema.spark(with_partition=False)).parquet(*[spark_path(u) for u in uris])
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
    storage_options: dict[str, str] | None = None,
) -> DataFrame:
    """Read the given run-date partition(s) of a table, with the contract schema (``run_date`` included).

    Each date is read at the version its manifest names (:mod:`mgoe_spark.core.manifest`), so a stage's
    tables are seen from one complete run; in an open transaction of the date, a table it staged is read
    from its staging. Delta tables are read through their log (only the committed files of those dates).

    >>> read_table(spark, VOCAB_USERS, "/data/mgoe", "2026-11-23").count()   # doctest: +SKIP
    2000
    """
    dates = [run_date] if isinstance(run_date, str) else list(run_date)
    if format not in OUTPUT_FORMATS:
        raise StorageError(f"output.format must be one of {OUTPUT_FORMATS}, got {format!r}")
    staged = [tx.read(schema) for d in dates if (tx := _open_transaction(root, d)) is not None]
    if len(dates) == 1 and staged and staged[0] is not None:
        return staged[0]
    if format == "delta":
        return _read_delta(spark, schema, root, dates, storage_options or None)
    files = HadoopFiles(spark)
    paths = []
    for d in dates:
        _, path = manifest.resolve(files, root, schema.name, d)
        if path is None:
            where = partition_path(root, schema, d)
            raise TableNotFound(f"table '{schema.name}' has no partition at {where}; run the stage that writes it")
        paths.append(path)
    df = spark.read.schema(schema.spark(with_partition=False)).parquet(*paths)
    if len(dates) == 1:
        return df.withColumn(RUN_DATE, F.lit(dates[0]))
    return df.withColumn(RUN_DATE, F.regexp_extract(F.input_file_name(), f"{RUN_DATE}=([0-9-]+)", 1))


def list_run_dates(
    spark: SparkSession,
    schema: TableSchema,
    root: str,
    format: OutputFormat = "parquet",
    storage_options: dict[str, str] | None = None,
) -> list[str]:
    """Run dates for which the table has a readable version (a manifest names it, or it predates manifests),
    sorted. O(dates) small file reads."""
    files = HadoopFiles(spark)
    if format == "delta":
        from deltalake import DeltaTable

        uri = delta_uri(table_path(root, schema))
        if not DeltaTable.is_deltatable(uri, storage_options=storage_options or None):
            return []
        dates = sorted({p[RUN_DATE] for p in DeltaTable(uri, storage_options=storage_options or None).partitions()})
        return [d for d in dates if manifest.delta_version(files, root, schema.name, d)[0]]
    return manifest.parquet_run_dates(files, root, schema.name)


@dataclass(frozen=True)
class TableStore:
    """The tables of one output root in one format: what every job reads and writes through.

    >>> store = TableStore.of(spark, cfg)                    # doctest: +SKIP
    >>> with store.transaction("2026-11-23", stage="ingest"):  # doctest: +SKIP
    ...     store.write(vocab, VOCAB_USERS, "2026-11-23")
    ...     store.write(df, INTERACTIONS, "2026-11-23")      # both appear when the block ends
    """

    spark: SparkSession
    root: str
    format: OutputFormat = "parquet"
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spark: SparkSession, cfg) -> TableStore:
        out = cfg.output
        return cls(spark, out.root, out.format, out.lease_seconds, dict(out.storage_options))

    def transaction(self, run_date: str, *, stage: str) -> Transaction:
        """A :class:`Transaction` of this root and ``run_date``: the writes in its block appear together."""
        return Transaction(
            self.spark,
            self.root,
            run_date,
            self.format,
            stage=stage,
            lease_seconds=self.lease_seconds,
            storage_options=self.storage_options,
        )

    def lease(self, name: str) -> Lease:
        """A root-wide :class:`~mgoe_spark.core.lease.Lease` ``<root>/_leases/<name>`` (e.g. the vocabulary's:
        one ingest per root at a time), used as a context manager."""
        return Lease(HadoopFiles(self.spark), f"{self.root.rstrip('/')}/{LEASES}/{name}", self.lease_seconds)

    def write(self, df: DataFrame, schema: TableSchema, run_date: str, **kwargs) -> str:
        open_tx = _open_transaction(self.root, run_date)
        if open_tx is not None:
            return open_tx.write(df, schema, **kwargs)
        with self.transaction(run_date, stage=schema.name) as tx:
            return tx.write(df, schema, **kwargs)

    def read(self, schema: TableSchema, run_date: str | list[str]) -> DataFrame:
        return read_table(
            self.spark, schema, self.root, run_date, format=self.format, storage_options=self.storage_options
        )

    def run_dates(self, schema: TableSchema) -> list[str]:
        return list_run_dates(self.spark, schema, self.root, self.format, self.storage_options)

    def latest_before(self, schema: TableSchema, run_date: str) -> str | None:
        earlier = [d for d in self.run_dates(schema) if d < run_date]
        return earlier[-1] if earlier else None
