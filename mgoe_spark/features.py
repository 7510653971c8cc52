"""MTMG stage 2 as DataFrame steps: both feature snapshots in one pass each, samples, training examples.

The job (:func:`jobs.pipeline.run_features`) calls the steps one by one, top to bottom, passing
DataFrames; :func:`build_features` chains the same steps for tests and notebooks. Every per-node table
covers BOTH snapshots (train: cutoff c1, test: cutoff c2) in one computation, keyed by a ``snapshot``
column:

- :func:`snapshot_events`: the feature-window events of both snapshots, tagged (an event at or before c1
  belongs to both): one scan of the interactions;
- :func:`tag`: union per-snapshot frames (pair scores, assignments) with their ``snapshot`` tag;
- :func:`snapshot_tables`: macro edges (one join + aggregation per hop and side for both snapshots),
  recent neighbors, task lookup;
- samples (:func:`mgoe_spark.samples.build_samples`) and examples (:func:`mgoe_spark.examples.build_examples`).

The test snapshot reuses the training clustering: nodes already assigned keep their macro id and only new
nodes are assigned (:func:`mgoe_spark.examples.snapshot_assignments`); its scores and assignments are
computed once by the caller and passed in, so every consumer (edges, lookup, examples) reads the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.edges import macro_edges
from mgoe_spark.examples import ASSIGNMENT_COLS, build_examples, snapshot_assignments, snapshot_nodes
from mgoe_spark.lookup import task_lookup
from mgoe_spark.neighbors import recent_neighbors
from mgoe_spark.samples import build_samples
from mgoe_spark.windows import TEST, TRAIN, Windows, compute_windows, feature_events

PairScoresFn = Callable[[DataFrame], DataFrame]
FitFn = Callable[[DataFrame], DataFrame]
SnapshotAssignFn = Callable[[DataFrame, DataFrame], DataFrame]


@dataclass
class Features:
    """Everything stage 2 produces; :meth:`tables` gives the contract tables to write."""

    windows: Windows
    samples: DataFrame
    examples: DataFrame
    tagged: dict[str, DataFrame] = field(default_factory=dict)
    """``assignments``, ``macro_edges``, ``recent_neighbors``, ``task_lookup`` of both snapshots, with a
    ``snapshot`` column."""

    def persist(self, level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> Features:
        """Persist the snapshot tables, samples and examples, so that writing several tables (and
        summarizing them) computes each once. Returns ``self``; the frames here are replaced by the
        persisted ones."""
        self.tagged = {name: df.persist(level) for name, df in self.tagged.items()}
        self.samples = self.samples.persist(level)
        self.examples = self.examples.persist(level)
        return self

    def unpersist(self) -> None:
        for df in (*self.tagged.values(), self.samples, self.examples):
            df.unpersist()

    def tables(self) -> dict[str, DataFrame]:
        """Table name -> DataFrame for MACRO_EDGES, RECENT_NEIGHBORS, TASK_LOOKUP, SAMPLES,
        TRAINING_EXAMPLES (write each with ``jobs.storage.write_table`` and its schema)."""
        return {
            "macro_edges": self.tagged["macro_edges"],
            "recent_neighbors": self.tagged["recent_neighbors"],
            "task_lookup": self.tagged["task_lookup"],
            "samples": self.samples,
            "training_examples": self.examples,
        }


def tag(frames: Mapping[str, DataFrame]) -> DataFrame:
    """Union of per-snapshot frames with a leading ``snapshot`` column (their name). O(rows), no shuffle."""
    out = None
    for name, df in frames.items():
        tagged = df.select(F.lit(name).alias("snapshot"), *df.columns)
        out = tagged if out is None else out.unionByName(tagged)
    return out


def snapshot_events(interactions: DataFrame, windows: Windows) -> DataFrame:
    """The feature-window events of both snapshots with a ``snapshot`` column: ``train`` for ts <= c1,
    ``test`` for ts <= c2 (an event at or before c1 is in both). One scan, no shuffle; rows <= 2 x events.
    The filter is here, so no caller can leak sample-window events into a snapshot's features."""
    ts = F.col("ts")
    which = F.when(ts <= F.lit(windows.train_cutoff), F.array(F.lit(TRAIN), F.lit(TEST))).otherwise(
        F.array(F.lit(TEST))
    )
    events = interactions.where(ts <= F.lit(windows.test_cutoff))
    return events.select(F.explode(which).alias("snapshot"), *interactions.columns)


def snapshot_tables(
    cfg: MgoeConfig, events: DataFrame, scores: DataFrame, assignments: DataFrame
) -> dict[str, DataFrame]:
    """MACRO_EDGES, RECENT_NEIGHBORS and TASK_LOOKUP rows of every snapshot (``snapshot`` column) from the
    tagged :func:`snapshot_events`, pair scores and assignments. Lazy; costs in the modules' docstrings:
    O(hops * nnz * min(K, deg)) for the edges, O(events) for neighbors and lookup."""
    tasks = list(cfg.tasks.order)
    return {
        "macro_edges": macro_edges(
            scores, assignments, cfg.kmeans.k_user, cfg.kmeans.k_item, cfg.edges.hops, cfg.edges.edge_matrix
        ),
        "recent_neighbors": recent_neighbors(events, tasks, cfg.neighbors.length),
        "task_lookup": task_lookup(events, assignments, tasks),
    }


def examples_of(cfg: MgoeConfig, samples: DataFrame, tables: Mapping[str, DataFrame]) -> DataFrame:
    """TRAINING_EXAMPLES from SAMPLES and the tagged ``assignments`` / snapshot tables (lazy)."""
    return build_examples(
        samples,
        tables["assignments"],
        tables["macro_edges"],
        tables["recent_neighbors"],
        tables["task_lookup"],
        list(cfg.tasks.order),
        cfg.kmeans.k_user,
        cfg.kmeans.k_item,
        cfg.edges.hops,
        cfg.neighbors.length,
    )


def build_features(
    cfg: MgoeConfig,
    interactions: DataFrame,
    pair_scores_fn: PairScoresFn,
    fit_fn: FitFn,
    assign_fn: SnapshotAssignFn | None = None,
    *,
    windows: Windows | None = None,
    assign_policy: Literal["new", "all"] = "new",
    n_items: int | None = None,
) -> Features:
    """Run stage 2 on INTERACTIONS with stand-ins for stage 1 (tests, notebooks): each function is called
    once, and every later step reads its result.

    ``pair_scores_fn(events) -> PAIR_SCORES``; ``fit_fn(pair_scores) -> ASSIGNMENTS`` (fit at the
    training cutoff); ``assign_fn(pair_scores, nodes) -> ASSIGNMENTS`` (optional) assigns ``nodes``
    (side, node_id) of the test snapshot with the fitted centroids. ``windows``: precomputed cutoffs
    (default: :func:`compute_windows` from ``cfg.windows``).
    """
    windows = windows or compute_windows(interactions, cfg.windows)
    s_train = pair_scores_fn(feature_events(interactions, windows.train_cutoff))
    fitted = fit_fn(s_train)
    s_test = pair_scores_fn(feature_events(interactions, windows.test_cutoff))
    bound = None if assign_fn is None else (lambda nodes: assign_fn(s_test, nodes))
    test_assign = snapshot_assignments(fitted, snapshot_nodes(s_test), bound, assign_policy)
    assignments = tag({TRAIN: fitted.select(*ASSIGNMENT_COLS), TEST: test_assign})
    scores = tag({TRAIN: s_train, TEST: s_test})
    tagged = {
        "assignments": assignments,
        **snapshot_tables(cfg, snapshot_events(interactions, windows), scores, assignments),
    }
    samples = build_samples(interactions, windows, cfg, n_items=n_items)
    return Features(windows=windows, samples=samples, examples=examples_of(cfg, samples, tagged), tagged=tagged)
