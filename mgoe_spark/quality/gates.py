"""The quality gates between pipeline stages: which checks each stage's tables must pass (pure: a gate
reads through a ``Reader`` and returns results), and how the results are recorded.

Gates (the Airflow DAG runs one after each stage):

- ``ingest``:   interactions, vocab_users, vocab_items (and the reject fraction from rejects);
- ``nodes``:    windows, pair_scores, node_vectors, node_weights, assignments, centroids;
- ``features``: windows, macro_edges, recent_neighbors, task_lookup, samples, training_examples.

Both read the ``windows`` table that ``nodes`` wrote (one row: cutoffs, shares) and stop with a one-line
error when the config asks for other windows; every window must hold events, and (features) every sample
must lie in the window of its split.

Every table must have rows (``quality.min_rows``) and unique, non-null keys; floats must be finite
(weights, scores, vectors, edges, lookups); ids and macro ids must be in range; no macro node of either
side may be empty; per-task arrays must have one entry per task. :func:`record` keeps the latest result of
each gate in the run date's ``quality_checks`` partition.

Cost: per table one aggregation pass plus one shuffle per unique key set (see :mod:`.checks`).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.names import SIDES, SNAPSHOTS, SPLITS, TRAIN, VALID
from mgoe_spark.core.storage import TableNotFound, TableStore
from mgoe_spark.quality.checks import CheckResult, TableSpec, check_table, empty_macro_nodes, ratio_at_most
from mgoe_spark.windows import table as windows_table
from mgoe_spark.windows.cutoffs import Windows, sample_window
from schemas import (
    ASSIGNMENTS,
    CENTROIDS,
    INTERACTIONS,
    MACRO_EDGES,
    NODE_VECTORS,
    NODE_WEIGHTS,
    PAIR_SCORES,
    QUALITY_CHECKS,
    RECENT_NEIGHBORS,
    REJECTS,
    SAMPLES,
    TASK_LOOKUP,
    TRAINING_EXAMPLES,
    VOCAB_ITEMS,
    VOCAB_USERS,
    WINDOWS,
    TableSchema,
)

Reader = Callable[[TableSchema], DataFrame]


# ---- the gates -------------------------------------------------------------------------------------------


def _k_of(side: Column, cfg: MgoeConfig) -> Column:
    return F.when(side == "user", F.lit(cfg.kmeans.k_user)).otherwise(F.lit(cfg.kmeans.k_item))


def _not_in(column: str, allowed: list[str]) -> Column:
    return ~F.col(column).isin(allowed)


def _vocab_spec(schema: TableSchema, min_rows: int) -> TableSpec:
    return TableSpec(schema.name, min_rows, unique=[["raw_id"], ["id"]], violations={"id_below_1": F.col("id") < 1})


def gate_ingest(read: Reader, cfg: MgoeConfig, run_date: str = "") -> list[CheckResult]:
    """interactions, vocabularies, reject fraction."""
    tasks = cfg.tasks.order + ([cfg.tasks.exposure] if cfg.tasks.exposure else [])
    n = cfg.quality.min_rows
    interactions = read(INTERACTIONS)
    results = check_table(
        interactions,
        TableSpec(
            INTERACTIONS.name,
            n,
            unique=[["user_id", "item_id", "task", "ts"]],
            violations={
                "user_id_below_1": F.col("user_id") < 1,
                "item_id_below_1": F.col("item_id") < 1,
                "unknown_task": _not_in("task", tasks),
            },
        ),
    )
    for vocab in (VOCAB_USERS, VOCAB_ITEMS):
        df = read(vocab)
        results += check_table(df, _vocab_spec(vocab, n))
        # Dense ids 1..N: with unique ids >= 1 this holds exactly when max(id) equals the row count.
        row = df.agg(F.count(F.lit(1)).alias("n"), F.max("id").alias("max")).first()
        gap = int(row["max"] or 0) - int(row["n"])
        results.append(CheckResult(vocab.name, "dense_ids", gap == 0, gap, "max(id) - rows"))
    kept = next(r.value for r in results if r.table == INTERACTIONS.name and r.check == "row_count")
    try:
        rejected = float(read(REJECTS).count())
    except TableNotFound:
        rejected = 0.0
    limit = cfg.quality.max_reject_fraction
    results.append(ratio_at_most(REJECTS.name, "reject_fraction", rejected, rejected + kept, limit))
    return results


def windows_checks(read: Reader, cfg: MgoeConfig, run_date: str) -> tuple[list[CheckResult], Windows]:
    """The recorded windows (UserError if the config asks for others) and their checks: ordered cutoffs,
    no empty window, shares summing to 1. One row read."""
    rows = read(WINDOWS).collect()
    if len(rows) != 1:
        return [CheckResult(WINDOWS.name, "row_count", False, len(rows), "needs exactly 1")], None
    w = windows_table.from_rows(rows, cfg, run_date)
    shares = (w.feature_share, w.train_share, w.test_share)
    empty = sum(1 for x in w.window_shares().values() if x <= 0)
    cuts = [w.cutoff(name) for name in w.snapshots]
    ordered = all(a < b for a, b in zip(cuts, cuts[1:], strict=False))
    results = [
        CheckResult(WINDOWS.name, "row_count", True, 1, "needs exactly 1"),
        CheckResult(WINDOWS.name, "cutoffs_ordered", ordered, w.test_cutoff - w.train_cutoff),
        CheckResult(WINDOWS.name, "empty_windows", empty == 0, empty, w.summary()),
        CheckResult(WINDOWS.name, "shares_sum_to_1", abs(sum(shares) - 1) < 1e-9, sum(shares)),
    ]
    return results, w


def outside_window(w: Windows) -> Column:
    """True for a sample row whose ``ts`` is not in the window of its ``split``."""
    split, window = F.col("split"), sample_window(w)
    if w.valid_cutoff is None:  # valid rows are carved from the train window
        window = F.when((window == F.lit(TRAIN)) & (split == F.lit(VALID)), F.lit(VALID)).otherwise(window)
    return window.isNull() | (window != split)


def gate_nodes(read: Reader, cfg: MgoeConfig, run_date: str = "") -> list[CheckResult]:
    """windows, pair_scores, node_vectors, node_weights, assignments, centroids."""
    n = cfg.quality.min_rows
    side_bad = {"unknown_side": _not_in("side", list(SIDES))}
    results, _ = windows_checks(read, cfg, run_date)
    results += check_table(
        read(PAIR_SCORES),
        TableSpec(
            PAIR_SCORES.name,
            n,
            unique=[["user_id", "item_id"]],
            finite=["score"],
            violations={"score_not_positive": F.col("score") <= 0, "mask_zero": F.col("mask") == 0},
        ),
    )
    results += check_table(
        read(NODE_VECTORS),
        TableSpec(
            NODE_VECTORS.name,
            n,
            unique=[["side", "node_id"]],
            finite=["vector"],
            violations={**side_bad, "vector_length": F.size("vector") != cfg.sketch.dim},
        ),
    )
    results += check_table(
        read(NODE_WEIGHTS),
        TableSpec(
            NODE_WEIGHTS.name,
            n,
            unique=[["side", "node_id"]],
            finite=["strength", "weight"],
            violations={**side_bad, "weight_not_positive": F.col("weight") <= 0},
        ),
    )
    assignments = read(ASSIGNMENTS)
    macro_out_of_range = (F.col("macro_id") < 1) | (F.col("macro_id") > _k_of(F.col("side"), cfg))
    results += check_table(
        assignments,
        TableSpec(
            ASSIGNMENTS.name,
            n,
            unique=[["snapshot", "side", "node_id"]],
            finite=["distance"],
            violations={**side_bad, "macro_id_out_of_range": macro_out_of_range},
        ),
    )
    fitted = assignments.where(F.col("snapshot") == "train")  # the clustering itself; 'test' reuses its ids
    results += empty_macro_nodes(fitted, {"user": cfg.kmeans.k_user, "item": cfg.kmeans.k_item})
    centroids = read(CENTROIDS)
    results += check_table(
        centroids,
        TableSpec(
            CENTROIDS.name,
            n,
            unique=[["side", "macro_id"]],
            finite=["centroid", "weight"],
            violations={
                **side_bad,
                "macro_id_out_of_range": macro_out_of_range,
                "empty_cluster": F.col("size") < 1,
                "centroid_length": F.size("centroid") != cfg.sketch.dim,
            },
        ),
    )
    return results


def _snapshot_and_side_bad() -> dict[str, Column]:
    """The ``unknown_snapshot`` and ``unknown_side`` violations, in that order (per-snapshot node tables)."""
    return {
        "unknown_snapshot": _not_in("snapshot", list(SNAPSHOTS)),
        "unknown_side": _not_in("side", list(SIDES)),
    }


def _macro_edges_spec(cfg: MgoeConfig) -> TableSpec:
    """macro_edges: one row per (snapshot, side, node, hop), 1 <= hop <= H, finite weights of length K of the
    side the hop reaches: hop h of a user reaches item macros when h is odd, user macros when even (SPEC
    4.5); items mirror it."""
    hops = cfg.edges.hops
    other = F.when(F.col("side") == "user", F.lit("item")).otherwise(F.lit("user"))
    target = F.when(F.col("hop") % 2 == 1, other).otherwise(F.col("side"))
    return TableSpec(
        MACRO_EDGES.name,
        cfg.quality.min_rows,
        unique=[["snapshot", "side", "node_id", "hop"]],
        finite=["weights"],
        violations={
            **_snapshot_and_side_bad(),
            "hop_out_of_range": (F.col("hop") < 1) | (F.col("hop") > hops),
            "weights_length": F.size("weights") != _k_of(target, cfg),
        },
    )


def _recent_neighbors_spec(cfg: MgoeConfig) -> TableSpec:
    """recent_neighbors: one row per (snapshot, side, node, task), a known task, at most L neighbors."""
    return TableSpec(
        RECENT_NEIGHBORS.name,
        cfg.quality.min_rows,
        unique=[["snapshot", "side", "node_id", "task"]],
        violations={
            **_snapshot_and_side_bad(),
            "unknown_task": _not_in("task", cfg.tasks.order),
            "too_many_neighbors": F.size("neighbors") > cfg.neighbors.length,
        },
    )


def _task_lookup_spec(cfg: MgoeConfig) -> TableSpec:
    """task_lookup: one row per (snapshot, user, task, item macro), 1 <= macro_id <= K_I, value in (0, 1]."""
    return TableSpec(
        TASK_LOOKUP.name,
        cfg.quality.min_rows,
        unique=[["snapshot", "user_id", "task", "macro_id"]],
        finite=["value"],
        violations={
            "unknown_snapshot": _not_in("snapshot", list(SNAPSHOTS)),
            "unknown_task": _not_in("task", cfg.tasks.order),
            "macro_id_out_of_range": (F.col("macro_id") < 1) | (F.col("macro_id") > cfg.kmeans.k_item),
            # NaN sorts above every number in Spark SQL; finite_value reports it, not this check.
            "value_outside_0_1": (F.col("value") <= 0) | ((F.col("value") > 1 + 1e-6) & ~F.isnan("value")),
        },
    )


def _events_space(cfg: MgoeConfig) -> bool:
    return cfg.samples.resolve(cfg.tasks.exposure) == "events"


def _samples_spec(cfg: MgoeConfig, windows: Windows | None) -> TableSpec:
    """samples: one row per (user, item, split) -- per (user, item, split, ts, labels) in the ``events``
    space, whose rows are events with one-hot labels --, T finite labels, each row in the window of its split
    (when the windows row was readable)."""
    events = _events_space(cfg)
    one_hot = {"labels_not_one_hot": F.aggregate("labels", F.lit(0.0), lambda acc, x: acc + x) != 1.0}
    return TableSpec(
        SAMPLES.name,
        cfg.quality.min_rows,
        unique=[["user_id", "item_id", "split", "ts", "labels"] if events else ["user_id", "item_id", "split"]],
        finite=["labels"],
        violations={
            "unknown_split": _not_in("split", list(SPLITS)),
            "labels_length": F.size("labels") != len(cfg.tasks.order),
            **(one_hot if events else {}),
            **({"outside_its_window": outside_window(windows)} if windows else {}),
        },
    )


def _training_examples_spec(cfg: MgoeConfig) -> TableSpec:
    """training_examples: one row per (user, item, split) (not in the ``events`` space: a pair's events in a
    window are rows with the same features), finite floats, per-task arrays of length T, H hops of edges,
    macro ids in 0..K (0: a node unseen in the feature window)."""
    n_tasks, hops = len(cfg.tasks.order), cfg.edges.hops
    return TableSpec(
        TRAINING_EXAMPLES.name,
        cfg.quality.min_rows,
        unique=[] if _events_space(cfg) else [["user_id", "item_id", "split"]],
        finite=["labels", "lookup", "user_edges", "item_edges"],
        violations={
            "unknown_split": _not_in("split", list(SPLITS)),
            "labels_length": F.size("labels") != n_tasks,
            "lookup_length": F.size("lookup") != n_tasks,
            "recent_length": (F.size("user_recent") != n_tasks) | (F.size("item_recent") != n_tasks),
            "edges_hops": (F.size("user_edges") != hops) | (F.size("item_edges") != hops),
            "macro_out_of_range": (F.col("user_macro") < 0)
            | (F.col("user_macro") > cfg.kmeans.k_user)
            | (F.col("item_macro") < 0)
            | (F.col("item_macro") > cfg.kmeans.k_item),
        },
    )


def _split_rows_checks(examples: DataFrame, min_rows: int) -> list[CheckResult]:
    """rows_train / rows_test: the trainer needs rows to fit on and rows to evaluate on (at least
    max(min_rows, 1) each). One grouped count; at most 3 rows to the driver."""
    per_split = {r["split"]: int(r["count"]) for r in examples.groupBy("split").count().collect()}
    results = []
    for split in ("train", "test"):
        rows = per_split.get(split, 0)
        results.append(CheckResult(TRAINING_EXAMPLES.name, f"rows_{split}", rows >= max(min_rows, 1), rows))
    return results


def gate_features(read: Reader, cfg: MgoeConfig, run_date: str = "") -> list[CheckResult]:
    """windows, macro_edges, recent_neighbors, task_lookup, samples, training_examples."""
    results, windows = windows_checks(read, cfg, run_date)
    results += check_table(read(MACRO_EDGES), _macro_edges_spec(cfg))
    results += check_table(read(RECENT_NEIGHBORS), _recent_neighbors_spec(cfg))
    results += check_table(read(TASK_LOOKUP), _task_lookup_spec(cfg))
    results += check_table(read(SAMPLES), _samples_spec(cfg, windows))
    examples = read(TRAINING_EXAMPLES)
    results += check_table(examples, _training_examples_spec(cfg))
    results += _split_rows_checks(examples, cfg.quality.min_rows)
    return results


GATES: dict[str, Callable[[Reader, MgoeConfig, str], list[CheckResult]]] = {
    "ingest": gate_ingest,
    "nodes": gate_nodes,
    "features": gate_features,
}


# ---- running and recording ---------------------------------------------------------------------------------


def run_gate(spark: SparkSession, gate: str, cfg: MgoeConfig, run_date: str) -> list[CheckResult]:
    """Run one gate on the ``run_date`` partitions under ``cfg.output.root``."""
    if gate not in GATES:
        raise UserError(f"unknown quality gate {gate!r}; choose one of {', '.join(sorted(GATES))}")
    store = TableStore.of(spark, cfg)
    return GATES[gate](lambda schema: store.read(schema, run_date).drop("run_date"), cfg, run_date)


def record(store: TableStore, gate: str, results: list[CheckResult], run_date: str) -> str:
    """Replace this gate's rows in the run date's ``quality_checks`` partition (other gates' rows stay),
    in the store's format (Parquet or Delta).

    The partition holds a few dozen rows; it is read to the driver, merged and rewritten atomically.
    """
    rows = [(gate, r.table, r.check, r.passed, float(r.value), r.detail or None) for r in results]
    if run_date in store.run_dates(QUALITY_CHECKS):
        old = store.read(QUALITY_CHECKS, run_date).where(F.col("gate") != gate)
        rows = [tuple(r[c] for c in QUALITY_CHECKS.column_names) for r in old.collect()] + rows
    df = store.spark.createDataFrame(rows, QUALITY_CHECKS.spark(with_partition=False))
    return store.write(df.coalesce(1), QUALITY_CHECKS, run_date)
