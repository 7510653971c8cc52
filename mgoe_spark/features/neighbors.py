"""Recent micro neighbors per node and task (SPEC 4.6, Eq 18).

For every user and task: the last L distinct items the user interacted with in that task (at or before the
cutoff: pass feature-window events), newest first; for every item: the last L distinct users. A neighbor
met several times counts once, at its latest time. Ties in time are broken by the smaller neighbor id
first, so the lists are deterministic. (MacGNN's code takes the 20 largest user ids for items; not copied.)

Cost: one aggregation to (node, task, neighbor) (O(events), map-side combined), then a top-L per
(node, task) with ``row_number() <= L``: Spark (>= 3.5) plans this as a WindowGroupLimit that keeps only
L rows per group in every map partition before the shuffle, so a hot item with millions of users ships
L rows per partition, not millions. Output O(nodes * tasks * L).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark.core.names import ITEM, USER


def _field(name: str):
    """``s -> s[name]`` for ``F.transform`` (a factory, so the loop variable is bound now)."""
    return lambda s: s[name]


def recent_neighbors(events: DataFrame, tasks: Sequence[str], length: int) -> DataFrame:
    """RECENT_NEIGHBORS rows (side, node_id, task, neighbors) from INTERACTIONS-shaped ``events``.

    Only tasks in ``tasks`` are kept (an exposure pseudo-task is not a neighbor relation). Node/task pairs
    without events get no row (the example builder pads with zeros). When ``events`` carries a
    ``snapshot`` column (:func:`mgoe_spark.features.build.snapshot_events`), every snapshot is computed in the
    same aggregations and the output carries it too.
    """
    if length < 1:
        raise ValueError(f"neighbors.length must be >= 1, got {length}")
    keys = ["snapshot"] if "snapshot" in events.columns else []
    ev = events.where(F.col("task").isin(list(tasks))).select(*keys, "user_id", "item_id", "task", "ts")
    out = None
    for side, node, nbr in ((USER, "user_id", "item_id"), (ITEM, "item_id", "user_id")):
        latest = ev.groupBy(*keys, node, "task", nbr).agg(F.max("ts").alias("ts"))
        order = Window.partitionBy(*keys, node, "task").orderBy(F.col("ts").desc(), F.col(nbr).asc())
        top = latest.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= length)
        lists = top.groupBy(*keys, node, "task").agg(
            F.transform(F.array_sort(F.collect_list(F.struct("rank", nbr))), _field(nbr)).alias("neighbors")
        )
        df = lists.select(*keys, F.lit(side).alias("side"), F.col(node).alias("node_id"), "task", "neighbors")
        out = df if out is None else out.unionByName(df)
    return out
