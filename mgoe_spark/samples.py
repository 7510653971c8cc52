"""Samples: the rows the model is trained and evaluated on (SPEC 5).

- Default: every (user, item) pair with an event in a sample window is one row per window, with one 0/1
  label per task in ``tasks.order`` (1 if the pair has that task in the window). ``ts`` is the first event
  of the pair in the window.
- ``tasks.exposure`` set (Tenrec): the exposures are the sample space; a pair exposed in the window is a
  row, labelled by its task events in the same window (an unclicked exposure is an all-zero row). Task
  events of pairs never exposed in the window are not samples.
- ``samples.negatives_per_user = N > 0``: per (user, sample window), N random items that are not an
  observed pair of that window, with all-zero labels. Items are drawn uniformly from ids 1..n_items by a
  hash of (seed, user, window, draw index); ``2N + 8`` draws are made and the first N distinct unobserved
  ones kept, so a user who has seen almost every item may get fewer than N.
- ``cold_start``: the user or the item has no event of ``tasks.order`` at or before the feature cutoff of
  the row's snapshot (train/valid: c1, test: c2). ``samples.cold_start=drop`` removes those rows.
- ``split``: ``test`` in (c2, end]; ``valid`` / ``train`` in (c1, c2] by seeded hash (windows module).

Cost: O(sample-window events) for the grouping, O(rows) hash joins with per-node first-event times
(O(users + items)) for the cold-start flag, O(users * N) for negatives. The driver gets at most one number
(the item count when ``n_items`` is not given).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark import rand
from mgoe_spark.config import MgoeConfig
from mgoe_spark.windows import TEST, Windows, sample_events, snapshot_of_split, split_column


def _labels(tasks: list[str]) -> list:
    return [F.max(F.when(F.col("task") == t, 1.0).otherwise(0.0)).alias(f"_l{k}") for k, t in enumerate(tasks)]


def observed_samples(interactions: DataFrame, windows: Windows, tasks: list[str], exposure: str | None) -> DataFrame:
    """(user_id, item_id, window, ts, labels) for the observed pairs of both sample windows."""
    ev = sample_events(interactions, windows)
    keys = ["user_id", "item_id", "window"]
    label_array = F.array(*[F.col(f"_l{k}") for k in range(len(tasks))]).cast("array<float>").alias("labels")
    if exposure is None:
        grouped = ev.where(F.col("task").isin(tasks)).groupBy(*keys).agg(F.min("ts").alias("ts"), *_labels(tasks))
        return grouped.select(*keys, "ts", label_array)
    space = ev.where(F.col("task") == exposure).groupBy(*keys).agg(F.min("ts").alias("ts"))
    labels = ev.where(F.col("task").isin(tasks)).groupBy(*keys).agg(*_labels(tasks))
    joined = space.join(labels, keys, "left").fillna(0.0, subset=[f"_l{k}" for k in range(len(tasks))])
    return joined.select(*keys, "ts", label_array)


def negative_samples(observed: DataFrame, n_items: int, per_user: int, seed: int, n_tasks: int) -> DataFrame:
    """``per_user`` unobserved random items per (user, window) of ``observed``, all labels 0, ts = the
    user's first sample time in the window. O(users * per_user)."""
    draws = 2 * per_user + 8
    users = observed.groupBy("user_id", "window").agg(F.min("ts").alias("ts"))
    cand = users.select("user_id", "window", "ts", F.explode(F.sequence(F.lit(0), F.lit(draws - 1))).alias("j"))
    u = rand.uniform(seed, "negatives", "user_id", "window", "j")
    cand = cand.withColumn("item_id", (F.floor(u * F.lit(int(n_items))) + 1).cast("long"))
    cand = cand.join(observed.select("user_id", "item_id", "window"), ["user_id", "item_id", "window"], "left_anti")
    first = cand.groupBy("user_id", "window", "item_id").agg(F.min("j").alias("j"), F.first("ts").alias("ts"))
    rank = F.row_number().over(Window.partitionBy("user_id", "window").orderBy("j"))
    kept = first.withColumn("_r", rank).where(F.col("_r") <= per_user)
    zeros = F.array_repeat(F.lit(0.0).cast("float"), n_tasks).alias("labels")
    return kept.select("user_id", "item_id", "window", "ts", zeros)


def first_seen(interactions: DataFrame, tasks: list[str], key: str) -> DataFrame:
    """(key, first_ts): the first ``tasks`` event time of every user / item. O(events), map-side combined."""
    return interactions.where(F.col("task").isin(tasks)).groupBy(key).agg(F.min("ts").alias(f"_first_{key}"))


def build_samples(
    interactions: DataFrame,
    windows: Windows,
    cfg: MgoeConfig,
    n_items: int | None = None,
) -> DataFrame:
    """SAMPLES rows (user_id, item_id, split, ts, labels, cold_start) from INTERACTIONS.

    ``n_items``: the item id range for negative sampling (default: the largest item id in ``interactions``,
    one aggregate). Deterministic for a fixed ``cfg.seed``.
    """
    tasks = list(cfg.tasks.order)
    exposure = cfg.tasks.exposure
    samples = observed_samples(interactions, windows, tasks, exposure)
    per_user = cfg.samples.negatives_per_user
    if per_user > 0:
        if n_items is None:
            row = interactions.agg(F.max("item_id")).first()
            n_items = int(row[0]) if row and row[0] is not None else 0
        if n_items >= 1:
            negs = negative_samples(samples, n_items, per_user, cfg.sub_seed("negatives"), len(tasks))
            samples = samples.unionByName(negs)
    samples = samples.withColumn("split", split_column("window", cfg.windows, cfg.sub_seed("validation")))
    cutoff = F.when(snapshot_of_split("split") == F.lit(TEST), F.lit(windows.test_cutoff)).otherwise(
        F.lit(windows.train_cutoff)
    )
    samples = samples.join(first_seen(interactions, tasks, "user_id"), "user_id", "left")
    samples = samples.join(first_seen(interactions, tasks, "item_id"), "item_id", "left")

    def unseen(c: str):
        return F.col(c).isNull() | (F.col(c) > cutoff)

    samples = samples.withColumn("cold_start", unseen("_first_user_id") | unseen("_first_item_id"))
    if cfg.samples.cold_start == "drop":
        samples = samples.where(~F.col("cold_start"))
    return samples.select("user_id", "item_id", "split", "ts", "labels", "cold_start")
