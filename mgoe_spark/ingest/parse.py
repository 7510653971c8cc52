"""Ingestion: raw multi-behavior logs -> canonical events, rejects and dense id vocabularies (SPEC 2, 7, 8).

Pure DataFrame -> DataFrame transforms; reading files and writing tables is :mod:`jobs.ingest`'s business.

Input records
    Text formats (Taobao, Tenrec, generic CSV) start from ``spark.read.text(path)`` turned into *lines* by
    :func:`text_lines`: ``source`` (file path), ``block_start`` (byte offset of the file split the line came
    from) and ``raw`` (the line). Parquet starts from ``spark.read.parquet(path)`` turned into *records* by
    :func:`parquet_records`: the same three columns (``raw`` is the row as JSON) plus the data in a ``row``
    struct (so data columns may have any name).

Parsing
    :func:`parse_taobao`, :func:`parse_tenrec`, :func:`parse_generic_csv` and :func:`parse_generic_parquet`
    turn records into a *parsed* frame (one row per input record, see :data:`PARSED_COLUMNS`): each record is
    a header (skipped, counted), a reject (``code`` / ``reason`` set) or accepted with its ``tasks`` -- the
    events it yields (one for a behavior row; for 0/1 task columns one per positive column plus an exposure).
    Every check is a Spark SQL expression (no Python UDF); the first failing check of a record is its reason.
    :func:`valid_events` explodes accepted records into events, :func:`rejects` keeps the rejected ones with
    their raw line. The ``read_*`` functions return both as ``(valid, rejects)``.

Accounting (what :mod:`jobs.ingest` checks and reports)
    ``lines_in = header_lines + rejects + accepted_lines`` counts records. ``events_in`` is the number of
    events the accepted records yield (``= accepted_lines`` for Taobao / behavior-column logs; for 0/1
    task-column logs like Tenrec one line yields ``[exposure] + #positive flags`` events). Then
    ``rows_in := rejects + events_in == rows_out + rejects + duplicates``: a rejected record counts as one
    input row (its events are unknown), an accepted record as the events it yields, and every event is either
    written (``rows_out``) or an exact duplicate of a written one (``duplicates``).

Ids
    :func:`build_vocab` maps raw ids to dense ``1..N`` (0 stays the padding id) without collecting ids to the
    driver: distinct -> global sort -> per-partition offsets (the zipWithIndex scheme, in the JVM). With the
    vocabulary so far, old ids are kept and new ids are appended after the current maximum (append-only,
    each row with the ``first_run_date`` that appended it).
    :func:`assign_ids` joins events to the vocabularies.

Costs (N input records, E events, U / I distinct users / items): parsing is one narrow pass, O(N);
de-duplication one shuffle of E rows; each vocabulary one shuffle for distinct + one range-partitioned sort,
O(U log U) (resp. I) work spread over the cluster; ids two shuffle joins of E rows. The driver only ever sees
per-split or per-partition counts, never ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import InputFormatError

TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TENREC_COLUMNS = (
    "user_id",
    "item_id",
    "click",
    "follow",
    "like",
    "share",
    "video_category",
    "watching_times",
    "gender",
    "age",
)
TENREC_FLAGS = ("click", "follow", "like", "share")

PARSED_COLUMNS = (
    "source",
    "raw",
    "header",
    "code",
    "reason",
    "user_raw",
    "item_raw",
    "ts",
    "category",
    "tasks",
)
"""Columns of a parsed frame: one row per input record. ``code`` / ``reason`` are null for headers and
accepted records; ``tasks`` (array<string>) holds the events of an accepted record, empty otherwise."""

EVENT_COLUMNS = ("user_raw", "item_raw", "task", "ts", "category")

# Reason classes (the ``code`` column of the rejects table).
EMPTY_LINE = "empty_line"
FIELD_COUNT = "field_count"
EMPTY_FIELD = "empty_field"
BAD_ID = "bad_id"
BAD_TIMESTAMP = "bad_timestamp"
UNKNOWN_BEHAVIOR = "unknown_behavior"
BAD_FLAG = "bad_flag"


@dataclass(frozen=True)
class LogLayout:
    """Where the parts of an event are in a record, by column name.

    Exactly one of ``behavior`` (a column mapped through ``behavior_map``) and ``task_columns``
    (``{task: 0/1 column}``) is used. ``timestamp=None`` means file order is time order: ``ts`` becomes a
    file-order ordinal (:func:`file_order_ordinal`).
    """

    user: str
    item: str
    category: str | None = None
    timestamp: str | None = None
    ts_unit: str = "epoch_seconds"
    date_format: str = "yyyy-MM-dd"
    behavior: str | None = None
    behavior_map: dict[str, str] = field(default_factory=dict)
    task_columns: dict[str, str] = field(default_factory=dict)
    exposure: str | None = None
    """Task emitted once per accepted record (0/1 task-column logs whose rows are exposures)."""
    numeric_ids: bool = True
    require_category: bool = False
    """Reject records with an empty category (formats where the category is always present)."""

    def required(self) -> list[str]:
        """Columns that must be non-empty, in the order their emptiness is reported."""
        cols = [self.user, self.item]
        if self.behavior is not None:
            cols.append(self.behavior)
        cols += [c for c in self.task_columns.values() if c not in cols]
        if self.timestamp is not None:
            cols.append(self.timestamp)
        if self.require_category and self.category is not None:
            cols.insert(2, self.category)
        return cols

    def columns(self) -> list[str]:
        """Every column the layout reads."""
        cols = self.required()
        return cols + ([self.category] if self.category and self.category not in cols else [])


# --------------------------------------------------------------------------------------------------------
# Layouts from the config
# --------------------------------------------------------------------------------------------------------


def taobao_layout(cfg: MgoeConfig) -> LogLayout:
    """Taobao UserBehavior: ``user_id,item_id,category_id,behavior_type,timestamp``, behaviors mapped by
    ``input.behavior_map`` (pv -> click, ...)."""
    return LogLayout(
        user="user_id",
        item="item_id",
        category="category_id",
        timestamp="timestamp",
        ts_unit="epoch_seconds",
        behavior="behavior_type",
        behavior_map=dict(cfg.input.behavior_map),
        numeric_ids=cfg.input.numeric_ids,
        require_category=True,
    )


def tenrec_layout(cfg: MgoeConfig) -> LogLayout:
    """Tenrec QB-video: one row per exposure; task ``t`` of ``tasks.order`` reads the 0/1 column
    ``input.task_columns.get(t, t)``; every row also yields a ``tasks.exposure`` event (if set)."""
    mapping = {t: cfg.input.task_columns.get(t, t) for t in cfg.tasks.order}
    bad = {t: c for t, c in mapping.items() if c not in TENREC_FLAGS}
    if bad:
        raise InputFormatError(
            f"Tenrec has no 0/1 column for tasks {bad}; columns are {list(TENREC_FLAGS)}",
            hint="name Tenrec's 0/1 columns in input.task_columns",
        )
    return LogLayout(
        user="user_id",
        item="item_id",
        category="video_category",
        timestamp=None,
        task_columns=mapping,
        exposure=cfg.tasks.exposure,
        numeric_ids=cfg.input.numeric_ids,
    )


def generic_layout(cfg: MgoeConfig) -> LogLayout:
    """Generic CSV / Parquet: column names from ``cfg.input``. With ``task_columns``, a configured
    ``tasks.exposure`` that is not itself a column is emitted once per row (rows are exposures)."""
    inp = cfg.input
    exposure = cfg.tasks.exposure
    if inp.behavior_column is not None or exposure in inp.task_columns:
        exposure = None
    return LogLayout(
        user=inp.user_column,
        item=inp.item_column,
        category=inp.category_column,
        timestamp=inp.timestamp_column,
        ts_unit=inp.timestamp_unit,
        date_format=inp.date_format,
        behavior=inp.behavior_column,
        behavior_map=dict(inp.behavior_map) if inp.behavior_column is not None else {},
        task_columns=dict(inp.task_columns) if inp.behavior_column is None else {},
        exposure=exposure,
        numeric_ids=inp.numeric_ids,
    )


# --------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------


BOM = "\ufeff"


def text_lines(df: DataFrame) -> DataFrame:
    """``spark.read.text(...)`` -> ``(source, block_start, raw)``, one row per line (a UTF-8 byte order mark
    at the start of a file is dropped, so a header still matches). O(N), narrow."""
    return df.select(
        F.col("_metadata.file_path").alias("source"),
        F.col("_metadata.file_block_start").alias("block_start"),
        # A prefix test, not a regex: this runs on every line.
        F.when(F.startswith("value", F.lit(BOM)), F.substr("value", F.lit(2))).otherwise(F.col("value")).alias("raw"),
    )


def parquet_records(df: DataFrame) -> DataFrame:
    """``spark.read.parquet(...)`` -> ``(source, block_start, raw, row)``; ``raw`` is the row as JSON and
    ``row`` a struct of the data columns. O(N), narrow."""
    data = F.struct(*[F.col(f"`{c}`") for c in df.columns])
    return df.select(
        F.col("_metadata.file_path").alias("source"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.to_json(data).alias("raw"),
        data.alias("row"),
    )


def file_order_ordinal(records: DataFrame, name: str = "ordinal") -> DataFrame:
    """Add ``name``: an int64 that strictly increases in file order (files by path, then by position).

    For logs without timestamps (Tenrec), where file order is time order. No global sort: a record's
    position is ``(source, block_start, row within its split)``. Spark reads a split in one task, in order,
    so ``monotonically_increasing_id`` is consecutive within a split; one aggregation gives each split's
    first id and row count, the splits' cumulative offsets come from a window over the (small) split table,
    and ``ordinal = offset(split) + id - first_id(split)``. The result is the dense rank 0..N-1 of the record
    in (path, offset) order. Cost: O(N) scan twice plus O(S log S) on S = #splits rows (broadcast).
    """
    mono = records.withColumn("_mono", F.monotonically_increasing_id())
    splits = mono.groupBy("source", "block_start").agg(F.min("_mono").alias("_first"), F.count("*").alias("_n"))
    before = Window.orderBy("source", "block_start").rowsBetween(Window.unboundedPreceding, -1)
    splits = splits.withColumn("_offset", F.coalesce(F.sum("_n").over(before), F.lit(0)))
    joined = mono.join(F.broadcast(splits.drop("_n")), ["source", "block_start"])
    return joined.withColumn(name, (F.col("_offset") + F.col("_mono") - F.col("_first")).cast("long")).drop(
        "_mono", "_first", "_offset"
    )


_REGEX_META = set(".$|()[{^?*+\\")


def _literal_pattern(delimiter: str) -> str:
    """A regex matching ``delimiter`` literally, in the form Java's ``String.split`` runs without compiling a
    Pattern (one plain character, or a backslash and a non-alphanumeric one): Spark's ``split`` calls it once
    per line, and the ``\\Q...\\E`` form would compile a regex for every line."""
    if len(delimiter) == 1 and delimiter not in _REGEX_META:
        return delimiter
    if len(delimiter) == 1 and not delimiter.isalnum():
        return "\\" + delimiter
    return "\\Q" + delimiter + "\\E"


_MARKERS = "\u001f\u001e\u001d"
"""Control characters the quoted split uses internally (unit / record / group separator): the first two that
are not the delimiter become the field mark and the escape character."""


def _split_quoted(raw: Column, delimiter: str) -> Column:
    """Split a line on the delimiters outside double quotes, in one pass over its characters (untrimmed,
    quotes kept).

    A delimiter is *outside* when the number of ``"`` before it on the line is even. Steps, each linear in the
    line length ``L``: escape the two marker characters in the data (``esc -> esc e``, ``mark -> esc m``),
    split on ``"`` (the segments alternate outside / inside quotes, even indexes outside), replace the
    delimiter by ``mark`` in the outside segments, join with ``"`` again, split on ``mark``, and undo the
    escapes in each field. Cost O(L) time and memory per line, no regex (the former look-ahead regex scanned
    the rest of the line from every delimiter, O(L * #delimiters), and recursed once per quote pair, which
    overflowed the JVM stack on a line of a few thousand quoted fields).
    """
    if delimiter == '"':
        raise InputFormatError("input.csv_delimiter cannot be a double quote", hint="set input.csv_delimiter")
    mark, esc = [c for c in _MARKERS if c != delimiter][:2]
    escaped = F.replace(F.replace(raw, F.lit(esc), F.lit(esc + "e")), F.lit(mark), F.lit(esc + "m"))
    segments = F.split(escaped, '"', -1)  # one-character patterns take Java's split fast path (no regex)
    marked = F.transform(
        segments, lambda s, i: F.when(i % 2 == 0, F.replace(s, F.lit(delimiter), F.lit(mark))).otherwise(s)
    )
    fields = F.split(F.array_join(marked, '"'), mark, -1)
    return F.transform(
        fields, lambda f: F.replace(F.replace(f, F.lit(esc + "m"), F.lit(mark)), F.lit(esc + "e"), F.lit(esc))
    )


def _split_fields(raw: Column, delimiter: str, quoted: bool) -> Column:
    """Split a CSV line into trimmed fields (``-1``: keep trailing empty fields, so counts are honest).

    ``quoted``: a delimiter inside double quotes does not split (:func:`_split_quoted`: quote parity from
    the start of the line, O(line length)); a field that is quoted after trimming loses its quotes and a
    doubled quote inside it becomes one quote (RFC 4180). Lines without a quote take the plain split.
    """
    plain = F.split(raw, _literal_pattern(delimiter), -1)
    if not quoted:
        return F.transform(plain, lambda x: F.trim(x))  # not F.trim itself: 2-arg lambdas get the index
    parts = F.when(raw.contains('"'), _split_quoted(raw, delimiter)).otherwise(plain)

    def unquote(x: Column) -> Column:
        t = F.trim(x)
        is_quoted = t.startswith('"') & t.endswith('"') & (F.length(t) >= 2)
        body = F.substring(t, F.lit(2), F.length(t) - 2)
        return F.when(is_quoted, F.replace(body, F.lit('""'), F.lit('"'))).otherwise(t)

    return F.transform(parts, unquote)


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------


def _quote(value: Column, limit: int = 40) -> Column:
    """``'value'`` for messages, cut to ``limit`` characters."""
    cut = F.when(F.length(value) > limit, F.concat(F.substring(value, 1, limit), F.lit("..."))).otherwise(value)
    return F.concat(F.lit("'"), F.coalesce(cut, F.lit("")), F.lit("'"))


def _first(checks: list[tuple[Column, str, Column]]) -> tuple[Column, Column]:
    """(code, reason) of the first check whose condition holds; nulls when none does."""
    code: Column = F.lit(None).cast("string")
    reason: Column = F.lit(None).cast("string")
    for cond, c, msg in reversed(checks):
        code = F.when(cond, F.lit(c)).otherwise(code)
        reason = F.when(cond, msg).otherwise(reason)
    return code, reason


def _parse(
    records: DataFrame,
    layout: LogLayout,
    get: Callable[[str], Column],
    *,
    header: Column,
    shape_checks: list[tuple[Column, str, Column]],
    ts_epoch: Column | None = None,
) -> DataFrame:
    """The shared validation: records -> parsed frame (:data:`PARSED_COLUMNS`). O(N), narrow.

    ``get(name)``: the trimmed string value of a column; ``shape_checks``: record-level checks that come
    first (empty line, field count); ``ts_epoch``: a ready epoch-seconds column (Parquet timestamp types).
    """
    checks = list(shape_checks)
    for col in layout.required():
        v = get(col)
        checks.append((v.isNull() | (v == ""), EMPTY_FIELD, F.lit(f"empty field '{col}'")))
    if layout.numeric_ids:
        for col in (layout.user, layout.item):
            v = get(col)
            msg = F.concat(F.lit(f"{col} "), _quote(v), F.lit(" is not a non-negative integer"))
            checks.append((~v.rlike("^[0-9]+$"), BAD_ID, msg))

    if layout.timestamp is None:
        ts = F.col("ordinal")
    elif ts_epoch is not None:
        ts = ts_epoch
    else:
        v = get(layout.timestamp)
        if layout.ts_unit == "date":
            parsed_ts = F.try_to_timestamp(v, F.lit(layout.date_format))
            ts = F.unix_seconds(parsed_ts)
            msg = F.concat(F.lit("timestamp "), _quote(v), F.lit(f" does not match date_format '{layout.date_format}'"))
            checks.append((parsed_ts.isNull(), BAD_TIMESTAMP, msg))
        else:
            number = v.try_cast("long")
            ok = v.rlike("^-?[0-9]+$") & number.isNotNull()
            ts = number if layout.ts_unit == "epoch_seconds" else F.floor(number / 1000).cast("long")
            checks.append((~ok, BAD_TIMESTAMP, F.concat(F.lit("timestamp "), _quote(v), F.lit(" is not an integer"))))

    if layout.behavior is not None:
        mapping = F.create_map(*[F.lit(x) for kv in sorted(layout.behavior_map.items()) for x in kv])
        b = get(layout.behavior)
        task = F.try_element_at(mapping, b)
        checks.append((task.isNull(), UNKNOWN_BEHAVIOR, F.concat(F.lit("unknown behavior "), _quote(b))))
        tasks = F.array(task)
    else:
        flagged = []
        for t, col in layout.task_columns.items():
            v = get(col)
            msg = F.concat(F.lit("bad 0/1 value "), _quote(v), F.lit(f" in column '{col}'"))
            checks.append((~v.isin("0", "1"), BAD_FLAG, msg))
            flagged.append(F.when(v == "1", F.lit(t)))
        if layout.exposure is not None:
            flagged.insert(0, F.lit(layout.exposure))
        tasks = F.array_compact(F.array(*flagged)) if flagged else F.array().cast("array<string>")

    # Guard every check with "not a header" and evaluate checks lazily in order via nested CASE WHEN:
    # a later check never sees a value an earlier check rejected.
    code, reason = _first(checks)
    code = F.when(header, F.lit(None).cast("string")).otherwise(code)
    reason = F.when(header, F.lit(None).cast("string")).otherwise(reason)
    category = get(layout.category) if layout.category else F.lit(None).cast("string")
    ok = code.isNull() & ~header
    out = records.select(
        "source",
        "raw",
        header.alias("header"),
        code.alias("code"),
        reason.alias("reason"),
        F.when(ok, get(layout.user)).alias("user_raw"),
        F.when(ok, get(layout.item)).alias("item_raw"),
        F.when(ok, ts.cast("long")).alias("ts"),
        F.when(ok, F.nullif(category, F.lit(""))).alias("category"),
        F.when(ok, tasks).otherwise(F.array().cast("array<string>")).alias("tasks"),
    )
    return out


def _parse_text(lines: DataFrame, layout: LogLayout, columns: list[str], delimiter: str, quoted: bool) -> DataFrame:
    """Text lines with the given column order (header lines are those equal to the column names)."""
    missing = [c for c in layout.columns() if c not in columns]
    if missing:
        raise InputFormatError(
            f"input has no column(s) {missing}; its columns are {columns}",
            hint="check input.format and the input.*_column settings against the file",
        )
    if layout.timestamp is None:
        lines = file_order_ordinal(lines)
    fields = _split_fields(F.col("raw"), delimiter, quoted)
    lines = lines.withColumn("_fields", fields)
    index = {c: i for i, c in enumerate(columns)}

    def get(name: str) -> Column:
        return F.get(F.col("_fields"), index[name])  # null when the line is short

    n = F.size(F.col("_fields"))
    header = F.col("_fields") == F.array(*[F.lit(c) for c in columns])
    shape = [
        (F.trim(F.col("raw")) == "", EMPTY_LINE, F.lit("empty line")),
        (n != len(columns), FIELD_COUNT, F.concat(F.lit(f"expected {len(columns)} fields, got "), n.cast("string"))),
    ]
    return _parse(lines, layout, get, header=header, shape_checks=shape)


def parse_taobao(lines: DataFrame, cfg: MgoeConfig) -> DataFrame:
    """Taobao UserBehavior CSV lines (no header) -> parsed frame. O(N), narrow."""
    return _parse_text(lines, taobao_layout(cfg), list(TAOBAO_COLUMNS), ",", quoted=False)


def parse_tenrec(lines: DataFrame, cfg: MgoeConfig) -> DataFrame:
    """Tenrec QB-video CSV lines (header in each file) -> parsed frame; ``ts`` is the file-order ordinal.
    O(N) plus the ordinal's split aggregation (see :func:`file_order_ordinal`)."""
    return _parse_text(lines, tenrec_layout(cfg), list(TENREC_COLUMNS), ",", quoted=False)


def parse_generic_csv(lines: DataFrame, cfg: MgoeConfig, columns: list[str]) -> DataFrame:
    """Generic CSV lines whose columns are ``columns`` (the header, or ``input.csv_columns``) -> parsed
    frame. Double-quoted fields may contain the delimiter. O(N), narrow (plus the ordinal without a
    timestamp column)."""
    return _parse_text(lines, generic_layout(cfg), list(columns), cfg.input.csv_delimiter, quoted=True)


def parse_generic_parquet(records: DataFrame, cfg: MgoeConfig) -> DataFrame:
    """Generic Parquet records (:func:`parquet_records`) -> parsed frame. O(N), narrow.

    Values are read as strings (so the same checks apply); timestamp/date columns become epoch seconds,
    fractional epochs are floored, booleans in task columns count as 0/1.
    """
    layout = generic_layout(cfg)
    types = {f.name: f.dataType for f in records.schema["row"].dataType.fields}
    missing = [c for c in layout.columns() if c not in types]
    if missing:
        raise InputFormatError(f"input has no column(s) {missing}; its columns are {sorted(types)}")

    def get(name: str) -> Column:
        c, dt = F.col("row").getField(name), types[name]
        if isinstance(dt, T.BooleanType):
            c = c.cast("int")
        elif isinstance(dt, T.FloatType | T.DoubleType | T.DecimalType) and name == layout.timestamp:
            c = F.floor(c).cast("long")
        return F.trim(c.cast("string"))

    ts_epoch = None
    if layout.timestamp is not None and isinstance(
        types[layout.timestamp], T.TimestampType | T.TimestampNTZType | T.DateType
    ):
        ts_epoch = F.unix_timestamp(F.col("row").getField(layout.timestamp).cast("timestamp"))
    if layout.timestamp is None:
        records = file_order_ordinal(records)
    return _parse(records, layout, get, header=F.lit(False), shape_checks=[], ts_epoch=ts_epoch)


# --------------------------------------------------------------------------------------------------------
# Valid events, rejects, duplicates
# --------------------------------------------------------------------------------------------------------


def valid_events(parsed: DataFrame) -> DataFrame:
    """Accepted records exploded into events ``(user_raw, item_raw, task, ts, category)``. O(E), narrow."""
    ok = parsed.where(F.col("code").isNull() & ~F.col("header"))
    return ok.select("user_raw", "item_raw", F.explode("tasks").alias("task"), "ts", "category")


def without_accepted_text(parsed: DataFrame) -> DataFrame:
    """The parsed frame with ``source`` and ``raw`` nulled on every row but the rejects, which alone need
    them (:func:`rejects`): what a caller persists holds the parsed fields, not a second copy of the log."""
    keep = F.col("code").isNotNull()
    return parsed.withColumns({"source": F.when(keep, F.col("source")), "raw": F.when(keep, F.col("raw"))})


def rejects(parsed: DataFrame) -> DataFrame:
    """Rejected records ``(source, raw, reason, code)``. O(N), narrow."""
    return parsed.where(F.col("code").isNotNull()).select("source", "raw", "reason", "code")


def split(parsed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``(valid events, rejects)`` of a parsed frame."""
    return valid_events(parsed), rejects(parsed)


def read_taobao(lines: DataFrame, cfg: MgoeConfig) -> tuple[DataFrame, DataFrame]:
    """Taobao lines -> (valid events, rejects)."""
    return split(parse_taobao(lines, cfg))


def read_tenrec(lines: DataFrame, cfg: MgoeConfig) -> tuple[DataFrame, DataFrame]:
    """Tenrec lines -> (valid events, rejects)."""
    return split(parse_tenrec(lines, cfg))


def read_generic_csv(lines: DataFrame, cfg: MgoeConfig, columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """Generic CSV lines -> (valid events, rejects)."""
    return split(parse_generic_csv(lines, cfg, columns))


def read_generic_parquet(records: DataFrame, cfg: MgoeConfig) -> tuple[DataFrame, DataFrame]:
    """Generic Parquet records -> (valid events, rejects)."""
    return split(parse_generic_parquet(records, cfg))


def deduplicate(events: DataFrame) -> DataFrame:
    """One row per ``(user_raw, item_raw, task, ts)`` with ``copies`` = how many input events it stands for.

    ``duplicates = sum(copies) - count``. When copies disagree on the category the smallest wins
    (deterministic). Cost: one shuffle of E rows.
    """
    return events.groupBy("user_raw", "item_raw", "task", "ts").agg(
        F.min("category").alias("category"), F.count("*").alias("copies")
    )


# --------------------------------------------------------------------------------------------------------
# Vocabularies and dense ids
# --------------------------------------------------------------------------------------------------------


def dense_index(
    df: DataFrame, order: list[Column], name: str = "index", persisted: list[DataFrame] | None = None
) -> DataFrame:
    """Add ``name`` = 0-based position of each row in the global ``order`` (which must be a total order).

    Distributed zipWithIndex: a range-partitioned sort, then per-partition row counts (one small row per
    partition to the driver) turned into offsets, and ``index = offset(partition) + row within partition``
    (``monotonically_increasing_id`` is ``partition << 33 | row``). The sorted frame is persisted so both
    passes see the same partitioning; it is appended to ``persisted`` (if given) for the caller to unpersist
    once the result is written. Cost: O(R log R) distributed sort for R rows; driver O(#partitions).
    """
    spark = df.sparkSession
    ranked = (
        df.orderBy(*order)
        .withColumn("_pid", F.spark_partition_id())
        .withColumn("_row", F.monotonically_increasing_id() - F.shiftleft(F.col("_pid").cast("long"), 33))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    if persisted is not None:
        persisted.append(ranked)
    counts = sorted((r["_pid"], r["count"]) for r in ranked.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid, n in counts:
        offsets.append((pid, total))
        total += n
    table = spark.createDataFrame(offsets or [(0, 0)], "_pid int, _offset long")
    out = ranked.join(F.broadcast(table), "_pid").withColumn(name, F.col("_offset") + F.col("_row"))
    return out.drop("_pid", "_row", "_offset")


def distinct_ids(events: DataFrame, column: str) -> DataFrame:
    """The distinct non-null raw ids of ``column`` as ``(raw_id)``: one shuffle of the events' ids (combined
    map-side), feeding both the count of distinct ids and :func:`build_vocab` (``distinct=True``)."""
    return events.select(F.col(column).cast("string").alias("raw_id")).where(F.col("raw_id").isNotNull()).distinct()


def build_vocab(
    raw_ids: DataFrame,
    existing: DataFrame | None = None,
    persisted: list[DataFrame] | None = None,
    *,
    distinct: bool = False,
    run_date: str | None = None,
) -> DataFrame:
    """Vocabulary ``(raw_id, id)`` over the ``raw_id`` column of ``raw_ids``: ids are dense ``1..N``.

    Append-only: with ``existing`` (a vocabulary with ids ``1..M``) its rows are kept as they are and the raw
    ids not in it get ``M + 1 + rank``, ``rank`` = 0-based position among the NEW ids only in (length,
    string) order -- numeric order for plain integers -- so the result is deterministic and covers both.
    ``run_date``: also carry ``first_run_date`` -- kept on existing rows (which must have it), ``run_date``
    on the new ones. Nothing per id reaches the driver (only ``M`` and per-partition counts). Cost: one
    shuffle for distinct / anti-join, one sort of the new ids, one aggregation for ``M``.
    ``persisted``: see :func:`dense_index`. ``distinct``: the caller's ``raw_ids`` are already distinct
    and non-null (for example :func:`distinct_ids`, counted too), which saves the distinct shuffle.
    """
    new = raw_ids.select(F.col("raw_id").cast("string"))
    if not distinct:
        new = new.where(F.col("raw_id").isNotNull()).distinct()
    carried = [] if run_date is None else [F.lit(run_date).alias("first_run_date")]
    base = 0
    if existing is not None:
        existing = existing.select("raw_id", F.col("id").cast("long"), *(["first_run_date"] if carried else []))
        new = new.join(existing.select("raw_id"), "raw_id", "left_anti")
        base = existing.agg(F.max("id")).first()[0] or 0
    numbered = dense_index(new, [F.length("raw_id"), F.col("raw_id")], persisted=persisted)
    numbered = numbered.select("raw_id", (F.col("index") + F.lit(base + 1)).alias("id"), *carried)
    return numbered if existing is None else existing.unionByName(numbered)


def assign_ids(events: DataFrame, vocab_users: DataFrame, vocab_items: DataFrame) -> DataFrame:
    """Events with raw ids -> ``(user_id, item_id, task, ts, category)`` with dense ids (inner joins: every
    raw id must be in its vocabulary). Cost: two shuffle joins of E rows with the vocabularies."""
    users = vocab_users.select(F.col("raw_id").alias("user_raw"), F.col("id").alias("user_id"))
    items = vocab_items.select(F.col("raw_id").alias("item_raw"), F.col("id").alias("item_id"))
    joined = events.join(users, "user_raw").join(items, "item_raw")
    return joined.select("user_id", "item_id", "task", "ts", "category")
