"""The generator's conversion traits (segments x tiers, item quality, user taste) and its oracle: strength 0
reproduces the log without them bit for bit, each trait moves conversion the way its config doc says, the
oracle's probabilities are exact on a hand case and calibrated on a real log, and the Spark AUC is exact."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from mgoe_spark.config import load_config
from mgoe_spark.generate.events import (
    conversion_rates,
    conversion_segment,
    conversion_tier,
    generate_events,
    lognormal_factor,
    plan,
)
from mgoe_spark.generate.oracle import ground_truth_pairs, oracle_auc, spark_auc
from model.evaluate import auc

OFF = ("generator.segment_sigma=0", "generator.item_quality_sigma=0", "generator.user_taste_sigma=0")
TASK_OF = {"pv": "click", "fav": "fav", "cart": "cart", "buy": "buy"}


def _cfg(*overrides: str):
    return load_config(profile="test", overrides=list(overrides))


def test_strength_zero_reproduces_the_log_without_traits(spark):
    """The test profile's log (3000 clicks) with the three strengths at 0 is, row for row, the log of the
    generator before the traits existed (main at ac6c4fe: 3414 rows, this digest)."""
    rows = sorted(tuple(r) for r in generate_events(spark, _cfg("generator.events=3000", *OFF)).collect())
    assert len(rows) == 3414
    assert hashlib.sha256(repr(rows).encode()).hexdigest() == (
        "ca442c2880b002df698043cf6a4a4e4a870305159c418738604055e73e6a540a"
    )
    on = sorted(tuple(r) for r in generate_events(spark, _cfg("generator.events=3000")).collect())
    assert on != rows and sum(r[3] == "pv" for r in on) == 3000  # the traits move conversions, not clicks


def _per_item(spark, cfg) -> pd.DataFrame:
    """Per raw item: clicks, conversions (fav + cart) and the planted quality Q(j) and tier."""
    p = plan(cfg)
    log = generate_events(spark, cfg).toPandas()
    log["task"] = log["behavior"].map(TASK_OF)
    counts = log.groupby(["item_id", "task"]).size().unstack(fill_value=0)
    j = F.col("id")
    quality = lognormal_factor(p.seed, "quality", max(cfg.generator.item_quality_sigma, 1.0), j)
    planted = spark.range(cfg.generator.items).select(
        p.items.column(j).alias("item_id"), quality.alias("q"), conversion_tier(cfg, p.seed, j).alias("tier")
    )
    return counts.join(planted.toPandas().set_index("item_id"), how="inner")


def test_item_quality_makes_some_hot_items_convert_rarely(spark):
    """``item_quality_sigma``: per-item conversion follows the planted quality Q(j) (rank correlation) when
    on, and not when off (Q drawn with sigma 1 there only to compare against)."""
    on = _per_item(spark, _cfg("generator.item_quality_sigma=1.0", "generator.segment_sigma=0", *OFF[2:]))
    off = _per_item(spark, _cfg(*OFF))
    rho = {}
    for name, df in (("on", on), ("off", off)):
        hot = df[df["click"] >= 40]
        ratio = (hot["fav"] + hot["cart"] + 1) / (hot["click"] + 1)
        rho[name] = pd.Series(ratio.to_numpy()).corr(pd.Series(hot["q"].to_numpy()), method="spearman")
    assert rho["on"] > 0.5 and abs(rho["off"]) < 0.3, rho


def test_segments_and_tiers_drive_conversion_across_the_click_groups(spark):
    """``segment_sigma``: the fav rate per (user segment, item tier) cell follows the planted factor when on
    (log correlation; not when off), and varies between the cells far more than when off."""
    out = {}
    for name, sigma in (("on", 1.0), ("off", 0.0)):
        cfg = _cfg(f"generator.segment_sigma={sigma}", "generator.item_quality_sigma=0", "generator.user_taste_sigma=0")
        p = plan(cfg)
        log = generate_events(spark, cfg)
        users = spark.range(cfg.generator.users).select(
            p.users.column(F.col("id")).alias("user_id"), conversion_segment(cfg, p.seed, F.col("id")).alias("s")
        )
        items = spark.range(cfg.generator.items).select(
            p.items.column(F.col("id")).alias("item_id"), conversion_tier(cfg, p.seed, F.col("id")).alias("tier")
        )
        cells = (
            log.join(users, "user_id")
            .join(items, "item_id")
            .groupBy("s", "tier")
            .agg(F.count_if(F.col("behavior") == "pv").alias("n"), F.count_if(F.col("behavior") == "fav").alias("k"))
        )
        factor = lognormal_factor(p.seed, "segment:1", 1.0, F.col("s"), F.col("tier"))
        out[name] = cells.select("n", "k", factor.alias("f")).toPandas()
    stats = {}
    for name, df in out.items():
        n, k = df["n"].to_numpy(float), df["k"].to_numpy(float)
        pooled = k.sum() / n.sum()
        dispersion = ((k - n * pooled) ** 2 / (n * pooled * (1 - pooled))).sum() / (len(n) - 1)
        stats[name] = (dispersion, np.corrcoef(np.log(df["f"]), np.log((k + 1) / (n + 1)))[0, 1])
    assert len(out["on"]) == 16 and stats["on"][1] > 0.8 and abs(stats["off"][1]) < 0.5, stats
    assert stats["on"][0] > 2 * stats["off"][0], stats  # the other structure over-disperses the cells a little


def test_user_taste_is_per_user_and_tier(spark):
    """``user_taste_sigma``: two users of the same group and segment get different rates on the same item
    when on, the same when off (the rate columns on hand-made rows)."""
    rows = spark.createDataFrame([(a, 0, 5, 1) for a in range(0, 400, 4)], "a long, c int, j long, h int")
    for sigma, distinct in ((0.7, True), (0.0, False)):
        cfg = _cfg(f"generator.user_taste_sigma={sigma}", "generator.propensity_sigma=0", "generator.segment_sigma=0")
        p = plan(cfg)
        rates = conversion_rates(cfg, p, F.col("a"), F.col("c"), F.col("j"), F.col("h"))
        seg = conversion_segment(cfg, p.seed, F.col("a"))
        df = rows.select(seg.alias("s"), rates[0].alias("r")).toPandas()
        spread = df.groupby("s")["r"].nunique()
        assert (spread > 1).all() if distinct else (spread == 1).all()


def test_oracle_probabilities_on_a_hand_case(spark):
    """No spread, affinity, propensity or traits: every pair has rates (0.1, 0.2, 0.5) with buy from cart and
    a visible share 1000 / 1250, so m = (0.8, 0.1, 0.2, 0.1) and p = m / 1.2 for every pair."""
    cfg = _cfg(
        "generator.events=1000",
        "generator.hidden_click_fraction=0.25",
        "generator.funnel_rates=[0.1, 0.2, 0.5]",
        "generator.conversion_spread=1",
        "generator.task_affinity=1",
        "generator.propensity_sigma=0",
        *OFF,
    )
    truth = ground_truth_pairs(spark, cfg).toPandas()
    assert len(truth) > 500 and not truth.duplicated(["user_raw_id", "item_raw_id"]).any()
    probs = np.stack(truth["probabilities"].to_numpy())
    assert np.allclose(probs, [2 / 3, 1 / 12, 1 / 6, 1 / 12])


def test_oracle_is_calibrated_on_the_events_of_the_log(spark):
    """On the test profile's log (every trait on), the mean oracle probability of each task over the
    logged events is that task's share of the events (within 10% relative), and every event's pair is
    known to the truth table: the formula, the visible share and the chain are right."""
    cfg = _cfg()
    truth = ground_truth_pairs(spark, cfg)
    log = generate_events(spark, cfg).select(
        F.col("user_id").cast("string").alias("user_raw_id"),
        F.col("item_id").cast("string").alias("item_raw_id"),
        "behavior",
    )
    joined = log.join(truth, ["user_raw_id", "item_raw_id"], "left")
    tasks = cfg.tasks.order
    row = joined.agg(
        F.count_if(F.col("probabilities").isNull()).alias("missing"),
        *[F.avg(F.col("probabilities")[k]).alias(f"p{k}") for k in range(len(tasks))],
        *[F.avg((F.col("behavior") == raw).cast("double")).alias(f"s{k}") for k, raw in enumerate(TASK_OF)],
    ).first()
    assert row["missing"] == 0
    for k, _ in enumerate(tasks):
        assert row[f"p{k}"] == pytest.approx(row[f"s{k}"], rel=0.10), (k, row)


def test_spark_auc_is_exact_with_ties(spark):
    # positives 0.9, 0.8, 0.3 against negatives 0.8, 0.1, 0.3: 3 + 2.5 + 1.5 = 7 of 9 pairs
    hand = spark.createDataFrame([(1, 0.9), (0, 0.8), (1, 0.8), (0, 0.1), (1, 0.3), (0, 0.3)], "y int, p double")
    assert spark_auc(hand, "y", "p") == pytest.approx(7 / 9)
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.2).astype(int)
    p = np.round(rng.random(3000) + 0.3 * y, 2)  # many ties, many range partitions
    df = spark.createDataFrame(pd.DataFrame({"y": y, "p": p}))
    assert spark_auc(df, "y", "p", partitions=7) == pytest.approx(auc(y, p), abs=1e-12)
    assert math.isnan(spark_auc(df.where("y = 1"), "y", "p"))


def test_oracle_auc_on_the_built_tables(spark, built):
    """The session build (test profile, events space) and its truth: every test row's pair is known and
    the oracle ranks every task well above chance."""
    res = oracle_auc(spark, built.config(), built.run_date, truth_root=str(built.root.parent / "truth"))
    assert res["rows"] > 500 and res["missing"] == 0 and res["split"] == "test"
    for task, value in res["auc"].items():
        assert 0.55 < value < 1.0, (task, res)
    with pytest.raises(ValueError, match="events sample space"):
        oracle_auc(spark, built.config("samples.space=pairs"), built.run_date)
