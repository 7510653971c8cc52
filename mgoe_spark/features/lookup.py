"""User macro task lookup table (SPEC 4.7, Eq 22) [reconstructed].

``n^t[u, m]`` = number of distinct items of user u in task t that belong to item macro node m;
``T^t[u, m] = n^t[u, m] / max(1, sum_m n^t[u, m])``. Items without an assignment belong to no macro node
and count in neither n nor the denominator. Stored sparsely: only non-zero entries.

Cost: distinct (user, task, item) (O(events), map-side combined), a join with the item assignments
(O(pairs)), two aggregations; output O(users * tasks * min(K_I, degree)). Nothing reaches the driver.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def task_lookup(events: DataFrame, assignments: DataFrame, tasks: Sequence[str]) -> DataFrame:
    """TASK_LOOKUP rows (user_id, task, macro_id, value) from feature-window ``events`` and ASSIGNMENTS.

    When both carry a ``snapshot`` column, every snapshot is computed in the same pass (keyed by it) and
    the output carries it too."""
    keys = ["snapshot"] if "snapshot" in events.columns else []
    items = assignments.where(F.col("side") == "item").select(
        *keys, F.col("node_id").alias("item_id"), F.col("macro_id").cast("int").alias("macro_id")
    )
    pairs = events.where(F.col("task").isin(list(tasks))).select(*keys, "user_id", "task", "item_id").distinct()
    counts = pairs.join(items, [*keys, "item_id"]).groupBy(*keys, "user_id", "task", "macro_id")
    counts = counts.agg(F.count("*").alias("n"))
    total = F.sum("n").over(Window.partitionBy(*keys, "user_id", "task"))
    return counts.select(
        *keys,
        "user_id",
        "task",
        "macro_id",
        (F.col("n") / F.greatest(F.lit(1.0), total.cast("double"))).alias("value"),
    )
