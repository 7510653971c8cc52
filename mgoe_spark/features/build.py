"""Stage 2, ``features``, as one pure wiring of DataFrame steps: both feature snapshots, samples, examples.

:func:`build_features` is THE wiring of the stage: :func:`mgoe_spark.features.run.run_features` calls it on
the tables stage 1 wrote and then persists and writes what it returns, step by step; the tests call it on
stand-ins for stage 1. It does no I/O and runs no Spark job: everything it returns is lazy. Every per-node
table covers EVERY snapshot (train: cutoff c1, valid: cutoff cv with ``windows.validation=window``, test:
cutoff c2) in one computation, keyed by a ``snapshot`` column. Its steps, in data-flow order:

- each later snapshot's pair scores (``pair_scores`` of the events up to its cutoff) and its assignments
  (:func:`~mgoe_spark.features.examples.snapshot_assignments`: nodes fitted at c1 keep their macro id, new
  nodes go through ``assign_new``);
- :func:`snapshot_events`: the feature-window events of every snapshot, tagged (an event at or before c1
  belongs to all): one scan of the interactions;
- :func:`tag`: union per-snapshot frames (pair scores, assignments) with their ``snapshot`` tag;
- :func:`snapshot_tables`: macro edges (one join + aggregation per hop and side for every snapshot),
  recent neighbors, task lookup;
- samples (:func:`~mgoe_spark.features.samples.build_samples`) and training examples
  (:func:`~mgoe_spark.features.examples.build_examples`).

Each intermediate is one DataFrame that every later step reads, so persisting it (as ``run_features``
does before the first action) computes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.names import TEST, TRAIN
from mgoe_spark.features.edges import macro_edges
from mgoe_spark.features.examples import ASSIGNMENT_COLS, build_examples, snapshot_assignments, snapshot_nodes
from mgoe_spark.features.lookup import task_lookup
from mgoe_spark.features.neighbors import recent_neighbors
from mgoe_spark.features.samples import build_samples
from mgoe_spark.nodes.scores import pair_scores_from_config
from mgoe_spark.windows.cutoffs import Windows, feature_events

PairScoresFn = Callable[[DataFrame], DataFrame]
"""Events -> PAIR_SCORES (production: :func:`~mgoe_spark.nodes.scores.pair_scores_from_config`)."""
AssignNewFn = Callable[[DataFrame, DataFrame], DataFrame]
"""(a later snapshot's pair scores, (side, node_id) rows) -> ASSIGNMENT_COLS rows for those nodes."""


@dataclass(frozen=True)
class FittedNodes:
    """What stage 2 takes from stage 1: the train snapshot's pair scores (PAIR_SCORES at c1), its
    assignments (:data:`~mgoe_spark.features.examples.ASSIGNMENT_COLS`), and how a node first seen in the
    test snapshot gets a macro id (``None``: macro 0, i.e. cold)."""

    train_scores: DataFrame
    fitted: DataFrame
    assign_new: AssignNewFn | None = None


@dataclass
class Features:
    """Everything stage 2 produces (all lazy); :meth:`tables` gives the contract tables to write."""

    windows: Windows
    later_scores: dict[str, DataFrame]
    """PAIR_SCORES of each snapshot after the train one (``valid`` when it has its own, ``test``)."""
    later_assignments: dict[str, DataFrame]
    """ASSIGNMENT_COLS of each snapshot after the train one."""
    tagged: dict[str, DataFrame]
    """``assignments``, ``macro_edges``, ``recent_neighbors``, ``task_lookup`` of every snapshot, with a
    ``snapshot`` column."""
    samples: DataFrame
    examples: DataFrame

    def _frames(self) -> list[DataFrame]:
        return [*self.later_scores.values(), *self.later_assignments.values(), *self.tagged.values()] + [
            self.samples,
            self.examples,
        ]

    def persist(self, level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> Features:
        """Persist the snapshot tables, samples and examples, so that writing several tables (and
        summarizing them) computes each once. Returns ``self``."""
        for df in self._frames():
            df.persist(level)
        return self

    def unpersist(self) -> None:
        for df in self._frames():
            df.unpersist()

    def tables(self) -> dict[str, DataFrame]:
        """Table name -> DataFrame for MACRO_EDGES, RECENT_NEIGHBORS, TASK_LOOKUP, SAMPLES,
        TRAINING_EXAMPLES and ASSIGNMENTS, in the order ``run_features`` writes them."""
        return {
            "macro_edges": self.tagged["macro_edges"],
            "recent_neighbors": self.tagged["recent_neighbors"],
            "task_lookup": self.tagged["task_lookup"],
            "samples": self.samples,
            "training_examples": self.examples,
            "assignments": self.tagged["assignments"],
        }


def tag(frames: Mapping[str, DataFrame]) -> DataFrame:
    """Union of per-snapshot frames with a leading ``snapshot`` column (their name). O(rows), no shuffle."""
    out = None
    for name, df in frames.items():
        tagged = df.select(F.lit(name).alias("snapshot"), *df.columns)
        out = tagged if out is None else out.unionByName(tagged)
    return out


def snapshot_events(interactions: DataFrame, windows: Windows) -> DataFrame:
    """The feature-window events of every snapshot with a ``snapshot`` column: ``train`` for ts <= c1,
    ``valid`` for ts <= cv (with a valid window), ``test`` for ts <= c2 (an event belongs to every snapshot
    whose cutoff it precedes). One scan, no shuffle; rows <= snapshots x events. The filter is here, so no
    caller can leak sample-window events into a snapshot's features."""
    ts = F.col("ts")
    member = [F.when(ts <= F.lit(windows.cutoff(s)), F.lit(s)) for s in windows.snapshots]
    which = F.filter(F.array(*member), lambda s: s.isNotNull())
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


def examples_of(
    cfg: MgoeConfig, samples: DataFrame, tables: Mapping[str, DataFrame], snapshots: tuple[str, ...] = (TRAIN, TEST)
) -> DataFrame:
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
        snapshots,
    )


def build_features(
    cfg: MgoeConfig,
    interactions: DataFrame,
    windows: Windows,
    nodes: FittedNodes,
    *,
    pair_scores: PairScoresFn | None = None,
    assign_policy: Literal["new", "all"] = "new",
    n_items: int | None = None,
) -> Features:
    """Stage 2 of ``interactions`` (on the cutoffs' time axis) for ``windows``, given stage 1's ``nodes``.

    ``pair_scores``: events -> PAIR_SCORES for the later snapshots (default: the config's Eq 6-7 scores, as
    stage 1 computed the train snapshot's); ``assign_policy``: ``new`` (fitted nodes keep their macro id)
    or ``all`` (every test node re-assigned). Lazy; costs in the step modules' docstrings.

    >>> f = build_features(cfg, interactions, windows, FittedNodes(train_scores, fitted, assign_new))
    >>> f.tables()["training_examples"]  # doctest: +SKIP
    """
    scores_of = pair_scores or (lambda events: pair_scores_from_config(events, cfg))
    later = windows.snapshots[1:]
    later_scores = {name: scores_of(feature_events(interactions, windows.cutoff(name))) for name in later}
    later_assignments = {name: _later_assignments(nodes, later_scores[name], assign_policy) for name in later}
    assignments = tag({TRAIN: nodes.fitted.select(*ASSIGNMENT_COLS), **later_assignments})
    scores = tag({TRAIN: nodes.train_scores, **later_scores})
    tagged = {
        "assignments": assignments,
        **snapshot_tables(cfg, snapshot_events(interactions, windows), scores, assignments),
    }
    samples = build_samples(interactions, windows, cfg, n_items=n_items)
    examples = examples_of(cfg, samples, tagged, windows.snapshots)
    return Features(windows, later_scores, later_assignments, tagged, samples, examples)


def _later_assignments(nodes: FittedNodes, scores: DataFrame, policy: Literal["new", "all"]) -> DataFrame:
    """ASSIGNMENT_COLS of a snapshot after the train one, from its pair ``scores`` and the fitted nodes."""
    assign = None if nodes.assign_new is None else (lambda new: nodes.assign_new(scores, new))
    return snapshot_assignments(nodes.fitted, snapshot_nodes(scores), assign, policy)
