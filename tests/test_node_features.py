"""The stage-1 convenience chain: scores -> vectors and weights of both sides, with the feature cutoff."""

from __future__ import annotations

import numpy as np

from mgoe_spark.config import load_config
from mgoe_spark.node_features import node_features
from schemas.tables import INTERACTIONS, NODE_VECTORS, NODE_WEIGHTS, PAIR_SCORES


def test_chain_respects_cutoff_and_config(spark):
    rng = np.random.default_rng(0)
    rows = [
        (int(rng.integers(1, 13)), int(rng.integers(1, 9)), str(rng.choice(["click", "fav", "cart", "buy"])), ts, None)
        for ts in range(120)
    ]
    rows.append((99, 99, "click", 500, None))  # after the cutoff: user 99 and item 99 must not appear anywhere
    events = spark.createDataFrame(rows, INTERACTIONS.spark(with_partition=False))
    cfg = load_config(profile="test", overrides=["sketch.dim=6", "weights.quantile_rel_error=0"])
    feats = node_features(events, cfg, cutoff=200)
    try:
        assert feats.pair_scores.columns == PAIR_SCORES.column_names
        users = {r.user_id for r in feats.pair_scores.select("user_id").distinct().collect()}
        items = {r.item_id for r in feats.pair_scores.select("item_id").distinct().collect()}
        assert 99 not in users and 99 not in items
        for df, side, ids in ((feats.user_vectors, "user", users), (feats.item_vectors, "item", items)):
            got = df.collect()
            assert df.columns == NODE_VECTORS.column_names
            assert {r.node_id for r in got} == ids and {r.side for r in got} == {side}
            norms = [np.linalg.norm(r.vector) for r in got]
            assert all(len(r.vector) == 6 for r in got) and np.allclose(norms, 1.0, atol=1e-6)
        for df, side, ids in ((feats.user_weights, "user", users), (feats.item_weights, "item", items)):
            got = df.collect()
            assert df.columns == NODE_WEIGHTS.column_names
            assert {r.node_id for r in got} == ids and {r.side for r in got} == {side}
            assert {r.weight for r in got} <= {0.5, 1.0, 2.0}
    finally:
        feats.unpersist()
