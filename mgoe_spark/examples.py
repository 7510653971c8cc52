"""Training examples: samples joined with every feature the model needs (SPEC 5, 8), and snapshot
assignments (the same clustering reused at a later cutoff, SPEC 3).

Every feature table carries a ``snapshot`` column (``train``: cutoff c1, serves train and valid rows;
``test``: cutoff c2, serves test rows). The per-node features are first folded into one row per
(snapshot, side, node) -- macro id, the hops x K edge arrays, the T x L recent lists -- with full outer joins
over O(nodes) rows; then each sample row is joined once with its user's row, once with its item's row and
once with the lookup row (snapshot, user, item macro). Missing features become zeros: macro id 0,
zero K-arrays, 0-padded neighbor lists, lookup 0. Cost: O(nodes * (hops * K + T * L)) for the folds and
O(rows) for the three sample joins (a hot item's rows meet one feature row; AQE's skew-join splitting handles
the skew of that key). Nothing is collected to the driver.

Streaming layout: write with :data:`SORT_KEYS` within partitions and ``output.row_group_rows`` rows per
Parquet row group (``jobs.storage.write_table`` caps them), so a reader batches by row group and skips
the row groups of other splits by their min/max statistics on ``split``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mgoe_spark.edges import ITEM, USER, edge_width
from mgoe_spark.windows import snapshot_of_split

SORT_KEYS = ("split", "user_id", "item_id")
"""Sort order of the training examples within each output partition."""

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
    cols = ["side", "node_id", "macro_id", "distance"]
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
) -> DataFrame:
    """One row per (snapshot, node_id) of ``side``: macro (int, 0 = none), edges (hops x K float32),
    recent (T x L int64, 0-padded). Inputs carry a ``snapshot`` column. O(nodes * (hops*K + T*L))."""
    key = ["snapshot", "node_id"]
    macro = assignments.where(F.col("side") == side).select(*key, F.col("macro_id").cast("int").alias("macro"))
    e = edges.where(F.col("side") == side).groupBy(*key).agg(F.collect_list(F.struct("hop", "weights")).alias("_e"))
    n = (
        neighbors.where(F.col("side") == side)
        .groupBy(*key)
        .agg(F.collect_list(F.struct("task", "neighbors")).alias("_n"))
    )
    nodes = macro.join(e, key, "full_outer").join(n, key, "full_outer")
    hop_arrays = []
    for h in range(1, hops + 1):
        k = edge_width(side, h, k_user, k_item)
        found = F.get(F.filter(F.coalesce("_e", F.array()), _hop_array(h)), 0)["weights"]
        hop_arrays.append(F.coalesce(found, _zeros(k, "float")))
    task_lists = []
    for t in tasks:
        found = F.get(F.filter(F.coalesce("_n", F.array()), _task_is(t)), 0)["neighbors"]
        lst = F.slice(F.coalesce(found, F.array().cast("array<bigint>")), 1, length)
        task_lists.append(F.concat(lst, F.array_repeat(F.lit(0).cast("bigint"), F.lit(length) - F.size(lst))))
    return nodes.select(
        *key,
        F.coalesce("macro", F.lit(0)).cast("int").alias("macro"),
        F.array(*hop_arrays).cast("array<array<float>>").alias("edges"),
        F.array(*task_lists).cast("array<array<bigint>>").alias("recent"),
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
) -> DataFrame:
    """TRAINING_EXAMPLES rows from SAMPLES and the snapshot-tagged ASSIGNMENTS, MACRO_EDGES,
    RECENT_NEIGHBORS and TASK_LOOKUP (each with a ``snapshot`` column)."""
    args = (assignments, edges, neighbors, tasks, k_user, k_item, hops, length)
    users = node_features(USER, *args).select(
        "snapshot",
        F.col("node_id").alias("user_id"),
        F.col("macro").alias("user_macro"),
        F.col("edges").alias("user_edges"),
        F.col("recent").alias("user_recent"),
    )
    items = node_features(ITEM, *args).select(
        "snapshot",
        F.col("node_id").alias("item_id"),
        F.col("macro").alias("item_macro"),
        F.col("edges").alias("item_edges"),
        F.col("recent").alias("item_recent"),
    )
    s = samples.withColumn("snapshot", snapshot_of_split("split"))
    s = s.join(users, ["snapshot", "user_id"], "left").join(items, ["snapshot", "item_id"], "left")
    lk = lookup_rows(lookup, tasks).withColumnRenamed("macro_id", "item_macro")
    s = s.join(lk, ["snapshot", "user_id", "item_macro"], "left")

    def filled(c: str, default: Column) -> Column:
        return F.coalesce(F.col(c), default).alias(c)

    t = len(tasks)
    user_zero = F.array(*[_zeros(edge_width(USER, h, k_user, k_item), "float") for h in range(1, hops + 1)])
    item_zero = F.array(*[_zeros(edge_width(ITEM, h, k_user, k_item), "float") for h in range(1, hops + 1)])
    recent_zero = F.array_repeat(_zeros(length, "bigint"), t)
    return s.select(
        "user_id",
        "item_id",
        "split",
        "labels",
        filled("user_macro", F.lit(0)),
        filled("item_macro", F.lit(0)),
        filled("user_edges", user_zero),
        filled("item_edges", item_zero),
        filled("user_recent", recent_zero),
        filled("item_recent", recent_zero),
        filled("lookup", _zeros(t, "float")),
        "cold_start",
    )
