"""Stage 2, ``features`` (SPEC 3, 4.5-4.7, 5): the run's reads, persists, writes and metrics around the one
pure wiring, :func:`mgoe_spark.features.build.build_features`.

Reads: interactions, the ``windows`` row and the pair scores, assignments and centroids ``nodes`` wrote.
Writes: macro_edges, recent_neighbors, task_lookup, samples, training_examples, and the assignments of both
snapshots. The test snapshot reuses the centroids: known nodes keep their macro id, new nodes go to the
nearest centroid of their vector at c2. Every step ends with an action, so its time in run_metrics is its
own, and what several later steps read is persisted before its first action and computed once.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.metrics import StageSummary, stage, step
from mgoe_spark.core.names import SAMPLE_SPACE_METRIC, SIDES, TRAIN
from mgoe_spark.core.storage import TableStore
from mgoe_spark.features.build import Features, FittedNodes, build_features
from mgoe_spark.features.examples import ASSIGNMENT_COLS
from mgoe_spark.nodes.run import model_from_table
from mgoe_spark.nodes.sketch import node_vectors
from mgoe_spark.windows.table import load_interactions, windows_of
from schemas import (
    ASSIGNMENTS,
    MACRO_EDGES,
    PAIR_SCORES,
    RECENT_NEIGHBORS,
    SAMPLES,
    TASK_LOOKUP,
    TRAINING_EXAMPLES,
)

LEVEL = StorageLevel.MEMORY_AND_DISK


def fitted_nodes(store: TableStore, cfg: MgoeConfig, run_date: str, fitted: DataFrame) -> FittedNodes:
    """Stage 1's output for stage 2: the train pair scores (as ``nodes`` wrote them), the train snapshot's
    ``fitted`` assignments, and the fitted centroids as the assignment of nodes new at a later cutoff (cv or
    c2): the nearest centroid of their sketch there (sketch step 2 only for them). Cost of ``assign_new``:
    the sketch's Y pass over that snapshot's S per side, step 2 on the new nodes' pairs, one FAISS search per
    partition; memory per task: one Arrow batch (sketch) / one block of vectors (FAISS). Reads k x r
    centroids per side."""
    models = {side: model_from_table(store, cfg, side, run_date) for side in SIDES}

    def assign_new(test_scores: DataFrame, nodes: DataFrame) -> DataFrame:
        out = None
        for side in SIDES:
            wanted = nodes.where(F.col("side") == side).select("node_id")
            vectors = node_vectors(test_scores, cfg, side, only=wanted)
            part = models[side].assign(vectors).select(F.lit(side).alias("side"), "*")
            out = part if out is None else out.unionByName(part)
        return out

    train_scores = store.read(PAIR_SCORES, run_date).drop("run_date")
    return FittedNodes(train_scores, fitted, assign_new)


def run_features(spark: SparkSession, cfg: MgoeConfig, run_date: str) -> StageSummary:
    """Build every feature snapshot and the training examples of ``run_date`` (needs ``run_nodes`` first)."""
    summary = StageSummary("features")
    store = TableStore.of(spark, cfg)
    with (
        stage(spark, summary, "macro edges, recent neighbors, task lookup, samples, training examples"),
        store.transaction(run_date, stage="features"),  # the stage's tables appear together at the end
    ):
        interactions = load_interactions(store, run_date).persist(LEVEL)
        interactions, windows = windows_of(store, interactions, cfg, summary, run_date, decide=False)
        with step(spark, summary, "read train assignments"):
            fitted = store.read(ASSIGNMENTS, run_date).where(F.col("snapshot") == TRAIN)
            fitted = fitted.select(*ASSIGNMENT_COLS).persist(LEVEL)
            fitted.count()  # materialized: the stage replaces the assignments partition
        features = build_features(cfg, interactions, windows, fitted_nodes(store, cfg, run_date, fitted))
        _write(spark, store, cfg, summary, features, run_date)
        _summarize(spark, store, cfg, summary, run_date)
        spark.catalog.clearCache()
    return summary


def _write(
    spark: SparkSession, store: TableStore, cfg: MgoeConfig, summary: StageSummary, f: Features, run_date: str
) -> None:
    """Materialize and write the stage's tables in data-flow order, one timed step each. What a later step
    reads again (test scores and assignments, the snapshot tables, samples) is persisted before its first
    action, so it is computed once."""
    rows = cfg.output.row_group_rows
    for name, scores in f.later_scores.items():
        with step(spark, summary, f"{name} pair scores"):
            summary.add(f"{name}_pairs", scores.persist(LEVEL).count())
        with step(spark, summary, f"{name} assignments"):
            f.later_assignments[name].persist(LEVEL).count()
    tables = f.tables()
    for schema in (MACRO_EDGES, RECENT_NEIGHBORS, TASK_LOOKUP):  # the examples read them again: persisted
        with step(spark, summary, f"{schema.name} (every snapshot) + write"):
            store.write(tables[schema.name].persist(LEVEL), schema, run_date, row_group_rows=rows)
    with step(spark, summary, "samples + write"):
        store.write(tables["samples"].persist(LEVEL), SAMPLES, run_date, row_group_rows=rows)
    with step(spark, summary, "training examples + write"):
        store.write(tables["training_examples"], TRAINING_EXAMPLES, run_date, row_group_rows=rows)
    with step(spark, summary, "write assignments"):
        store.write(tables["assignments"], ASSIGNMENTS, run_date)


def _summarize(spark: SparkSession, store: TableStore, cfg: MgoeConfig, summary: StageSummary, run_date: str) -> None:
    """The sample space, examples, cold starts and label rates per split, nodes per snapshot and side, from
    the written tables (SPEC 5: is the AUC measuring anything?). The space is a ``sample_space`` detail row of
    run_metrics (value 1, detail the space) and a note; the label rates a note per split. One grouped count
    per table; <= 3 + 4 rows to the driver."""
    space = cfg.samples.resolve(cfg.tasks.exposure)
    summary.add(SAMPLE_SPACE_METRIC, 1.0, space)
    summary.note("samples", space)
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
            summary.add(f"cold_start_share_{row['split']}", round((row["cold"] or 0) / max(1, row["n"]), 4))
            rates = [float(row[f"rate_{k}"] or 0.0) for k in range(len(tasks))]
            for task, rate in zip(tasks, rates, strict=True):
                summary.add(f"label_rate_{row['split']}_{task}", round(rate, 4))
            text = " ".join(f"{t} {100 * r:.2f}%" for t, r in zip(tasks, rates, strict=True))
            summary.note(f"label rates {row['split']}", text)
        written = store.read(ASSIGNMENTS, run_date)
        for row in written.groupBy("snapshot", "side").count().collect():  # <= 6 rows
            summary.add(f"{row['snapshot']}_{row['side']}_nodes", row["count"])
