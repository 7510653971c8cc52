"""Training examples: samples joined with every feature the model needs (SPEC 5, 8), and snapshot
assignments (the same clustering reused at a later cutoff, SPEC 3).

Every feature table carries a ``snapshot`` column (``train``: cutoff c1, serves train and valid rows;
``test``: cutoff c2, serves test rows). The per-node features are first folded into one row per
(snapshot, side, node) -- macro id, the hops x K edge arrays, the T x L recent lists -- by one grouped
aggregation of their union per side (O(nodes) rows); then each sample row is joined once with its user's
row, once with its item's row and once with the lookup row (snapshot, user, item macro). Missing
features become zeros: macro id 0, zero K-arrays, 0-padded neighbor lists, lookup 0. Cost:
O(nodes * (hops * K + T * L)) for the folds and O(rows) for the three sample joins (a hot item's rows
meet one feature row; AQE's skew-join splitting handles the skew of that key). Nothing is collected to
the driver.

Streaming layout: write with :data:`SORT_KEYS` within partitions and ``output.row_group_rows`` rows per
Parquet row group (``mgoe_spark.core.storage.write_table`` caps them), so a reader batches by row group and skips
the row groups of other splits by their min/max statistics on ``split``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mgoe_spark.core.names import TEST, TRAIN
from mgoe_spark.features.edges import ITEM, USER, edge_width
from mgoe_spark.windows.cutoffs import snapshot_of_split

SORT_KEYS = ("split", "user_id", "item_id")
"""Sort order of the training examples within each output partition."""

ASSIGNMENT_COLS = ("side", "node_id", "macro_id", "distance")
"""ASSIGNMENTS columns without the snapshot tag."""

AssignFn = Callable[[DataFrame], DataFrame]
"""(side, node_id) rows -> ASSIGNMENTS rows for them (e.g. nearest fitted centroid of their new vectors)."""


def snapshot_nodes(pair_scores: DataFrame) -> DataFrame:
    """(side, node_id) of every user and item of a snapshot's merging matrix S. O(nnz)."""
    users = pair_scores.select(F.lit(USER).alias("side"), F.col("user_id").alias("node_id")).distinct()
    items = pair_scores.select(F.lit(ITEM).alias("side"), F.col("item_id").alias("node_id")).distinct()
    return users.unionByName(items)


def snapshot_assignments(
    fitted: DataFrame,
    nodes: DataFrame,
    assign_fn: AssignFn | None = None,
    policy: Literal["new", "all"] = "new",
) -> DataFrame:
    """Macro ids of a later snapshot's ``nodes`` with the clustering fitted at the training cutoff.

    ``policy='new'``: nodes in ``fitted`` keep their macro id; the others are given to ``assign_fn``
    (``None``: they stay unassigned, i.e. macro 0 downstream). ``policy='all'``: ``assign_fn`` assigns
    every node (e.g. nearest fitted centroid of its vector at the later cutoff). Either way the macro ids
    are those of the fitted centroids, so they mean the same thing in train and test features.
    Returns ASSIGNMENTS rows. O(nodes).
    """
    cols = list(ASSIGNMENT_COLS)
    if policy == "all":
        if assign_fn is None:
            raise ValueError("snapshot_assignments(policy='all') needs an assign_fn")
        return assign_fn(nodes.select("side", "node_id")).select(*cols)
    if policy != "new":
        raise ValueError(f"policy must be 'new' or 'all', got {policy!r}")
    known = fitted.select(*cols)
    if assign_fn is None:
        return known
    new = nodes.select("side", "node_id").join(known.select("side", "node_id"), ["side", "node_id"], "left_anti")
    return known.unionByName(assign_fn(new).select(*cols))


def _hop_array(h: int) -> Callable[[Column], Column]:
    return lambda x: x["hop"] == F.lit(h)


def _task_is(t: str) -> Callable[[Column], Column]:
    return lambda x: x["task"] == F.lit(t)


def _zeros(n: int, dtype: str) -> Column:
    return F.array_repeat(F.lit(0).cast(dtype), n)


def _id32(c: str) -> Column:
    """An id column as int32 (ids are vocabulary ids 1..N from ingest); fails the job if one does not fit."""
    col = F.col(c)
    fits = col.between(-(2**31), 2**31 - 1)
    return (
        F.when(fits | col.isNull(), col.cast("int"))
        .otherwise(F.raise_error(F.concat(F.lit(f"{c} does not fit in int32: "), col.cast("string"))))
        .alias(c)
    )


def node_features(
    side: str,
    assignments: DataFrame,
    edges: DataFrame,
    neighbors: DataFrame,
    tasks: Sequence[str],
    k_user: int,
    k_item: int,
    hops: int,
    length: int,
    lookup: DataFrame | None = None,
) -> DataFrame:
    """One row per (snapshot, node_id) of ``side``: macro (int, 0 = none), edges (hops x K float32),
    recent (T x L int32, 0-padded), and with ``lookup`` (:func:`lookup_rows`, users only) ``lookups``: a
    map item macro -> float32[T] (at most K_I entries). Inputs carry a ``snapshot`` column. One grouped
    aggregation, O(nodes * (hops*K + T*L + K_I*T)) data; node_id is int32."""
    key = ["snapshot", "node_id"]
    # One aggregation over the union of the inputs (not joins): one shuffle of O(node rows).
    e_type = "struct<hop:int,weights:array<float>>"
    n_type = "struct<task:string,neighbors:array<int>>"
    l_type = "struct<macro:int,lookup:array<float>>"
    nothing = {"macro": "int", "e": e_type, "n": n_type, "l": l_type}

    def part(df: DataFrame, **cols: Column) -> DataFrame:
        filled = [cols.get(c, F.lit(None).cast(t)).alias(c) for c, t in nothing.items()]
        return df.select("snapshot", _id32("node_id"), *filled)

    parts = [
        part(assignments.where(F.col("side") == side), macro=F.col("macro_id").cast("int")),
        part(
            edges.where(F.col("side") == side),
            e=F.struct(F.col("hop").cast("int").alias("hop"), F.col("weights").cast("array<float>").alias("weights")),
        ),
        part(
            neighbors.where(F.col("side") == side),
            # int32 ids (vocabulary ids; ANSI casts fail the job on overflow): half the bytes of every shuffle
            n=F.struct("task", F.col("neighbors").cast("array<int>").alias("neighbors")),
        ),
    ]
    if lookup is not None:
        parts.append(
            part(
                lookup.withColumnRenamed("user_id", "node_id"),
                l=F.struct(F.col("macro_id").cast("int").alias("macro"), F.col("lookup").alias("lookup")),
            )
        )
    union = parts[0]
    for df in parts[1:]:
        union = union.unionByName(df)
    aggs = [F.max("macro").alias("macro"), F.collect_list("e").alias("_e"), F.collect_list("n").alias("_n")]
    if lookup is not None:
        aggs.append(F.map_from_entries(F.collect_list("l")).alias("lookups"))
    nodes = union.groupBy(*key).agg(*aggs)
    hop_arrays = []
    for h in range(1, hops + 1):
        k = edge_width(side, h, k_user, k_item)
        found = F.get(F.filter(F.coalesce("_e", F.array()), _hop_array(h)), 0)["weights"]
        hop_arrays.append(F.coalesce(found, _zeros(k, "float")))
    task_lists = []
    for t in tasks:
        found = F.get(F.filter(F.coalesce("_n", F.array()), _task_is(t)), 0)["neighbors"]
        lst = F.slice(F.coalesce(found, F.array().cast("array<int>")), 1, length)
        task_lists.append(F.concat(lst, F.array_repeat(F.lit(0).cast("int"), F.lit(length) - F.size(lst))))
    return nodes.select(
        *key,
        F.coalesce("macro", F.lit(0)).cast("int").alias("macro"),
        F.array(*hop_arrays).cast("array<array<float>>").alias("edges"),
        F.array(*task_lists).cast("array<array<int>>").alias("recent"),
        *(["lookups"] if lookup is not None else []),
    )


def lookup_rows(lookup: DataFrame, tasks: Sequence[str]) -> DataFrame:
    """(snapshot, user_id, macro_id, lookup float32[T]) from sparse TASK_LOOKUP rows (+ snapshot)."""
    grouped = lookup.groupBy("snapshot", "user_id", "macro_id").agg(
        F.collect_list(F.struct("task", "value")).alias("_v")
    )
    vals = [F.coalesce(F.get(F.filter("_v", _task_is(t)), 0)["value"], F.lit(0.0)) for t in tasks]
    return grouped.select(
        "snapshot", "user_id", F.col("macro_id").cast("int"), F.array(*vals).cast("array<float>").alias("lookup")
    )


def build_examples(
    samples: DataFrame,
    assignments: DataFrame,
    edges: DataFrame,
    neighbors: DataFrame,
    lookup: DataFrame,
    tasks: Sequence[str],
    k_user: int,
    k_item: int,
    hops: int,
    length: int,
    snapshots: tuple[str, ...] = (TRAIN, TEST),
) -> DataFrame:
    """TRAINING_EXAMPLES rows from SAMPLES and the snapshot-tagged ASSIGNMENTS, MACRO_EDGES,
    RECENT_NEIGHBORS and TASK_LOOKUP (each with a ``snapshot`` column); ``snapshots``: the windows'
    snapshots (:attr:`~mgoe_spark.windows.cutoffs.Windows.snapshots`), which say whether valid rows read a
    ``valid`` snapshot of their own or the train one.

    Two shuffles of the sample rows, both narrow joins on int32 ids: with the item rows on
    (snapshot, item_id), then with the user rows on (snapshot, user_id); the user row carries its
    lookup values per item macro, so the lookup is a map access, not a third join. Feature rows: one
    shuffle each (the node fold). Task memory: Spark's sort / hash buffers (spill); a hot item's rows meet
    one feature row (AQE's skew-join splitting handles the key skew)."""
    args = (assignments, edges, neighbors, tasks, k_user, k_item, hops, length)
    users = node_features(USER, *args, lookup=lookup_rows(lookup, tasks)).select(
        "snapshot",
        F.col("node_id").alias("user_id"),
        F.col("macro").alias("user_macro"),
        F.col("edges").alias("user_edges"),
        F.col("recent").alias("user_recent"),
        "lookups",
    )
    items = node_features(ITEM, *args).select(
        "snapshot",
        F.col("node_id").alias("item_id"),
        F.col("macro").alias("item_macro"),
        F.col("edges").alias("item_edges"),
        F.col("recent").alias("item_recent"),
    )
    s = samples.select(
        _id32("user_id"),
        _id32("item_id"),
        "split",
        "labels",
        "cold_start",
        snapshot_of_split("split", snapshots).alias("snapshot"),
    )
    s = s.join(items, ["snapshot", "item_id"], "left").join(users, ["snapshot", "user_id"], "left")

    def filled(c: str, default: Column) -> Column:
        return F.coalesce(F.col(c), default).alias(c)

    t = len(tasks)
    user_zero = F.array(*[_zeros(edge_width(USER, h, k_user, k_item), "float") for h in range(1, hops + 1)])
    item_zero = F.array(*[_zeros(edge_width(ITEM, h, k_user, k_item), "float") for h in range(1, hops + 1)])
    recent_zero = F.array_repeat(_zeros(length, "int"), t)
    lookup = F.try_element_at("lookups", F.col("item_macro"))
    return s.select(
        F.col("user_id").cast("long").alias("user_id"),
        F.col("item_id").cast("long").alias("item_id"),
        "split",
        "labels",
        filled("user_macro", F.lit(0)),
        filled("item_macro", F.lit(0)),
        filled("user_edges", user_zero),
        filled("item_edges", item_zero),
        filled("user_recent", recent_zero),
        filled("item_recent", recent_zero),
        F.coalesce(lookup, _zeros(t, "float")).alias("lookup"),
        "cold_start",
    )
