"""Samples: the rows the model is trained and evaluated on (SPEC 5), in one of three sample spaces
(``samples.space``, resolved by :meth:`~mgoe_spark.config.SampleSettings.resolve`: ``auto`` is ``exposures``
when ``tasks.exposure`` is set, else ``events``):

- ``events`` (the paper's Taobao protocol): every event of a task in ``tasks.order`` in a sample window is
  one row (user, item, window, ts), labelled one-hot by its own task; exact duplicate events (same user,
  item, task, ts) count once, as ingest keeps them. No negatives are drawn. A pair with three clicks and a
  buy in the window gives four rows.
- ``exposures`` (the paper's Tenrec protocol, needs ``tasks.exposure``): a pair exposed in the window is a
  row, labelled by its task events in the same window (an unclicked exposure is an all-zero row). Task
  events of pairs never exposed in the window are not samples. ``ts`` is the first exposure.
- ``pairs`` (a ranking protocol, not the paper's): every (user, item) pair with an event in a sample window
  is one row per window, with one 0/1 label per task (1 if the pair has that task in the window); ``ts`` is
  the pair's first event in the window. Plus negatives: per (user, sample window), ``N * P + M`` random
  items that are not an observed pair of that window, with all-zero labels, where P is the user's observed
  pairs in the window, ``N = samples.negatives_per_positive`` (default 7 in this space) and ``M =
  samples.negatives_per_user`` (``M`` also applies to ``exposures``).
  ``samples.negative_sampling``: ``uniform`` draws item ids 1..n_items by a hash of (seed, user, window,
  draw index); ``popularity`` draws the item of a uniformly chosen observed sample-window pair (so in
  proportion to the item's popularity). ``2 want + 8`` draws are made and the first ``want`` distinct
  unobserved ones kept, so a user who has seen almost every item may get fewer.
- ``cold_start``: the user or the item has no event of ``tasks.order`` at or before the feature cutoff of
  the row's snapshot (train/valid: c1, test: c2). ``samples.cold_start=drop`` removes those rows.
- ``split``: ``test`` in (c2, end]; ``valid`` / ``train`` in (c1, c2] by seeded hash (windows module) of
  (user, item) or of the user: every row of a pair (every event, in ``events``) gets the same split.

Cost: one shuffle of the sample-window events (the dedupe in ``events``, the grouping by pair otherwise),
O(rows) hash joins with per-node first-event times (O(users + items)) for the cold-start flag, O(rows * N)
for negatives. The driver gets at most one number (the item count when ``n_items`` is not given).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core import rand
from mgoe_spark.windows.cutoffs import Windows, sample_events, snapshot_cutoff, snapshot_of_split, split_column


def _labels(tasks: list[str]) -> list:
    return [F.max(F.when(F.col("task") == t, 1.0).otherwise(0.0)).alias(f"_l{k}") for k, t in enumerate(tasks)]


def event_samples(interactions: DataFrame, windows: Windows, tasks: list[str]) -> DataFrame:
    """The ``events`` space: (user_id, item_id, window, ts, labels) with one row per distinct sample-window
    event (user, item, task, ts) of ``tasks``, labels one-hot on its task. One shuffle (the dedupe)."""
    ev = sample_events(interactions, windows).where(F.col("task").isin(tasks))
    ev = ev.select("user_id", "item_id", "window", "ts", "task").distinct()
    one_hot = F.array(*[F.when(F.col("task") == t, 1.0).otherwise(0.0) for t in tasks]).cast("array<float>")
    return ev.select("user_id", "item_id", "window", "ts", one_hot.alias("labels"))


def observed_samples(interactions: DataFrame, windows: Windows, tasks: list[str], exposure: str | None) -> DataFrame:
    """(user_id, item_id, window, ts, labels) of the ``pairs`` space (``exposure`` None: one row per observed
    pair) or of the ``exposures`` space (one row per exposed pair) of both sample windows."""
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


def space_rows(interactions: DataFrame, windows: Windows, cfg: MgoeConfig) -> DataFrame:
    """The observed rows of the config's sample space (before negatives, splits and cold start)."""
    tasks = list(cfg.tasks.order)
    space = cfg.samples.resolve(cfg.tasks.exposure)
    if space == "events":
        return event_samples(interactions, windows, tasks)
    return observed_samples(interactions, windows, tasks, cfg.tasks.exposure if space == "exposures" else None)


def _uniform_items(cand: DataFrame, n_items: int, seed: int) -> DataFrame:
    """Candidates get ``item_id`` uniform on 1..n_items from a hash of (seed, user, window, j)."""
    u = rand.uniform(seed, "negatives", "user_id", "window", "j")
    return cand.withColumn("item_id", (F.floor(u * F.lit(int(n_items))) + 1).cast("long"))


POOL_BUCKET_ROWS = 4096
"""Rows per bucket of the popularity pool: bounds what one task holds when positions are numbered."""


def _popular_items(cand: DataFrame, observed: DataFrame, seed: int) -> DataFrame:
    """Candidates get the item of a uniformly drawn observed pair of either sample window, so an item is
    drawn in proportion to its number of sample-window pairs (its popularity).

    The pool (one row per observed pair) is hashed into ``B = ceil(M / 4096)`` buckets and numbered
    within each bucket; a draw picks a bucket and a position below the largest bucket's size uniformly and
    is rejected when that position is empty (rejection keeps every pool row equally likely). Cost: one
    count (M, to the driver), one window over buckets of ~4096 rows, two hash joins; O(M + draws).
    """
    pool = observed.select("item_id", F.xxhash64(F.lit(seed), "user_id", "item_id", "window").alias("_h"))
    m = pool.count()
    buckets = max(1, -(-m // POOL_BUCKET_ROWS))
    pool = pool.withColumn("_b", F.pmod(F.col("_h"), F.lit(buckets)))
    pool = pool.withColumn("_p", F.row_number().over(Window.partitionBy("_b").orderBy("_h", "item_id")) - 1)
    sizes = pool.groupBy("_b").agg(F.count("*").alias("_n"))
    cap = sizes.agg(F.max("_n")).first()[0] or 1
    ub = rand.uniform(seed, "pop_bucket", "user_id", "window", "j")
    up = rand.uniform(seed, "pop_pos", "user_id", "window", "j")
    cand = cand.select(
        "*", F.floor(ub * buckets).cast("long").alias("_b"), F.floor(up * int(cap)).cast("int").alias("_p")
    )
    picked = cand.join(pool.select("_b", "_p", "item_id"), ["_b", "_p"], "inner")  # rejected draws drop out
    return picked.drop("_b", "_p")


def negative_samples(
    observed: DataFrame,
    n_items: int,
    per_user: int,
    seed: int,
    n_tasks: int,
    *,
    per_positive: int = 0,
    sampling: str = "uniform",
) -> DataFrame:
    """Random unobserved items per (user, window) of ``observed``, all labels 0, ts = the user's first
    sample time in the window: ``per_user + per_positive * (the user's observed pairs in that window)`` of
    them. ``sampling``: ``uniform`` over item ids 1..n_items, or ``popularity`` (in proportion to each
    item's sample-window pairs, see :func:`_popular_items`). ``2 want + 8`` candidates are drawn and the
    first ``want`` distinct unobserved ones kept. O(users + candidates): a user's candidates are bounded by
    a constant times that user's own rows.
    """
    users = observed.groupBy("user_id", "window").agg(F.min("ts").alias("ts"), F.count("*").alias("_pos"))
    users = users.withColumn("_want", F.lit(int(per_user)) + F.lit(int(per_positive)) * F.col("_pos"))
    users = users.where(F.col("_want") > 0)
    draws = F.sequence(F.lit(0), 2 * F.col("_want") + 7)
    cand = users.select("user_id", "window", "ts", "_want", F.explode(draws).alias("j"))
    if sampling == "popularity":
        cand = _popular_items(cand, observed, seed)
    elif sampling == "uniform":
        cand = _uniform_items(cand, n_items, seed)
    else:
        raise ValueError(f"samples.negative_sampling must be 'uniform' or 'popularity', got {sampling!r}")
    cand = cand.join(observed.select("user_id", "item_id", "window"), ["user_id", "item_id", "window"], "left_anti")
    first = cand.groupBy("user_id", "window", "item_id").agg(
        F.min("j").alias("j"), F.first("ts").alias("ts"), F.first("_want").alias("_want")
    )
    rank = F.row_number().over(Window.partitionBy("user_id", "window").orderBy("j"))
    kept = first.withColumn("_r", rank).where(F.col("_r") <= F.col("_want"))
    zeros = F.array_repeat(F.lit(0.0).cast("float"), n_tasks).alias("labels")
    return kept.select("user_id", "item_id", "window", "ts", zeros)


def first_seen(interactions: DataFrame, tasks: list[str], key: str) -> DataFrame:
    """(key, first_ts): the first ``tasks`` event time of every user / item. O(events), map-side combined."""
    return interactions.where(F.col("task").isin(tasks)).groupBy(key).agg(F.min("ts").alias(f"_first_{key}"))


def _with_negatives(samples: DataFrame, interactions: DataFrame, cfg: MgoeConfig, n_items: int | None) -> DataFrame:
    """``samples`` plus the negatives of its space (``pairs``: per positive and per user; ``exposures``: per
    user; ``events``: none; the config check rejects negatives there)."""
    sc = cfg.samples
    space = sc.resolve(cfg.tasks.exposure)
    per_user = sc.negatives_per_user if space != "events" else 0
    per_positive = sc.per_positive(space) if space == "pairs" else 0
    if per_user <= 0 and per_positive <= 0:
        return samples
    if n_items is None and sc.negative_sampling == "uniform":
        row = interactions.agg(F.max("item_id")).first()
        n_items = int(row[0]) if row and row[0] is not None else 0
    if sc.negative_sampling == "uniform" and (n_items or 0) < 1:
        return samples
    negs = negative_samples(
        samples,
        n_items or 0,
        per_user,
        cfg.sub_seed("negatives"),
        len(cfg.tasks.order),
        per_positive=per_positive,
        sampling=sc.negative_sampling,
    )
    return samples.unionByName(negs)


def build_samples(
    interactions: DataFrame,
    windows: Windows,
    cfg: MgoeConfig,
    n_items: int | None = None,
) -> DataFrame:
    """SAMPLES rows (user_id, item_id, split, ts, labels, cold_start) from INTERACTIONS, in the config's
    sample space (module docstring).

    ``n_items``: the item id range for uniform negatives (default: the largest item id in ``interactions``,
    one aggregate; only read when the space draws negatives). Deterministic for a fixed ``cfg.seed``.
    """
    tasks = list(cfg.tasks.order)
    samples = _with_negatives(space_rows(interactions, windows, cfg), interactions, cfg, n_items)
    samples = samples.withColumn("split", split_column("window", cfg.windows, cfg.sub_seed("validation")))
    cutoff = snapshot_cutoff(snapshot_of_split("split", windows.snapshots), windows)
    samples = samples.join(first_seen(interactions, tasks, "user_id"), "user_id", "left")
    samples = samples.join(first_seen(interactions, tasks, "item_id"), "item_id", "left")

    def unseen(c: str):
        return F.col(c).isNull() | (F.col(c) > cutoff)

    samples = samples.withColumn("cold_start", unseen("_first_user_id") | unseen("_first_item_id"))
    if cfg.samples.cold_start == "drop":
        samples = samples.where(~F.col("cold_start"))
    return samples.select("user_id", "item_id", "split", "ts", "labels", "cold_start")
