"""Stage 0, ``ingest`` (SPEC 7, 8): a raw multi-behavior log -> interactions, rejects, vocab_users, vocab_items.

Reads the input (Taobao / Tenrec / generic CSV: as text lines; generic Parquet: as rows), checks that its
first records mostly parse (:func:`check_sample`: a wrong format fails before anything is written), parses
it with :mod:`mgoe_spark.ingest.parse`, and writes the four tables for the run date. The vocabularies are
append-only across run dates, whatever order the dates are ingested in: the largest published vocabulary
(:func:`current_vocab`) is extended, so raw ids keep their dense ids -- also when an earlier date is
backfilled after a later one -- and new raw ids get the next ids, each with the ``first_run_date`` that
appended it.
Counts (see :mod:`mgoe_spark.ingest.parse` for the accounting): ``lines_in`` records read, ``header_lines``,
``rejects`` (and ``rejects.<code>`` per reason class), ``events_in`` events the accepted records yield,
``rows_in = rejects + events_in``, ``duplicates``, ``rows_out``, ``task.<name>`` rows per task, ``users`` /
``items`` distinct in this input, ``new_users`` / ``new_items``, ``vocab_users`` / ``vocab_items`` sizes.

Cost: one pass over the input for parsing and counting (the parsed fields persisted once, MEMORY_AND_DISK;
the raw line and file name kept for rejects only), a shuffle for de-duplication, one distinct shuffle per
id side (counted and then numbered), a distributed sort per vocabulary, two joins and the interactions'
sort; the driver sees O(#reasons + #tasks + #partitions) numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import InputFormatError, UserError
from mgoe_spark.core.metrics import StageSummary, stage, step
from mgoe_spark.core.storage import TableStore, _fs, partition_path
from mgoe_spark.ingest import parse as ing
from schemas import INTERACTIONS, REJECTS, RUN_DATE, VOCAB_ITEMS, VOCAB_USERS, TableSchema


def _check_exists(spark: SparkSession, path: str) -> None:
    fs, hpath = _fs(spark, path)
    found = fs.globStatus(hpath) if any(ch in path for ch in "*?[{") else ([1] if fs.exists(hpath) else [])
    if not found:
        raise UserError(f"input path '{path}' does not exist; pass --input PATH or set input.path in the config")


def load_records(spark: SparkSession, cfg: MgoeConfig, path: str) -> DataFrame:
    """Read ``path`` and parse it into the parsed frame of :mod:`mgoe_spark.ingest.parse` (lazy), after the
    wrong-format guard on its first records (:func:`check_sample`).

    Raises UserError when the path is missing, holds no rows, lacks a configured column, or its first
    records are mostly rejected.
    """
    _check_exists(spark, path)
    fmt = cfg.input.format
    try:
        if fmt == "generic_parquet":
            raw = spark.read.parquet(path)
        else:
            raw = spark.read.text(path)
    except AnalysisException as exc:
        raise UserError(f"cannot read input '{path}' as {fmt}: {str(exc).splitlines()[0]}") from None
    if raw.limit(1).count() == 0:
        raise UserError(f"input '{path}' has no rows (empty file or directory)")
    records = ing.parquet_records(raw) if fmt == "generic_parquet" else ing.text_lines(raw)
    try:
        columns = csv_columns(spark, cfg, raw) if fmt == "generic_csv" else []
        parse = {
            "taobao": lambda recs: ing.parse_taobao(recs, cfg),
            "tenrec": lambda recs: ing.parse_tenrec(recs, cfg),
            "generic_parquet": lambda recs: ing.parse_generic_parquet(recs, cfg),
            "generic_csv": lambda recs: ing.parse_generic_csv(recs, cfg, columns),
        }[fmt]
        parsed = parse(records)
    except ValueError as exc:  # the parsers' InputFormatError keeps its hint
        raise UserError(f"input '{path}': {exc}", hint=getattr(exc, "hint", None)) from None
    check_sample(spark, cfg, path, records, parse)
    return parsed


def check_sample(
    spark: SparkSession, cfg: MgoeConfig, path: str, records: DataFrame, parse: Callable[[DataFrame], DataFrame]
) -> None:
    """The wrong-format guard: parse the first ``n = input.check_rows`` records and raise InputFormatError
    (one line, before anything is written) when the input has at least ``n`` records and

        rejected / (n - headers) > quality.max_reject_fraction

    on them. A smaller input, or ``n = 0``, passes. Cost: ``take(n)`` scans only the first splits (Spark
    reads more only when the first ones hold fewer than ``n`` records), the n records cross to the driver and
    back as a local frame, which is parsed and aggregated to at most #reason classes + 2 rows: O(n) whatever
    the input's size.
    """
    n = cfg.input.check_rows
    if n <= 0:
        return
    first = records.take(n)
    if len(first) < n:
        return
    kinds = (
        parse(spark.createDataFrame(first, records.schema))
        .groupBy("header", "code")
        .agg(F.count("*").alias("n"), F.min("reason").alias("reason"))
        .collect()
    )
    rejected = {r["code"]: (r["n"], r["reason"]) for r in kinds if r["code"] is not None}
    checked = n - sum(r["n"] for r in kinds if r["header"])
    bad = sum(k for k, _ in rejected.values())
    limit = cfg.quality.max_reject_fraction
    if checked == 0 or bad <= limit * checked:
        return
    top = max(sorted(rejected), key=lambda c: rejected[c][0])
    raise InputFormatError(
        f"input '{path}' does not look like input.format={cfg.input.format}: {bad:,} of its first {checked:,} "
        f"records rejected (more than quality.max_reject_fraction={limit:g}), mostly {top} (e.g. "
        f"{rejected[top][1]}); nothing written",
        hint="check --config, input.format and the input.* column settings against the file "
        "(input.check_rows=0 turns this check off)",
    )


def csv_columns(spark: SparkSession, cfg: MgoeConfig, raw: DataFrame) -> list[str]:
    """Column names of a generic CSV: ``input.csv_columns``, or the header of the first file (by path)."""
    if not cfg.input.csv_header:
        return list(cfg.input.csv_columns or [])
    first = sorted(raw.inputFiles())[0]
    names = spark.read.options(header=True, sep=cfg.input.csv_delimiter, inferSchema=False).csv(first).columns
    return [n.lstrip("\ufeff") for n in names]  # a byte order mark is not part of the first name


def current_vocab(store: TableStore, schema: TableSchema) -> tuple[DataFrame | None, int]:
    """The whole vocabulary so far and its size: the largest published partition of ``schema``, of ANY run
    date (earlier, later, or the one being re-run); ``(None, 0)`` before the first ingest.

    Why the largest: vocabularies are append-only and every ingest writes the base it read plus its new ids,
    so each partition is a prefix ``1..M_d`` of one global numbering and the one with the most rows holds
    all the others. Ingesting D2 then D1 therefore builds D1 on D2's vocabulary (D2's ids kept), and a later
    D3 builds on D1's (which holds D2's too). This needs ingests into one root to run one at a time: each
    holds the root's vocabulary lease (:data:`VOCABULARY_LEASE`) from before this read until its tables are
    published, so a second one fails at once with a one-line error. A partition written before
    ``first_run_date`` existed gets its own run date there. Cost: one row count per partition, which reads
    no data column (Parquet: the footers), at most #run dates rows to the driver; the chosen partition is
    read lazily.
    """
    dates = store.run_dates(schema)
    if not dates:
        return None, 0
    sizes = store.read(schema, dates).groupBy(RUN_DATE).count().collect()
    largest = max(sizes, key=lambda r: (r["count"], r[RUN_DATE]))
    date = largest[RUN_DATE]
    vocab = store.read(schema, date).withColumn("first_run_date", F.coalesce("first_run_date", F.lit(date)))
    return vocab.drop(RUN_DATE), int(largest["count"])


def run_ingest(
    spark: SparkSession, cfg: MgoeConfig, input_path: str, run_date: str, summary: StageSummary | None = None
) -> StageSummary:
    """Ingest ``input_path`` (format ``cfg.input.format``) into the tables of ``run_date`` under
    ``cfg.output.root``; return the counts (not written to run_metrics: the caller collects summaries)."""
    summary = summary or StageSummary("ingest")
    root = cfg.output.root
    with stage(spark, summary, f"ingest {cfg.input.format} {input_path}"):
        parsed = ing.without_accepted_text(load_records(spark, cfg, input_path)).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            _ingest_parsed(spark, cfg, parsed, summary, root, run_date, input_path)
        finally:
            parsed.unpersist()
    return summary


@dataclass
class _Counts:
    """The numbers of one ingest run, filled stage by stage (names as in the module docstring)."""

    lines_in: int = 0
    headers: int = 0
    reject_counts: dict[str, int] = field(default_factory=dict)
    """reason class -> rejected records."""
    events_in: int = 0
    per_task: dict[str, tuple[int, int]] = field(default_factory=dict)
    """task -> (rows after de-duplication, copies before it)."""
    distinct: dict[str, int] = field(default_factory=dict)
    vocab_sizes: list = field(default_factory=list)
    """(rows, max id) of the written vocab_users and vocab_items."""
    base_sizes: list = field(default_factory=list)
    """Rows of the vocabularies this run extended (:func:`current_vocab`; 0 on a first ingest)."""
    written: int = 0

    @property
    def n_rejects(self) -> int:
        return sum(self.reject_counts.values())

    @property
    def rows_out(self) -> int:
        return sum(n for n, _ in self.per_task.values())

    @property
    def duplicates(self) -> int:
        """copies - rows_out: accepted events dropped as exact duplicates."""
        return sum(c for _, c in self.per_task.values()) - self.rows_out


def _count_lines(spark: SparkSession, summary: StageSummary, parsed: DataFrame) -> _Counts:
    """lines_in, header lines, rejects per reason class and events_in: one aggregation over the records,
    lines per (header, reason class) and the events they yield; at most #reason classes + 2 rows to the
    driver."""
    by_kind = parsed.groupBy("header", "code").agg(F.count("*").alias("n"), F.sum(F.size("tasks")).alias("events"))
    with step(spark, summary, "parse + count lines"):
        kinds = by_kind.collect()
    accepted = [r for r in kinds if r["code"] is None and not r["header"]]
    return _Counts(
        lines_in=sum(r["n"] for r in kinds),
        headers=sum(r["n"] for r in kinds if r["header"]),
        reject_counts={r["code"]: r["n"] for r in kinds if r["code"] is not None},
        events_in=sum(r["events"] or 0 for r in accepted),
    )


def _count_tasks(spark: SparkSession, summary: StageSummary, deduped: DataFrame, counts: _Counts) -> None:
    """counts.per_task: rows and copies per task of the de-duplicated events (one aggregation, at most
    #tasks rows to the driver)."""
    with step(spark, summary, "deduplicate + count tasks"):
        counts.per_task = {
            r["task"]: (r["n"], r["copies"])
            for r in deduped.groupBy("task").agg(F.count("*").alias("n"), F.sum("copies").alias("copies")).collect()
        }


def _no_valid_events(counts: _Counts, input_path: str, root: str, run_date: str) -> UserError:
    """The one-line error for an input without a valid event: how many rows were rejected and mostly why."""
    reject_counts = counts.reject_counts
    top = max(reject_counts, key=reject_counts.get) if reject_counts else "none"
    return UserError(
        f"no valid events in '{input_path}' ({counts.n_rejects:,} of {counts.lines_in:,} rows rejected, mostly "
        f"{top}); check input.format and the column settings, see {partition_path(root, REJECTS, run_date)}"
    )


def _write_vocabularies(
    spark: SparkSession,
    summary: StageSummary,
    store: TableStore,
    deduped: DataFrame,
    run_date: str,
    cached: list[DataFrame],
    counts: _Counts,
) -> None:
    """Write the ``run_date`` vocabularies (the current ones, :func:`current_vocab`, extended by this input's
    new raw ids) and set counts.distinct and counts.base_sizes.

    Cost: one distinct shuffle per id side (persisted and appended to ``cached``: counted here, numbered by
    :func:`ing.build_vocab`), a distributed sort per vocabulary, two writes.
    """
    (old_users, n_users), (old_items, n_items) = (current_vocab(store, s) for s in (VOCAB_USERS, VOCAB_ITEMS))
    counts.base_sizes = [n_users, n_items]  # before the writes: the base may be the partition replaced below
    with step(spark, summary, "distinct ids"):  # counted here, numbered by the vocabularies below
        raw_users = ing.distinct_ids(deduped, "user_raw").persist(StorageLevel.MEMORY_AND_DISK)
        raw_items = ing.distinct_ids(deduped, "item_raw").persist(StorageLevel.MEMORY_AND_DISK)
        cached += [raw_users, raw_items]
        counts.distinct = {"users": raw_users.count(), "items": raw_items.count()}
    vocab_users = ing.build_vocab(raw_users, old_users, cached, distinct=True, run_date=run_date)
    vocab_items = ing.build_vocab(raw_items, old_items, cached, distinct=True, run_date=run_date)
    with step(spark, summary, "vocabularies + write"):
        store.write(vocab_users, VOCAB_USERS, run_date)
        store.write(vocab_items, VOCAB_ITEMS, run_date)


def _write_interactions(
    spark: SparkSession, summary: StageSummary, store: TableStore, deduped: DataFrame, run_date: str
) -> None:
    """Number the events with the ``run_date`` vocabularies and write the interactions sorted by (user, ts).

    The vocabularies are read back from their new partitions, so the joins use exactly the published ids
    (and an earlier partition may be the one being replaced on a re-run). Cost: two joins and the sort.
    """
    vocab_users = store.read(VOCAB_USERS, run_date)
    vocab_items = store.read(VOCAB_ITEMS, run_date)
    interactions = ing.assign_ids(deduped, vocab_users, vocab_items)
    with step(spark, summary, "write interactions"):
        store.write(interactions, INTERACTIONS, run_date, sort_by=("user_id", "ts"))


def _count_written(
    spark: SparkSession, summary: StageSummary, store: TableStore, run_date: str, counts: _Counts
) -> None:
    """counts.vocab_sizes (rows, max id per vocabulary) and counts.written (interaction rows), read from the
    written partitions: three small aggregations."""
    with step(spark, summary, "checks + counts"):
        counts.vocab_sizes = [
            store.read(s, run_date).agg(F.count("*"), F.max("id")).first() for s in (VOCAB_USERS, VOCAB_ITEMS)
        ]
        counts.written = store.read(INTERACTIONS, run_date).count()


def _check_accounting(counts: _Counts) -> None:
    """Nothing dropped silently: every record is a header, a reject or accepted (by construction of the
    parsed frame), every accepted event is written or counted as a duplicate (events_in = rows_out +
    duplicates), and the joins to the vocabularies lost no row (written = rows_out, checked on the written
    table); each vocabulary is dense (rows = max id). RuntimeError otherwise: a bug, not a user error."""
    lines_in, events_in, rows_out, duplicates = counts.lines_in, counts.events_in, counts.rows_out, counts.duplicates
    if events_in != rows_out + duplicates or counts.written != rows_out:
        raise RuntimeError(
            f"ingest accounting broken: lines_in={lines_in} events_in={events_in} rows_out={rows_out} "
            f"written={counts.written} duplicates={duplicates}"
        )
    for (count, max_id), name in zip(counts.vocab_sizes, ("users", "items"), strict=True):
        if count != max_id:
            raise RuntimeError(f"vocab_{name} is not dense: {count} ids, max id {max_id}")


def _record_counts(summary: StageSummary, cfg: MgoeConfig, counts: _Counts) -> None:
    """Add the run's counts to ``summary`` in their fixed order (new ids: written vocabulary size minus the
    size of the vocabulary it extended)."""
    vocab_sizes = counts.vocab_sizes
    summary.add("lines_in", counts.lines_in)
    summary.add("header_lines", counts.headers)
    summary.add("rows_in", counts.n_rejects + counts.events_in)
    summary.add("rows_out", counts.rows_out)
    summary.add("rejects", counts.n_rejects)
    for code in sorted(counts.reject_counts):
        summary.add(f"rejects.{code}", counts.reject_counts[code])
    summary.add("events_in", counts.events_in)
    summary.add("duplicates", counts.duplicates)
    summary.add("users", counts.distinct["users"])
    summary.add("items", counts.distinct["items"])
    summary.add("new_users", vocab_sizes[0][0] - counts.base_sizes[0])
    summary.add("new_items", vocab_sizes[1][0] - counts.base_sizes[1])
    summary.add("vocab_users", vocab_sizes[0][0])
    summary.add("vocab_items", vocab_sizes[1][0])
    for task in [*cfg.tasks.order, *([cfg.tasks.exposure] if cfg.tasks.exposure else [])]:
        summary.add(f"task.{task}", counts.per_task.get(task, (0, 0))[0])


VOCABULARY_LEASE = "vocabulary"
"""The root-wide lease an ingest holds while it extends the vocabularies (:meth:`TableStore.lease`)."""


def _ingest_parsed(
    spark: SparkSession,
    cfg: MgoeConfig,
    parsed: DataFrame,
    summary: StageSummary,
    root: str,
    run_date: str,
    input_path: str,
) -> None:
    """Count, de-duplicate and write the four tables of a parsed (persisted) input; checks the accounting and
    adds the counts to ``summary``. Cost: see the module docstring."""
    store = replace(TableStore.of(spark, cfg), root=root)
    counts = _count_lines(spark, summary, parsed)
    rejected = ing.rejects(parsed)
    with step(spark, summary, "write rejects"):  # its own transaction: published even if no event is valid
        store.write(rejected, REJECTS, run_date)

    deduped = ing.deduplicate(ing.valid_events(parsed)).persist(StorageLevel.MEMORY_AND_DISK)
    cached = [deduped]
    try:
        _count_tasks(spark, summary, deduped, counts)
        if counts.rows_out == 0:
            raise _no_valid_events(counts, input_path, root, run_date)
        # One ingest per root at a time (the vocabulary is one numbering across run dates; its lease is held
        # until the transaction has published), one writer per run date; the vocabularies and the
        # interactions appear together.
        with store.lease(VOCABULARY_LEASE), store.transaction(run_date, stage="ingest"):
            _write_vocabularies(spark, summary, store, deduped, run_date, cached, counts)
            _write_interactions(spark, summary, store, deduped, run_date)
            _count_written(spark, summary, store, run_date, counts)
    finally:
        for df in cached:
            df.unpersist()
    _check_accounting(counts)
    _record_counts(summary, cfg, counts)
