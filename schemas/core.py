"""One definition per table, from which the Spark and the pyarrow schemas both come.

A :class:`TableSchema` is a name, an ordered list of :class:`Column` (a logical type from a small
vocabulary, nullability and a doc string) and the partition columns. Writers conform DataFrames to
:meth:`TableSchema.spark`, the trainer reads with :meth:`TableSchema.arrow`, and the contract tests check
that the two agree for every registered table.

>>> t = TableSchema("demo", [Column("user_id", "int64", False, "dense user id")])
>>> t.spark().simpleString()
'struct<user_id:bigint,run_date:string>'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa

# logical type -> (Spark DDL type, pyarrow type)
LOGICAL_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "int8": ("tinyint", pa.int8()),
    "int32": ("int", pa.int32()),
    "int64": ("bigint", pa.int64()),
    "float32": ("float", pa.float32()),
    "float64": ("double", pa.float64()),
    "bool": ("boolean", pa.bool_()),
    "string": ("string", pa.string()),
    "list<int32>": ("array<int>", pa.list_(pa.int32())),
    "list<int64>": ("array<bigint>", pa.list_(pa.int64())),
    "list<float32>": ("array<float>", pa.list_(pa.float32())),
    "list<float64>": ("array<double>", pa.list_(pa.float64())),
    "list<list<float32>>": ("array<array<float>>", pa.list_(pa.list_(pa.float32()))),
    "list<list<int32>>": ("array<array<int>>", pa.list_(pa.list_(pa.int32()))),
    "list<list<int64>>": ("array<array<bigint>>", pa.list_(pa.list_(pa.int64()))),
}


def spark_type(logical: str):  # -> pyspark.sql.types.DataType
    """The Spark type of a logical type (no SparkSession needed)."""
    from pyspark.sql import types as T

    scalars = {
        "int8": T.ByteType(),
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
        "bool": T.BooleanType(),
        "string": T.StringType(),
    }
    if logical in scalars:
        return scalars[logical]
    inner = re.fullmatch(r"list<(.+)>", logical)
    if inner is None:
        raise ValueError(f"unknown logical type {logical!r}")
    return T.ArrayType(spark_type(inner.group(1)), containsNull=False)


RUN_DATE = "run_date"
"""Every table is partitioned by the run date (``YYYY-MM-DD``) it was written for."""


def table_path(root: str, name: str) -> str:
    """Where table ``name`` lives under an output root: ``<root>/<name>`` (Parquet partitions or a Delta
    table). The one definition of the layout, for the Spark writers and the trainer's reader.

    >>> table_path("s3://bucket/mgoe/", "centroids")
    's3://bucket/mgoe/centroids'
    """
    return f"{root.rstrip('/')}/{name}"


def partition_path(root: str, name: str, run_date: str) -> str:
    """A Parquet table's partition of one run date: ``<root>/<name>/run_date=YYYY-MM-DD``.

    >>> partition_path("/data/mgoe", "centroids", "2026-11-23")
    '/data/mgoe/centroids/run_date=2026-11-23'
    """
    return f"{table_path(root, name)}/{RUN_DATE}={run_date}"


def run_date_of(directory_name: str) -> str | None:
    """The run date a partition directory's name holds (``run_date=2026-11-23`` -> ``2026-11-23``), else None."""
    prefix = f"{RUN_DATE}="
    return directory_name[len(prefix) :] if directory_name.startswith(prefix) else None


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in LOGICAL_TYPES:
            raise ValueError(f"column {self.name}: unknown logical type {self.type!r}")


REGISTRY: dict[str, TableSchema] = {}


@dataclass(frozen=True)
class TableSchema:
    """A table contract. ``run_date`` (string partition column) is appended to every table."""

    name: str
    columns: list[Column]
    doc: str = ""
    row_group_rows: int | None = None
    """Rows per Parquet row group the writer aims for (streaming readers batch by row group)."""
    sort_within_partitions: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names) or RUN_DATE in names:
            raise ValueError(f"table {self.name}: duplicate column or reserved '{RUN_DATE}'")
        REGISTRY[self.name] = self

    @property
    def all_columns(self) -> list[Column]:
        return [*self.columns, Column(RUN_DATE, "string", False, "run date partition, YYYY-MM-DD")]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def spark(self, with_partition: bool = True):  # -> pyspark.sql.types.StructType
        from pyspark.sql.types import StructField, StructType

        cols = self.all_columns if with_partition else self.columns
        return StructType([StructField(c.name, spark_type(c.type), c.nullable) for c in cols])

    def arrow(self, with_partition: bool = True) -> pa.Schema:
        cols = self.all_columns if with_partition else self.columns
        return pa.schema([pa.field(c.name, LOGICAL_TYPES[c.type][1], c.nullable) for c in cols])

    def ddl(self) -> str:
        return ", ".join(f"{c.name} {LOGICAL_TYPES[c.type][0]}" for c in self.all_columns)

    def markdown(self) -> str:
        rows = [f"### `{self.name}`", "", self.doc, "", "| column | type | nullable | meaning |", "|---|---|---|---|"]
        rows += [f"| {c.name} | {c.type} | {'yes' if c.nullable else 'no'} | {c.doc} |" for c in self.all_columns]
        return "\n".join(rows)
