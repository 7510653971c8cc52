"""Warm starts through ``run_nodes`` on two run dates: only into the same vector space (fingerprint)."""

from __future__ import annotations

import logging

import numpy as np

from schemas import ASSIGNMENTS, CENTROIDS, INTERACTIONS, KMEANS_STATS

TASKS = ["click", "fav", "cart", "buy"]


def interactions(spark):
    """30 users in 3 groups, each clicking (and sometimes buying) the 8 items of its group's block."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(900):
        u = 1 + t % 30
        item = 1 + (u % 3) * 8 + int(rng.integers(0, 8))
        rows.append((u, item, TASKS[0] if t % 4 else TASKS[3], 1000 + 60 * t, None))
    return spark.createDataFrame(rows, INTERACTIONS.spark(with_partition=False))


def test_warm_start_only_when_the_fingerprint_matches(spark, tmp_path, caplog):
    from mgoe_spark.config import load_config
    from mgoe_spark.core.storage import TableStore
    from mgoe_spark.nodes.run import run_nodes

    base = [f"output.root={tmp_path}", "kmeans.k_user=3", "kmeans.k_item=3", "sketch.dim=8"]
    same = load_config(profile="test", overrides=base)
    other = load_config(profile="test", overrides=[*base, "scores.beta=2.0"])  # another vector space
    store = TableStore.of(spark, same)
    events = interactions(spark)
    for date in ("2026-01-01", "2026-01-02", "2026-01-03"):
        store.write(events, INTERACTIONS, date)

    first = run_nodes(spark, same, "2026-01-01").metrics
    second = run_nodes(spark, same, "2026-01-02").metrics
    with caplog.at_level(logging.WARNING, logger="mgoe.kmeans"):
        third = run_nodes(spark, other, "2026-01-03").metrics
    assert (first["user_warm_start"], second["user_warm_start"], third["user_warm_start"]) == (0.0, 1.0, 0.0)
    assert second["item_warm_start"] == 1.0 and third["item_warm_start"] == 0.0
    assert "k-means user: cold fit, no warm start: the vector space changed" in caplog.text

    def fingerprints(date):
        return {r["side"]: r["fingerprint"] for r in store.read(CENTROIDS, date).collect()}

    assert fingerprints("2026-01-01") == fingerprints("2026-01-02") != fingerprints("2026-01-03")

    # same data, warm start: every user keeps its macro id
    def users(date):
        rows = store.read(ASSIGNMENTS, date).where("side = 'user'").collect()
        return {r["node_id"]: r["macro_id"] for r in rows}

    assert users("2026-01-02") == users("2026-01-01") and len(users("2026-01-01")) == 30
    # kmeans_stats: one row per iteration, the last says why it stopped, every row which engine ran
    stats = store.read(KMEANS_STATS, "2026-01-02").where("side = 'user'").orderBy("iteration").collect()
    assert len(stats) == second["user_iterations"]
    assert [r["stop_reason"] for r in stats[:-1]] == [None] * (len(stats) - 1)
    assert stats[-1]["stop_reason"] in ("shift_below_tol", "inertia_plateau", "max_iter")
    assert {r["engine"] for r in stats} == {"jobs"}  # the default: Spark's channels only
