"""Chaining of MTMG stage 2: interactions (+ the stage-1 functions) -> every feature table and the examples.

:func:`build_features` is the one entry point the pipeline job calls. Stage 1 (scores, sketch, weights,
k-means) plugs in through three callables, so this module does not depend on how they are implemented:

- ``pair_scores_fn(events) -> PAIR_SCORES``: the merging matrix S of some feature-window events;
- ``fit_fn(pair_scores) -> ASSIGNMENTS``: fit the clustering at the TRAINING cutoff and assign its nodes;
- ``assign_fn(pair_scores, nodes) -> ASSIGNMENTS`` (optional): assign ``nodes`` (side, node_id) of a later
  snapshot with the fitted centroids (nearest centroid of their vectors computed from ``pair_scores``).

The test snapshot (cutoff c2) reuses the training clustering: nodes already assigned keep their macro id
and only new nodes go through ``assign_fn`` (``assign_policy='all'`` re-assigns every node with it);
without ``assign_fn`` new nodes get macro id 0 (unknown). Everything returned is a lazy DataFrame; the only
Spark actions here are the two-number quantile pass of :func:`compute_windows` and, with negative
sampling and no ``n_items``, one max aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.edges import macro_edges
from mgoe_spark.examples import build_examples, snapshot_assignments, snapshot_nodes
from mgoe_spark.lookup import task_lookup
from mgoe_spark.neighbors import recent_neighbors
from mgoe_spark.samples import build_samples
from mgoe_spark.windows import TEST, TRAIN, Windows, compute_windows, feature_events

PairScoresFn = Callable[[DataFrame], DataFrame]
FitFn = Callable[[DataFrame], DataFrame]
SnapshotAssignFn = Callable[[DataFrame, DataFrame], DataFrame]


@dataclass
class Snapshot:
    """The features of one cutoff (lazy DataFrames, without the ``snapshot`` column)."""

    name: str
    cutoff: int
    events: DataFrame
    pair_scores: DataFrame
    assignments: DataFrame
    edges: DataFrame
    neighbors: DataFrame
    lookup: DataFrame


@dataclass
class Features:
    """Everything stage 2 produces; :meth:`tables` gives the contract tables to write."""

    windows: Windows
    snapshots: dict[str, Snapshot]
    samples: DataFrame
    examples: DataFrame
    tagged: dict[str, DataFrame] = field(default_factory=dict)
    """``assignments``, ``macro_edges``, ``recent_neighbors``, ``task_lookup`` of both snapshots, with a
    ``snapshot`` column."""

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


def build_snapshot(
    name: str, cutoff: int, interactions: DataFrame, pair_scores: DataFrame, assignments: DataFrame, cfg: MgoeConfig
) -> Snapshot:
    """Edges, recent neighbors and lookup at ``cutoff`` (``interactions`` is filtered to ts <= cutoff
    here, so a caller cannot leak sample-window events into them; ``pair_scores`` must be computed from
    the same filtered events)."""
    events = feature_events(interactions, cutoff)
    tasks = list(cfg.tasks.order)
    return Snapshot(
        name=name,
        cutoff=cutoff,
        events=events,
        pair_scores=pair_scores,
        assignments=assignments,
        edges=macro_edges(
            pair_scores, assignments, cfg.kmeans.k_user, cfg.kmeans.k_item, cfg.edges.hops, cfg.edges.edge_matrix
        ),
        neighbors=recent_neighbors(events, tasks, cfg.neighbors.length),
        lookup=task_lookup(events, assignments, tasks),
    )


def _tag(frames: list[tuple[str, DataFrame]]) -> DataFrame:
    out = None
    for name, df in frames:
        tagged = df.select(F.lit(name).alias("snapshot"), *df.columns)
        out = tagged if out is None else out.unionByName(tagged)
    return out


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
    """Run stage 2 on INTERACTIONS: windows, both feature snapshots, samples and training examples.

    ``windows``: precomputed cutoffs (default: :func:`compute_windows` from ``cfg.windows``).
    Cost: the sum of the stages' (see their modules), i.e. O(events + hops * nnz * K + rows) per snapshot.
    """
    windows = windows or compute_windows(interactions, cfg.windows)
    tasks = list(cfg.tasks.order)
    train_events = feature_events(interactions, windows.train_cutoff)
    test_events = feature_events(interactions, windows.test_cutoff)
    s_train = pair_scores_fn(train_events)
    fitted = fit_fn(s_train)
    s_test = pair_scores_fn(test_events)
    nodes_test = snapshot_nodes(s_test)
    bound = None if assign_fn is None else (lambda nodes: assign_fn(s_test, nodes))
    test_assign = snapshot_assignments(fitted, nodes_test, bound, assign_policy)
    snaps = {
        TRAIN: build_snapshot(TRAIN, windows.train_cutoff, interactions, s_train, fitted, cfg),
        TEST: build_snapshot(TEST, windows.test_cutoff, interactions, s_test, test_assign, cfg),
    }
    tagged = {
        "assignments": _tag([(n, s.assignments) for n, s in snaps.items()]),
        "macro_edges": _tag([(n, s.edges) for n, s in snaps.items()]),
        "recent_neighbors": _tag([(n, s.neighbors) for n, s in snaps.items()]),
        "task_lookup": _tag([(n, s.lookup) for n, s in snaps.items()]),
    }
    samples = build_samples(interactions, windows, cfg, n_items=n_items)
    examples = build_examples(
        samples,
        tagged["assignments"],
        tagged["macro_edges"],
        tagged["recent_neighbors"],
        tagged["task_lookup"],
        tasks,
        cfg.kmeans.k_user,
        cfg.kmeans.k_item,
        cfg.edges.hops,
        cfg.neighbors.length,
    )
    return Features(windows=windows, snapshots=snaps, samples=samples, examples=examples, tagged=tagged)
