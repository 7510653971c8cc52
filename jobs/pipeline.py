"""The MTMG build, stage by stage: the code the ``nodes``, ``features``, ``build`` and ``demo`` jobs share.

``run_nodes`` (SPEC 4.1-4.4): interactions -> feature window (cutoff c1) -> pair scores -> sketched node
vectors + preference weights -> weighted k-means per side -> pair_scores, node_vectors, node_weights,
centroids, kmeans_stats and the 'train' snapshot of assignments.

``run_features`` (SPEC 3, 4.5-4.7, 5): interactions + the fitted centroids -> both feature snapshots (the
test snapshot reuses the centroids: known nodes keep their macro id, new nodes go to the nearest centroid
of their vector at c2) -> macro_edges, recent_neighbors, task_lookup, samples, training_examples, and the
assignments of both snapshots.

The driver only ever holds k x r centroids, per-iteration k-sized statistics and a few counts.
"""

from __future__ import annotations

import time

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import windows_table
from jobs.common import StageSummary, UserError, stage, step
from jobs.storage import TableStore
from mgoe_spark.config import MgoeConfig
from mgoe_spark.examples import ASSIGNMENT_COLS, snapshot_assignments, snapshot_nodes
from mgoe_spark.features import examples_of, snapshot_events, snapshot_tables, tag
from mgoe_spark.kmeans import WeightedKMeans, space_fingerprint, warm_start_candidate
from mgoe_spark.samples import build_samples
from mgoe_spark.scores import pair_scores_from_config
from mgoe_spark.sketch import node_vectors
from mgoe_spark.weights import node_weights
from mgoe_spark.windows import TEST, TRAIN, Windows, feature_events
from schemas import (
    ASSIGNMENTS,
    CENTROIDS,
    INTERACTIONS,
    KMEANS_STATS,
    MACRO_EDGES,
    NODE_VECTORS,
    NODE_WEIGHTS,
    PAIR_SCORES,
    RECENT_NEIGHBORS,
    SAMPLES,
    TASK_LOOKUP,
    TRAINING_EXAMPLES,
)

SIDES = ("user", "item")


def _k(cfg: MgoeConfig, side: str) -> int:
    return cfg.kmeans.k_user if side == "user" else cfg.kmeans.k_item


def load_interactions(store: TableStore, run_date: str) -> DataFrame:
    return store.read(INTERACTIONS, run_date).drop("run_date")


def windows_of(
    store: TableStore, interactions: DataFrame, cfg: MgoeConfig, summary: StageSummary, run_date: str, *, choose: bool
) -> tuple[DataFrame, Windows]:
    """(interactions on the cutoffs' time axis, the run date's windows). ``choose`` (``nodes``): compute
    them and write the ``windows`` table; else (``features``) read that table (see :mod:`jobs.windows_table`)."""
    interactions = windows_table.on_time_axis(interactions, cfg)
    if choose:
        windows = windows_table.choose(store, interactions, cfg, run_date)
    else:
        windows = windows_table.recorded(store, cfg, run_date)
    summary.add("train_cutoff_ts", windows.train_cutoff)
    summary.add("test_cutoff_ts", windows.test_cutoff)
    for name in ("feature_share", "train_share", "test_share"):
        summary.add(name, round(getattr(windows, name), 4))
    summary.note("windows", windows.summary())
    return interactions, windows


def _previous_model(store: TableStore, cfg: MgoeConfig, side: str, run_date: str) -> WeightedKMeans | None:
    """The latest earlier run's centroids of ``side`` (for a warm start that keeps macro ids), if compatible."""
    earlier = store.latest_before(CENTROIDS, run_date)
    if earlier is None:
        return None
    rows = store.read(CENTROIDS, earlier).where(F.col("side") == side).collect()  # k rows
    fingerprint = space_fingerprint(cfg, side)
    return warm_start_candidate(rows, k=_k(cfg, side), r=cfg.sketch.dim, fingerprint=fingerprint, side=side)


def model_from_table(store: TableStore, cfg: MgoeConfig, side: str, run_date: str) -> WeightedKMeans:
    rows = store.read(CENTROIDS, run_date).where(F.col("side") == side).collect()  # k rows
    params = {"seed": cfg.sub_seed(f"kmeans-{side}"), "faiss_threads": cfg.kmeans.faiss_threads}
    return WeightedKMeans.from_centroid_rows(rows, **params)


def run_nodes(spark: SparkSession, cfg: MgoeConfig, run_date: str) -> StageSummary:
    """Fit the macro nodes at the training cutoff and write the stage-1 tables for ``run_date``."""
    summary = StageSummary("nodes")
    store = TableStore.of(spark, cfg)
    with stage(spark, summary, "pair scores, node vectors, weights, weighted k-means"):
        interactions = load_interactions(store, run_date)
        interactions, windows = windows_of(store, interactions, cfg, summary, run_date, choose=True)
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
            k = _k(cfg, side)
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
        union = _union
        for frames, schema in (
            (vector_frames, NODE_VECTORS),
            (weight_frames, NODE_WEIGHTS),
            (assignment_frames, ASSIGNMENTS),
        ):
            with step(spark, summary, f"write {schema.name}"):
                store.write(union(frames), schema, run_date)
        with step(spark, summary, "write centroids, kmeans_stats"):
            store.write(union(centroid_frames).coalesce(1), CENTROIDS, run_date)
            store.write(union(stats_frames).coalesce(1), KMEANS_STATS, run_date)
        spark.catalog.clearCache()
    return summary


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def assign_test_snapshot(
    store: TableStore, cfg: MgoeConfig, run_date: str, fitted: DataFrame, test_scores: DataFrame
) -> DataFrame:
    """ASSIGNMENTS of the test snapshot: fitted nodes keep their macro id, new nodes (in the test scores,
    not fitted) get the nearest fitted centroid of their sketch at c2 (sketch step 2 only for them).
    Cost: the sketch's Y pass over the test S per side, step 2 on the new nodes' pairs, one FAISS
    search per partition; memory per task: one Arrow batch (sketch) / one block of vectors (FAISS)."""
    models = {side: model_from_table(store, cfg, side, run_date) for side in SIDES}

    def assign_new(nodes: DataFrame) -> DataFrame:
        out = []
        for side in SIDES:
            wanted = nodes.where(F.col("side") == side).select("node_id")
            vectors = node_vectors(test_scores, cfg, side, only=wanted)
            out.append(models[side].assign(vectors).select(F.lit(side).alias("side"), "*"))
        return _union(out)

    return snapshot_assignments(fitted, snapshot_nodes(test_scores), assign_new)


def run_features(spark: SparkSession, cfg: MgoeConfig, run_date: str) -> StageSummary:
    """Build both feature snapshots and the training examples of ``run_date`` (needs ``run_nodes`` first).

    The data flow, top to bottom; every step ends with an action, so its time in run_metrics is its own,
    and what several later steps read is persisted (or was written by ``nodes``) and computed once.
    """
    summary = StageSummary("features")
    store = TableStore.of(spark, cfg)
    level = StorageLevel.MEMORY_AND_DISK
    with stage(spark, summary, "macro edges, recent neighbors, task lookup, samples, training examples"):
        interactions = load_interactions(store, run_date).persist(level)
        interactions, windows = windows_of(store, interactions, cfg, summary, run_date, choose=False)
        train_scores = store.read(PAIR_SCORES, run_date).drop("run_date")  # nodes wrote them
        with step(spark, summary, "read train assignments"):
            fitted = store.read(ASSIGNMENTS, run_date).where(F.col("snapshot") == TRAIN)
            fitted = fitted.select(*ASSIGNMENT_COLS).persist(level)
            fitted.count()  # materialized: the assignments partition is rewritten at the end of this stage
        with step(spark, summary, "test pair scores"):
            test_scores = pair_scores_from_config(feature_events(interactions, windows.test_cutoff), cfg)
            test_scores = test_scores.persist(level)
            summary.add("test_pairs", test_scores.count())
        with step(spark, summary, "test assignments"):
            test_assign = assign_test_snapshot(store, cfg, run_date, fitted, test_scores).persist(level)
            test_assign.count()
        assignments = tag({TRAIN: fitted, TEST: test_assign})
        scores = tag({TRAIN: train_scores, TEST: test_scores})
        tables = snapshot_tables(cfg, snapshot_events(interactions, windows), scores, assignments)
        tables["assignments"] = assignments
        rows = cfg.output.row_group_rows
        for name, schema in (
            ("macro_edges", MACRO_EDGES),
            ("recent_neighbors", RECENT_NEIGHBORS),
            ("task_lookup", TASK_LOOKUP),
        ):
            with step(spark, summary, f"{name} (both snapshots) + write"):
                tables[name] = tables[name].persist(level)  # the examples read them again
                store.write(tables[name], schema, run_date, row_group_rows=rows)
        with step(spark, summary, "samples + write"):
            samples = build_samples(interactions, windows, cfg).persist(level)
            store.write(samples, SAMPLES, run_date, row_group_rows=rows)
        with step(spark, summary, "training examples + write"):
            store.write(examples_of(cfg, samples, tables), TRAINING_EXAMPLES, run_date, row_group_rows=rows)
        with step(spark, summary, "write assignments"):
            store.write(assignments, ASSIGNMENTS, run_date)
        with step(spark, summary, "summary counts"):
            examples = store.read(TRAINING_EXAMPLES, run_date)
            tasks = list(cfg.tasks.order)
            per_split = examples.groupBy("split").agg(
                F.count("*").alias("n"),
                F.sum(F.col("cold_start").cast("int")).alias("cold"),
                *[F.avg(F.col("labels")[k]).alias(f"rate_{k}") for k in range(len(tasks))],
            )
            for row in per_split.collect():  # <= 3 rows
                summary.add(f"examples_{row['split']}", row["n"])
                summary.add(f"cold_start_{row['split']}", row["cold"] or 0)
                # label rate per task and cold-start share per split (SPEC 5): is the AUC measuring anything?
                summary.add(f"cold_start_share_{row['split']}", round((row["cold"] or 0) / max(1, row["n"]), 4))
                for k, task in enumerate(tasks):
                    summary.add(f"label_rate_{row['split']}_{task}", round(float(row[f"rate_{k}"] or 0.0), 4))
            written = store.read(ASSIGNMENTS, run_date)
            for row in written.groupBy("snapshot", "side").count().collect():  # 4 rows
                summary.add(f"{row['snapshot']}_{row['side']}_nodes", row["count"])
        spark.catalog.clearCache()
    return summary


STAGES = {"nodes": run_nodes, "features": run_features}


def execute_stages(args, names: list[str], input_path: str | None = None) -> int:
    """Shared ``execute`` of the stage jobs: optional ingest, then ``names`` in order, then run metrics."""
    from jobs.common import config_from_args, write_metrics
    from jobs.ingest import run_ingest
    from mgoe_spark.session import get_spark

    cfg = config_from_args(args)
    spark = get_spark(cfg.spark)
    summaries = []
    if input_path:
        summaries.append(run_ingest(spark, cfg, input_path, args.run_date))
        print(summaries[-1].line(), flush=True)
    for name in names:
        summaries.append(STAGES[name](spark, cfg, args.run_date))
        print(summaries[-1].line(), flush=True)
    write_metrics(spark, cfg, summaries, args.run_date)
    return 0
