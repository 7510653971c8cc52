"""The table contracts (SPEC 8). Every table also has the ``run_date`` partition column.

Conventions: users and items are dense ids ``1..N`` (``0`` = padding / unknown), macro ids are ``1..K``
(``0`` = none, e.g. a cold-start node); ``side`` is ``'user'`` or ``'item'``; task names are the
configured ``tasks.order`` names; per-task lists follow ``tasks.order``.
"""

from __future__ import annotations

from schemas.core import Column, TableSchema

# ---- ingestion -------------------------------------------------------------------------------------------

INTERACTIONS = TableSchema(
    "interactions",
    [
        Column("user_id", "int64", False, "dense user id (vocab_users)"),
        Column("item_id", "int64", False, "dense item id (vocab_items)"),
        Column("task", "string", False, "task name from tasks.order (or tasks.exposure)"),
        Column("ts", "int64", False, "event time, epoch seconds; file-order ordinal for logs without time"),
        Column("category", "string", True, "raw item category, when the log has one"),
    ],
    doc="Canonical multi-behavior events, one row per (user, item, task, ts); exact duplicates removed.",
)

REJECTS = TableSchema(
    "rejects",
    [
        Column("source", "string", False, "input file the row came from"),
        Column("raw", "string", True, "the raw line (CSV) or the row as JSON (Parquet)"),
        Column("reason", "string", False, "why the row was rejected, e.g. unknown behavior 'xyz'"),
        Column(
            "code",
            "string",
            False,
            "reason class: empty_line, field_count, empty_field, bad_id, bad_timestamp, unknown_behavior, bad_flag",
        ),
    ],
    doc="Malformed input rows, kept with the reason: nothing is dropped silently.",
)


def _vocabulary(name: str, nodes: str) -> TableSchema:
    """The vocabulary of one side (``nodes``: "users" / "items"): the two tables differ only in name."""
    return TableSchema(
        name,
        [
            Column("raw_id", "string", False, "id as it appears in the log"),
            Column("id", "int64", False, "dense id, 1..N (0 is reserved for padding / unknown)"),
            Column("first_run_date", "string", False, "run date (YYYY-MM-DD) of the ingest that appended the id"),
        ],
        doc=f"{nodes.capitalize()[:-1]} vocabulary, append-only across run dates: an id never changes once given, "
        f"new {nodes} get the next ids. The partition of date D holds the whole vocabulary as of D's ingest (ids "
        "first given by later dates included when D was ingested after them, as in a backfill).",
    )


VOCAB_USERS = _vocabulary("vocab_users", "users")
VOCAB_ITEMS = _vocabulary("vocab_items", "items")

GROUND_TRUTH_USERS = TableSchema(
    "ground_truth_users",
    [Column("raw_id", "string", False, "raw user id"), Column("group", "int32", False, "planted group")],
    doc="Synthetic data only: the planted user group of each user.",
)

GROUND_TRUTH_ITEMS = TableSchema(
    "ground_truth_items",
    [Column("raw_id", "string", False, "raw item id"), Column("group", "int32", False, "planted group")],
    doc="Synthetic data only: the planted item group of each item.",
)

GROUND_TRUTH_PAIRS = TableSchema(
    "ground_truth_pairs",
    [
        Column("user_raw_id", "string", False, "raw user id"),
        Column("item_raw_id", "string", False, "raw item id"),
        Column(
            "probabilities",
            "list<float64>",
            False,
            "per task in tasks.order: the true probability that an event on this pair is that task (its "
            "label in the events sample space); they add up to 1",
        ),
    ],
    doc="Synthetic data only: the oracle, per (user, item) pair the generator drew (mgoe_spark.generate.oracle).",
)

RUN_METRICS = TableSchema(
    "run_metrics",
    [
        Column("stage", "string", False, "pipeline stage, e.g. ingest"),
        Column("metric", "string", False, "e.g. rows_in, rows_out, rejects, duplicates, seconds"),
        Column("value", "float64", False, "the number"),
        Column("detail", "string", True, "free text, e.g. a reject reason"),
    ],
    doc="Run summary per stage (long format).",
)

WINDOWS = TableSchema(
    "windows",
    [
        Column("train_cutoff", "int64", False, "c1, inclusive: last ts of the train feature window"),
        Column("test_cutoff", "int64", False, "c2, inclusive: last ts of the test feature window"),
        Column("time_unit", "string", False, "'epoch_seconds', or 'user_event_order' for logs without time"),
        Column("mode", "string", False, "how the cutoffs were chosen: windows.mode, 'quantile' or 'dates'"),
        Column("settings", "string", False, "the windows.* settings that chose them, as JSON (compared by readers)"),
        Column("events", "int64", False, "events in the interactions table"),
        Column("feature_share", "float64", False, "share of events with ts <= c1"),
        Column("train_share", "float64", False, "share of events with c1 < ts <= c2 (train + valid samples)"),
        Column("test_share", "float64", False, "share of events with ts > c2 (test samples)"),
        Column("valid_cutoff", "int64", True, "cv of windows.validation=window (valid samples in (cv, c2]), else null"),
        Column("valid_share", "float64", True, "share of events with cv < ts <= c2 (null without a valid window)"),
    ],
    doc="The run date's time windows, chosen once by `nodes` and read by `features` and the quality gates.",
)

# ---- MTMG stage 1: scores, node vectors, weights, k-means ------------------------------------------------

PAIR_SCORES = TableSchema(
    "pair_scores",
    [
        Column("user_id", "int64"),
        Column("item_id", "int64"),
        Column("mask", "int32", False, "bit k set when the pair has task tasks.order[k] in the window"),
        Column("rho", "int32", False, "rank code, Eq 7 (equals mask)"),
        Column("score", "float64", False, "Box-Cox merging preference score s_ui, Eq 6"),
    ],
    doc="The sparse merging interaction matrix S: one row per pair with s > 0.",
)

NODE_VECTORS = TableSchema(
    "node_vectors",
    [
        Column("side", "string"),
        Column("node_id", "int64"),
        Column("vector", "list<float32>", False, "sketched row of S S^T (users) or S^T S (items), length r"),
    ],
    doc="Node vectors clustered by k-means (SPEC 4.2).",
)

NODE_WEIGHTS = TableSchema(
    "node_weights",
    [
        Column("side", "string"),
        Column("node_id", "int64"),
        Column("strength", "float64", False, "A_v of Eq 8 on the neighbor-capped matrix; 0 when weights are off"),
        Column("weight", "float64", False, "w_v of Eq 8"),
    ],
    doc="Preference-based node weights (SPEC 4.3).",
)

ASSIGNMENTS = TableSchema(
    "assignments",
    [
        Column("snapshot", "string", False, "'train' (fitted at cutoff c1) or 'test' (same centroids, cutoff c2)"),
        Column("side", "string"),
        Column("node_id", "int64"),
        Column("macro_id", "int32", False, "1..K"),
        Column("distance", "float32", False, "squared L2 distance to the centroid"),
    ],
    doc="Macro node of every user and item.",
)

CENTROIDS = TableSchema(
    "centroids",
    [
        Column("side", "string"),
        Column("macro_id", "int32", False, "1..K"),
        Column("centroid", "list<float32>", False, "length r"),
        Column("weight", "float64", False, "sum of node weights in the cluster"),
        Column("size", "int64", False, "number of nodes in the cluster"),
        Column("version", "string", False, "model version (run date + content hash)"),
        Column(
            "fingerprint",
            "string",
            False,
            "vector space the centroids live in (mgoe_spark.nodes.kmeans.fingerprint); warm starts need it equal",
        ),
    ],
    doc="Fitted k-means centroids: a versioned artifact, reused for later snapshots and warm starts.",
)

KMEANS_STATS = TableSchema(
    "kmeans_stats",
    [
        Column("side", "string"),
        Column("iteration", "int32"),
        Column("inertia", "float64", False, "weighted inertia of the batch seen this iteration"),
        Column("smoothed_inertia", "float64", False, "EWA of the batch inertia per unit weight (mini-batch stop)"),
        Column("shift", "float64", False, "relative centroid shift"),
        Column("sizes", "list<int64>", False, "points per cluster in the batch"),
        Column("imbalance", "float64", False, "max size / mean size"),
        Column("reseeded", "int32", False, "empty clusters re-seeded this iteration"),
        Column(
            "stop_reason",
            "string",
            True,
            "last iteration only: shift_below_tol (full), inertia_plateau (mini-batch) or max_iter",
        ),
        Column("engine", "string", False, "jobs (one Spark job per iteration, the default) or resident (opt-in)"),
        Column("fallback_reason", "string", True, "why the resident engine asked for did not run, when it did not"),
    ],
    doc="Per-iteration k-means statistics; the number of rows per side is the number of iterations run.",
)

# ---- MTMG stage 2: edges, neighbors, lookup, samples, examples ------------------------------------------

SNAPSHOT_DOC = "feature snapshot: 'train' (cutoff c1, serves train/valid rows) or 'test' (cutoff c2)"

MACRO_EDGES = TableSchema(
    "macro_edges",
    [
        Column("snapshot", "string", False, SNAPSHOT_DOC),
        Column("side", "string"),
        Column("node_id", "int64"),
        Column("hop", "int32", False, "1..hops"),
        Column(
            "weights",
            "list<float32>",
            False,
            "edge weights to the macro nodes of that hop: K_I long for user odd hops / item even hops, else K_U",
        ),
    ],
    doc="k-hop macro edges (SPEC 4.5): E1_U, E2_U, E1_I, E2_I, ...; nodes with no edge in a hop have no row.",
    sort_within_partitions=("snapshot", "side", "node_id", "hop"),
)

RECENT_NEIGHBORS = TableSchema(
    "recent_neighbors",
    [
        Column("snapshot", "string", False, SNAPSHOT_DOC),
        Column("side", "string"),
        Column("node_id", "int64"),
        Column("task", "string"),
        Column("neighbors", "list<int64>", False, "last L distinct neighbor ids in the task, newest first"),
    ],
    doc="Recent micro neighbors per node and task (SPEC 4.6).",
    sort_within_partitions=("snapshot", "side", "node_id", "task"),
)

TASK_LOOKUP = TableSchema(
    "task_lookup",
    [
        Column("snapshot", "string", False, SNAPSHOT_DOC),
        Column("user_id", "int64"),
        Column("task", "string"),
        Column("macro_id", "int32", False, "item macro node 1..K_I"),
        Column("value", "float64", False, "T^t[u, m], Eq 22"),
    ],
    doc="User macro task lookup (SPEC 4.7), sparse: only non-zero entries.",
    sort_within_partitions=("snapshot", "user_id", "task", "macro_id"),
)

SAMPLES = TableSchema(
    "samples",
    [
        Column("user_id", "int64"),
        Column("item_id", "int64"),
        Column("split", "string", False, "train | valid | test"),
        Column("ts", "int64", False, "time of the first event of the sample"),
        Column("labels", "list<float32>", False, "one 0/1 label per task, in tasks.order"),
        Column("cold_start", "bool", False, "user or item has no feature-window history"),
    ],
    doc="Samples (SPEC 5).",
)

TRAINING_EXAMPLES = TableSchema(
    "training_examples",
    [
        Column("user_id", "int64"),
        Column("item_id", "int64"),
        Column("split", "string", False, "train | valid | test"),
        Column("labels", "list<float32>", False, "T labels"),
        Column("user_macro", "int32", False, "user macro node 1..K_U, 0 if unknown"),
        Column("item_macro", "int32", False, "item macro node 1..K_I, 0 if unknown"),
        Column(
            "user_edges",
            "list<list<float32>>",
            False,
            "hops lists: hop h has K_I weights (odd h, to item macros) or K_U (even h); zeros when missing",
        ),
        Column(
            "item_edges",
            "list<list<float32>>",
            False,
            "hops lists: hop h has K_U weights (odd h, to user macros) or K_I (even h); zeros when missing",
        ),
        Column("user_recent", "list<list<int32>>", False, "T x L recent items of the user, 0-padded"),
        Column("item_recent", "list<list<int32>>", False, "T x L recent users of the item, 0-padded"),
        Column("lookup", "list<float32>", False, "T: T^t[u, c_I(i)]"),
        Column("cold_start", "bool", False, "user or item unseen in the feature window"),
    ],
    doc=(
        "Samples joined with every feature the model needs (train/valid rows use the features at cutoff c1, "
        "test rows those at c2). Streaming layout: sorted by (split, user_id, item_id) within each file, "
        "row groups of at most output.row_group_rows rows, so readers batch by row group and skip other "
        "splits by the row-group statistics of 'split'."
    ),
    row_group_rows=65_536,
    sort_within_partitions=("split", "user_id", "item_id"),
)

# ---- operations ------------------------------------------------------------------------------------------

QUALITY_CHECKS = TableSchema(
    "quality_checks",
    [
        Column("gate", "string", False, "quality gate: ingest | nodes | features"),
        Column("table_name", "string", False, "the table checked"),
        Column("check", "string", False, "e.g. row_count, unique_side_node_id, finite_weight"),
        Column("passed", "bool", False, "whether the check held"),
        Column("value", "float64", False, "the measured number (rows, duplicate keys, bad rows, ...)"),
        Column("detail", "string", True, "limit, example of a bad key, empty macro ids, ..."),
    ],
    doc="Data-quality gate results: the run date's partition holds the latest result of every gate run.",
)
