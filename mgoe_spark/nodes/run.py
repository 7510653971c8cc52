"""Stage 1, ``nodes`` (SPEC 4.1-4.4): the run's reads, writes and metrics around the pure steps.

interactions -> feature window (cutoff c1) -> pair scores (:mod:`.scores`) -> sketched node vectors
(:mod:`.sketch`) + preference weights (:mod:`.weights`) -> weighted k-means per side (:mod:`.kmeans`) ->
pair_scores, node_vectors, node_weights, centroids, kmeans_stats and the 'train' snapshot of assignments.

Every step ends with an action (a write, or a count of a persisted frame), so its time in run_metrics is its
own. The driver only ever holds k x r centroids, per-iteration k-sized statistics and a few counts.
"""

from __future__ import annotations

import time

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.metrics import StageSummary, stage, step
from mgoe_spark.core.names import SIDES, TRAIN
from mgoe_spark.core.storage import TableStore
from mgoe_spark.nodes.kmeans import WeightedKMeans, space_fingerprint, warm_start_candidate
from mgoe_spark.nodes.scores import pair_scores_from_config
from mgoe_spark.nodes.sketch import node_vectors
from mgoe_spark.nodes.weights import node_weights
from mgoe_spark.windows.cutoffs import feature_events
from mgoe_spark.windows.table import load_interactions, windows_of
from schemas import ASSIGNMENTS, CENTROIDS, KMEANS_STATS, NODE_VECTORS, NODE_WEIGHTS, PAIR_SCORES


def k_of(cfg: MgoeConfig, side: str) -> int:
    """K of ``side`` (``kmeans.k_user`` or ``kmeans.k_item``)."""
    return cfg.kmeans.k_user if side == "user" else cfg.kmeans.k_item


def _previous_model(store: TableStore, cfg: MgoeConfig, side: str, run_date: str) -> WeightedKMeans | None:
    """The latest earlier run's centroids of ``side`` (for a warm start that keeps macro ids), if compatible."""
    earlier = store.latest_before(CENTROIDS, run_date)
    if earlier is None:
        return None
    rows = store.read(CENTROIDS, earlier).where(F.col("side") == side).collect()  # k rows
    fingerprint = space_fingerprint(cfg, side)
    return warm_start_candidate(rows, k=k_of(cfg, side), r=cfg.sketch.dim, fingerprint=fingerprint, side=side)


def model_from_table(store: TableStore, cfg: MgoeConfig, side: str, run_date: str) -> WeightedKMeans:
    rows = store.read(CENTROIDS, run_date).where(F.col("side") == side).collect()  # k rows
    params = {"seed": cfg.sub_seed(f"kmeans-{side}"), "faiss_threads": cfg.kmeans.faiss_threads}
    return WeightedKMeans.from_centroid_rows(rows, **params)


def run_nodes(spark: SparkSession, cfg: MgoeConfig, run_date: str) -> StageSummary:
    """Fit the macro nodes at the training cutoff and write the stage-1 tables for ``run_date``."""
    summary = StageSummary("nodes")
    store = TableStore.of(spark, cfg)
    with (
        stage(spark, summary, "pair scores, node vectors, weights, weighted k-means"),
        store.transaction(run_date, stage="nodes"),  # the stage's tables appear together at the end
    ):
        interactions = load_interactions(store, run_date)
        interactions, windows = windows_of(store, interactions, cfg, summary, run_date, decide=True)
        with step(spark, summary, "pair scores"):
            scores = pair_scores_from_config(feature_events(interactions, windows.train_cutoff), cfg)
            scores = scores.persist(StorageLevel.MEMORY_AND_DISK)
            store.write(scores, PAIR_SCORES, run_date)
            summary.add("pairs", scores.count())
        assignment_frames, centroid_frames, stats_frames, vector_frames, weight_frames = [], [], [], [], []
        for side in SIDES:
            with step(spark, summary, f"sketch {side}"):
                vectors = node_vectors(scores, cfg, side).persist(StorageLevel.MEMORY_AND_DISK)
                n = vectors.count()
            with step(spark, summary, f"weights {side}"):
                weights = node_weights(scores, cfg, side).persist(StorageLevel.MEMORY_AND_DISK)
                weights.count()
            nodes = vectors.join(weights.select("node_id", "weight"), "node_id")
            nodes = nodes.select("side", "node_id", "vector", "weight")
            k = k_of(cfg, side)
            if n < k:
                key = "kmeans.k_user" if side == "user" else "kmeans.k_item"
                raise UserError(
                    f"{key}={k} is larger than the number of {side}s in the feature window ({n}); "
                    f"lower it with --set {key}=N"
                )
            seed, fingerprint = cfg.sub_seed(f"kmeans-{side}"), space_fingerprint(cfg, side)
            model = WeightedKMeans.from_config(cfg.kmeans, k, seed, fingerprint=fingerprint)
            previous = _previous_model(store, cfg, side, run_date) if cfg.kmeans.warm_start else None
            with step(spark, summary, f"k-means {side}"):
                t0 = time.perf_counter()
                model.fit(nodes.select("node_id", "vector", "weight"), warm_start=previous, r=cfg.sketch.dim)
                summary.add(f"{side}_kmeans_seconds", round(time.perf_counter() - t0, 2))
            summary.add(f"{side}s", n)
            summary.add(f"{side}_k", k)
            summary.add(f"{side}_iterations", model.n_iter)
            summary.add(f"{side}_inertia", float(model.inertia))
            summary.add(f"{side}_warm_start", 1.0 if previous is not None else 0.0)
            sizes = np.asarray(model.sizes)
            summary.add(f"{side}_cluster_imbalance", round(float(sizes.max() / max(sizes.mean(), 1e-12)), 3))
            summary.add(f"{side}_empty_clusters", int((sizes == 0).sum()))
            for m, size in enumerate(sizes, start=1):
                summary.add(f"{side}_cluster_size", int(size), detail=f"macro {m}")
            assigned = model.training_assignments()  # the fit's final pass: no second pass over the vectors
            assignment_frames.append(assigned.select(F.lit(TRAIN).alias("snapshot"), F.lit(side).alias("side"), "*"))
            centroid_frames.append(model.centroids_frame(spark, side, run_date))
            stats_frames.append(model.stats_frame(spark, side))
            vector_frames.append(vectors)
            weight_frames.append(weights)
        for frames, schema in (
            (vector_frames, NODE_VECTORS),
            (weight_frames, NODE_WEIGHTS),
            (assignment_frames, ASSIGNMENTS),
        ):
            with step(spark, summary, f"write {schema.name}"):
                store.write(_union(frames), schema, run_date)
        with step(spark, summary, "write centroids, kmeans_stats"):
            store.write(_union(centroid_frames).coalesce(1), CENTROIDS, run_date)
            store.write(_union(stats_frames).coalesce(1), KMEANS_STATS, run_date)
        spark.catalog.clearCache()
    return summary


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out
