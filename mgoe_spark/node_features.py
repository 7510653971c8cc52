"""MTMG stage 1 inputs in one call: S, the node vectors and the node weights of both sides.

    feats = node_features(interactions, cfg, cutoff=train_cutoff_ts)
    feats.user_vectors, feats.user_weights  # -> weighted k-means on users (SPEC 4.4)

Work (E events in the window, nnz pairs, r = sketch.dim, D = weights.neighbor_cap):
S is O(E); each side's vectors O(nnz * r); each side's weights O(sum_mid min(deg_mid, D)^2).
S is read by all four products, so it is persisted (MEMORY_AND_DISK) by default; call
``feats.unpersist()`` when the stage is done.
"""

from __future__ import annotations

from typing import NamedTuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from mgoe_spark.config import MgoeConfig
from mgoe_spark.scores import pair_scores
from mgoe_spark.sketch import node_vectors
from mgoe_spark.weights import node_weights


class NodeFeatures(NamedTuple):
    """PAIR_SCORES, NODE_VECTORS (user / item) and NODE_WEIGHTS (user / item) DataFrames, all lazy."""

    pair_scores: DataFrame
    user_vectors: DataFrame
    item_vectors: DataFrame
    user_weights: DataFrame
    item_weights: DataFrame

    def unpersist(self) -> None:
        self.pair_scores.unpersist()


def node_features(
    interactions: DataFrame, cfg: MgoeConfig, cutoff: int | None = None, persist: bool = True
) -> NodeFeatures:
    """Scores (SPEC 4.1), sketched vectors (4.2) and preference weights (4.3) from ``interactions``.

    Args:
        interactions: the INTERACTIONS table.
        cfg: uses ``tasks.order``, ``scores``, ``sketch``, ``weights`` and the seed.
        cutoff: feature cutoff (epoch seconds, inclusive); ``None``: every event.
        persist: persist S, which the four downstream products share.
    """
    s = pair_scores(interactions, cfg.tasks.order, cfg.scores.beta, cutoff, cfg.scores.binary)
    if persist:
        s = s.persist(StorageLevel.MEMORY_AND_DISK)
    return NodeFeatures(
        pair_scores=s,
        user_vectors=node_vectors(s, cfg, "user"),
        item_vectors=node_vectors(s, cfg, "item"),
        user_weights=node_weights(s, cfg, "user"),
        item_weights=node_weights(s, cfg, "item"),
    )


__all__ = ["NodeFeatures", "node_features"]
