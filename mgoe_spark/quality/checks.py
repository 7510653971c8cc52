"""Data-quality checks: pure DataFrame -> check results, no I/O (the gates that read tables are
:mod:`jobs.quality`).

A :class:`TableSpec` says what must hold for one table: a minimum row count, unique keys, non-null key
columns, finite floats (scalars, arrays and nested arrays alike), and named row-level violations (any
boolean Column that is true for a bad row, e.g. ``macro_id`` out of ``1..K``).
:func:`check_table` evaluates a spec with **one aggregation pass** over the table for the counts, plus one
``groupBy`` shuffle per unique key set. :func:`empty_macro_nodes` checks that every macro id ``1..K`` of
each side owns at least one node (a K-row result per side).

Cost: O(rows) per table and key set, distributed; the driver only sees a handful of numbers per check
(and at most K rows per side for the macro-node check), never per-user or per-item data.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``value`` is the measured number (rows, duplicates, bad rows, ...)."""

    table: str
    check: str
    passed: bool
    value: float
    detail: str = ""

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        text = f"{status} {self.table}.{self.check} = {_fmt(self.value)}"
        return f"{text} ({self.detail})" if self.detail else text


def _fmt(v: float) -> str:
    return f"{int(v):,}" if math.isfinite(v) and float(v).is_integer() else f"{v:g}"


@dataclass
class TableSpec:
    """What must hold for one table (every field optional except the name).

    ``unique``: key column sets, each must identify at most one row (nulls in key columns count as bad).
    ``finite``: float / float-array / nested float-array columns that must hold no NaN or +-inf.
    ``violations``: check name -> boolean Column, true for a bad row; each must be false for all rows.
    """

    name: str
    min_rows: int = 1
    unique: Sequence[Sequence[str]] = ()
    finite: Sequence[str] = ()
    violations: Mapping[str, Column] = field(default_factory=dict)


def _is_float(dt: T.DataType) -> bool:
    return isinstance(dt, T.FloatType | T.DoubleType)


def _bad_float(x: Column) -> Column:
    # NaN, +inf or -inf. (Spark SQL orders NaN above +inf and NaN = NaN is true, so test it explicitly.)
    return F.isnan(x) | (F.abs(x) == F.lit(float("inf")))


def non_finite_condition(df: DataFrame, column: str) -> Column:
    """True where ``column`` (float, array<float> or array<array<float>>) holds a NaN or an infinity."""
    dt = df.schema[column].dataType
    col = F.col(column)
    if _is_float(dt):
        return F.coalesce(_bad_float(col), F.lit(False))
    depth = 0
    while isinstance(dt, T.ArrayType):
        dt, depth = dt.elementType, depth + 1
    if not _is_float(dt) or depth == 0:
        raise ValueError(f"column {column!r} is {df.schema[column].dataType.simpleString()}, not a float column")
    for _ in range(depth - 1):
        col = F.flatten(col)
    return F.coalesce(F.exists(col, _bad_float), F.lit(False))


def check_table(df: DataFrame, spec: TableSpec) -> list[CheckResult]:
    """Evaluate ``spec`` on ``df``: one aggregation pass plus one shuffle per unique key set."""
    for keys in spec.unique:
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise ValueError(f"table {spec.name}: key columns {missing} not in {df.columns}")
    aggs = [F.count(F.lit(1)).alias("rows")]
    names: list[tuple[str, str]] = []  # (alias, check name)
    key_cols = sorted({k for keys in spec.unique for k in keys})
    if key_cols:
        any_null = reduce(operator.or_, [F.col(k).isNull() for k in key_cols])
        aggs.append(F.sum(F.when(any_null, 1).otherwise(0)).alias("c0"))
        names.append(("c0", "null_keys"))
    for i, column in enumerate(spec.finite):
        aggs.append(F.sum(F.when(non_finite_condition(df, column), 1).otherwise(0)).alias(f"f{i}"))
        names.append((f"f{i}", f"finite_{column}"))
    for i, (check, cond) in enumerate(spec.violations.items()):
        aggs.append(F.sum(F.when(F.coalesce(cond, F.lit(True)), 1).otherwise(0)).alias(f"v{i}"))
        names.append((f"v{i}", check))
    row = df.agg(*aggs).first()
    rows = int(row["rows"])
    results = [
        CheckResult(spec.name, "row_count", rows >= spec.min_rows, rows, f"needs >= {spec.min_rows}"),
    ]
    for alias, check in names:
        bad = int(row[alias] or 0)
        results.append(CheckResult(spec.name, check, bad == 0, bad, "bad rows" if bad else ""))
    for keys in spec.unique:
        results.append(duplicate_keys(df, spec.name, keys))
    return results


def duplicate_keys(df: DataFrame, table: str, keys: Sequence[str]) -> CheckResult:
    """Number of key values that occur in more than one row; the detail names the smallest such key.

    Cost: one shuffle of the key columns.
    """
    counted = df.groupBy(*keys).count().where(F.col("count") > 1)
    row = counted.agg(F.count(F.lit(1)).alias("n"), F.min(F.struct(*keys)).alias("example")).first()
    n = int(row["n"])
    detail = ""
    if n:
        example = ", ".join(f"{k}={row['example'][k]!r}" for k in keys)
        detail = f"e.g. ({example})"
    return CheckResult(table, f"unique_{'_'.join(keys)}", n == 0, n, detail)


def empty_macro_nodes(
    assignments: DataFrame, k_by_side: Mapping[str, int], table: str = "assignments"
) -> list[CheckResult]:
    """One result per side: the number of macro ids in ``1..K`` that no node is assigned to.

    ``assignments`` needs columns ``side`` and ``macro_id``. Cost: one aggregation; the driver receives at
    most K rows per side.
    """
    counts = assignments.groupBy("side", "macro_id").count().collect()  # <= sum(K) rows (+ out-of-range ids)
    results = []
    for side, k in k_by_side.items():
        used = {int(r["macro_id"]) for r in counts if r["side"] == side and r["macro_id"] is not None}
        empty = [m for m in range(1, k + 1) if m not in used]
        detail = f"K={k}"
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            detail += f"; empty macro ids: {shown}"
        results.append(CheckResult(table, f"empty_macro_nodes_{side}", not empty, len(empty), detail))
    return results


def ratio_at_most(table: str, check: str, numerator: float, denominator: float, limit: float) -> CheckResult:
    """``numerator / denominator <= limit`` (0 when the denominator is 0)."""
    ratio = numerator / denominator if denominator else 0.0
    detail = f"{_fmt(numerator)} of {_fmt(denominator)}, limit {limit:g}"
    return CheckResult(table, check, ratio <= limit, round(ratio, 6), detail)
