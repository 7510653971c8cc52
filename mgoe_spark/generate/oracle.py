"""The generator's oracle: the true per-pair label probabilities of the ``events`` sample space, the table
that holds them, and the AUC they reach on a split (the headroom every model comparison reports, SPEC 5).

*What is true.* Every click draw ``e`` on a pair (user index ``a``, item index ``j``) is visible with
probability ``v = N / (N + H)`` (``N = generator.events``, ``H`` the hidden clicks, drawn like the visible
ones), and yields an event of later task ``k`` with probability ``pi_k = pi_{q(k)} * rate_k(a, j)`` (the
funnel's chain, :func:`~mgoe_spark.generate.events.conversion_rates`; ``pi_0 = 1``). Every factor of
``rate_k`` is a function of the pair, so the expected events of task ``t`` per draw on the pair are
``m_0 = v`` and ``m_k = pi_k``, and the probability that an event of the pair is task ``t`` -- its one-hot
label in the ``events`` space -- is ``p_t = m_t / sum_t' m_t'``. Ignored (so the oracle is very nearly, not
exactly, Bayes-optimal given the pair): the conversions cut off by the end of the log (a share about
``conversion_delay_s`` over the time left, which only the last hours feel) and exact duplicate events.

*Cost.* :func:`ground_truth_pairs`: the generator's map-only click pass plus one shuffle (distinct pairs,
O(N + H) rows in, one row per drawn pair out). :func:`oracle_auc`: three hash joins of the split's sample
rows with the vocabularies and the truth (O(rows)), then per task one exact AUC in Spark
(:func:`spark_auc`: two shuffles, a number per range partition to the driver). Nothing else is collected.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.names import TEST
from mgoe_spark.core.storage import TableStore
from mgoe_spark.generate.events import Plan, _clicks, conversion_rates, plan
from schemas import GROUND_TRUTH_PAIRS, SAMPLES, VOCAB_ITEMS, VOCAB_USERS


def visible_share(cfg: MgoeConfig) -> float:
    """``v = N / (N + H)``: the probability that a click draw is logged (not a hidden click)."""
    g = cfg.generator
    return g.events / (g.events + round(g.events * g.hidden_click_fraction))


def event_probabilities(p: Plan, rates: list[Column], visible: float) -> list[Column]:
    """``p_t`` per task (module docstring) from the pair's conversion ``rates`` of tasks 1..T-1."""
    chain: list[Column] = [F.lit(1.0)]
    for k in range(1, len(p.tasks)):
        chain.append(chain[p.parents[k - 1]] * rates[k - 1])
    expected = [F.lit(float(visible)), *chain[1:]]
    total = expected[0]
    for m in expected[1:]:
        total = total + m
    return [m / total for m in expected]


def ground_truth_pairs(spark: SparkSession, cfg: MgoeConfig) -> DataFrame:
    """GROUND_TRUTH_PAIRS rows: every (user, item) pair the generator drew a click on (visible or hidden),
    by raw ids, with ``probabilities`` = ``p_t`` per task. Deterministic; cost in the module docstring."""
    p = plan(cfg)
    pairs = _clicks(spark, cfg, p).select("a", "user_group", "j", "item_group").distinct()
    a, j = F.col("a"), F.col("j")
    rates = conversion_rates(cfg, p, a, F.col("user_group"), j, F.col("item_group"))
    probs = event_probabilities(p, rates, visible_share(cfg))
    return pairs.select(
        p.users.column(a).cast("string").alias("user_raw_id"),
        p.items.column(j).cast("string").alias("item_raw_id"),
        F.array(*probs).cast("array<double>").alias("probabilities"),
    )


def spark_auc(df: DataFrame, label: str, score: str, partitions: int = 16) -> float:
    """Exact tie-aware ROC AUC (as :func:`model.evaluate.auc`) of the 0/1 column ``label`` against
    ``score``, in Spark; ``nan`` without both classes.

    Per distinct score the positives and negatives (one shuffle); those range-partitioned by score (a
    second), and for each score the negatives below it: the negatives of the earlier partitions (one sum
    per partition to the driver) plus a running sum within its partition. AUC = sum over scores of
    ``pos * (neg below + neg at / 2) / (P N)``. O(rows) work; memory per task one range partition.
    """
    counts = df.groupBy(F.col(score).alias("_s")).agg(
        F.sum(F.col(label).cast("double")).alias("_pos"), F.sum(1.0 - F.col(label).cast("double")).alias("_neg")
    )
    ranged = counts.repartitionByRange(partitions, "_s").withColumn("_part", F.spark_partition_id()).persist()
    try:
        totals = sorted(tuple(r) for r in ranged.groupBy("_part").agg(F.sum("_pos"), F.sum("_neg")).collect())
        n_pos, n_neg = sum(t[1] for t in totals), sum(t[2] for t in totals)
        if n_pos == 0 or n_neg == 0:
            return math.nan
        offsets, below = {}, 0.0
        for part, _, neg in totals:
            offsets[part] = below
            below += neg
        offset = F.create_map(*[F.lit(x) for kv in offsets.items() for x in kv])[F.col("_part")]
        w = Window.partitionBy("_part").orderBy("_s").rowsBetween(Window.unboundedPreceding, -1)
        neg_below = F.coalesce(F.sum("_neg").over(w), F.lit(0.0)) + offset
        term = ranged.select((F.col("_pos") * (neg_below + F.col("_neg") / 2.0)).alias("_t"))
        return float(term.agg(F.sum("_t")).first()[0]) / (n_pos * n_neg)
    finally:
        ranged.unpersist()


def oracle_rows(store: TableStore, truth: TableStore, run_date: str, split: str = TEST) -> DataFrame:
    """The ``split`` rows of the run date's SAMPLES with ``probabilities`` from the truth table (null for a
    pair the truth does not know): samples -> raw ids (the vocabularies) -> GROUND_TRUTH_PAIRS. O(rows)."""
    samples = store.read(SAMPLES, run_date).where(F.col("split") == F.lit(split)).select("user_id", "item_id", "labels")
    users = store.read(VOCAB_USERS, run_date).select(F.col("id").alias("user_id"), F.col("raw_id").alias("user_raw_id"))
    items = store.read(VOCAB_ITEMS, run_date).select(F.col("id").alias("item_id"), F.col("raw_id").alias("item_raw_id"))
    pairs = truth.read(GROUND_TRUTH_PAIRS, run_date).drop("run_date")
    rows = samples.join(users, "user_id", "left").join(items, "item_id", "left")
    return rows.join(pairs, ["user_raw_id", "item_raw_id"], "left")


def oracle_auc(
    spark: SparkSession, cfg: MgoeConfig, run_date: str, *, truth_root: str | None = None, split: str = TEST
) -> dict:
    """The oracle's AUC per task on the ``split`` rows of the ``events`` space tables under
    ``cfg.output.root`` (score: the row's ``p_t``), with the truth read from ``truth_root`` (default: the
    same root, where ``mgoe generate`` writes it). Returns ``{"auc": {task: x}, "auc_mean", "rows",
    "missing", "split"}``; ``missing`` counts rows whose pair the truth does not know (left out).
    Raises ValueError for another sample space (its labels are not the events' one-hot labels)."""
    space = cfg.samples.resolve(cfg.tasks.exposure)
    if space != "events":
        raise ValueError(f"the oracle scores the events sample space; these tables are '{space}'")
    store = TableStore.of(spark, cfg)
    truth = store if truth_root is None else TableStore(spark, truth_root, cfg.output.format)
    rows = oracle_rows(store, truth, run_date, split).persist()
    try:
        n, missing = rows.agg(F.count("*"), F.count_if(F.col("probabilities").isNull())).first()
        known = rows.where(F.col("probabilities").isNotNull())
        tasks = list(cfg.tasks.order)
        aucs = {
            t: spark_auc(known.select(F.col("labels")[k].alias("y"), F.col("probabilities")[k].alias("p")), "y", "p")
            for k, t in enumerate(tasks)
        }
    finally:
        rows.unpersist()
    defined = [v for v in aucs.values() if not math.isnan(v)]
    mean = sum(defined) / len(defined) if defined else math.nan
    return {"auc": aucs, "auc_mean": mean, "rows": int(n), "missing": int(missing), "split": split}
