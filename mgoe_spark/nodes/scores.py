"""Merging preference scores (SPEC 4.1, Eq 6-7): the sparse matrix S.

For each (user, item) pair with at least one event of a configured task inside the feature window:

- ``mask``: bit ``k`` set when the pair has an event of task ``tasks.order[k]`` (the set C_ui),
- ``rho = sum_{t_k in C_ui} 2^k`` (the POGCN binary rank code; equals ``mask``),
- ``score = ((rho + 1)^beta - 1) / beta`` for ``beta != 0`` and ``ln(rho + 1)`` for ``beta = 0`` (Box-Cox).

Since ``rho >= 1`` for every emitted pair, ``score > 0`` for every real ``beta`` (``(rho+1)^beta - 1`` has the
sign of ``beta``), so the output holds exactly the non-zeros of S.

Complexity: one filter + one shuffle aggregation over the events, O(E) work and O(nnz) output rows, where
E is the number of events in the window and nnz the number of distinct (user, item) pairs among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.tables import INTERACTIONS, PAIR_SCORES

MAX_TASKS = 30
"""``mask`` is an int32; bit 31 would make it negative."""


def task_bit(tasks_order: Sequence[str], task: Column | str = "task") -> Column:
    """``2^k`` for ``task == tasks_order[k]``, null for any other task (e.g. the exposure pseudo-task)."""
    col = F.col(task) if isinstance(task, str) else task
    expr = F.when(col == F.lit(tasks_order[0]), F.lit(1))
    for k, name in enumerate(tasks_order[1:], start=1):
        expr = expr.when(col == F.lit(name), F.lit(1 << k))
    return expr


def box_cox(rho: Column, beta: float) -> Column:
    """Eq 6: ``((rho+1)^beta - 1) / beta``, or ``ln(rho+1)`` when ``beta == 0``; a double column."""
    base = rho.cast("double") + F.lit(1.0)
    if beta == 0:
        return F.log(base)
    return (F.pow(base, F.lit(float(beta))) - F.lit(1.0)) / F.lit(float(beta))


def box_cox_scalar(rho: int | float, beta: float) -> float:
    """The same formula in plain Python (for oracles and docs)."""
    return math.log(rho + 1.0) if beta == 0 else ((rho + 1.0) ** beta - 1.0) / beta


def _check_inputs(interactions: DataFrame, tasks_order: Sequence[str], beta: float) -> None:
    missing = [c for c in ("user_id", "item_id", "task", "ts") if c not in interactions.columns]
    if missing:
        raise ValueError(
            f"pair_scores: the interactions DataFrame lacks column(s) {missing}; "
            f"expected the {INTERACTIONS.name} schema {INTERACTIONS.column_names}"
        )
    if not 1 <= len(tasks_order) <= MAX_TASKS:
        raise ValueError(f"pair_scores: need 1..{MAX_TASKS} tasks in tasks.order, got {len(tasks_order)}")
    if len(set(tasks_order)) != len(tasks_order):
        raise ValueError(f"pair_scores: tasks.order has a repeated task: {list(tasks_order)}")
    if not math.isfinite(beta):
        raise ValueError(f"pair_scores: scores.beta must be a finite number, got {beta!r}")


def pair_scores(
    interactions: DataFrame,
    tasks_order: Sequence[str],
    beta: float,
    cutoff: int | None = None,
    binary: bool = False,
) -> DataFrame:
    """The non-zeros of S (Eq 7) from the events at or before ``cutoff`` (all events when ``None``).

    Args:
        interactions: the ``interactions`` table (user_id, item_id, task, ts, ...). Events whose task is not
            in ``tasks_order`` (the exposure pseudo-task, unknown names) carry no preference and are ignored.
        tasks_order: task names by increasing importance; ``tasks_order[k]`` owns bit ``2^k`` of rho.
        beta: the Box-Cox parameter of Eq 6 (``scores.beta``; 1 gives ``score == rho``).
        cutoff: feature cutoff, epoch seconds (inclusive): only events with ``ts <= cutoff`` count.
        binary: ``score = 1`` for every pair (``scores.binary``: MacGNN's single binary graph); mask and rho
            still record the tasks.

    Returns:
        PAIR_SCORES columns ``(user_id, item_id, mask, rho, score)``, one row per pair, ``score > 0``.
        O(E) work, one shuffle; lazy.
    """
    _check_inputs(interactions, tasks_order, beta)
    events = interactions
    if cutoff is not None:
        events = events.where(F.col("ts") <= F.lit(int(cutoff)))
    bit = task_bit(tasks_order)
    pairs = (
        events.select("user_id", "item_id", bit.alias("bit"))
        .where(F.col("bit").isNotNull())
        .groupBy("user_id", "item_id")
        # bit_or over repeated events of one task is idempotent: C_ui is a set.
        .agg(F.bit_or("bit").cast("int").alias("mask"))
    )
    return pairs.select(
        F.col("user_id").cast("long").alias("user_id"),
        F.col("item_id").cast("long").alias("item_id"),
        F.col("mask"),
        F.col("mask").alias("rho"),
        (F.lit(1.0) if binary else box_cox(F.col("mask"), beta)).alias("score"),
    )


def pair_scores_from_config(interactions: DataFrame, cfg, cutoff: int | None = None) -> DataFrame:
    """:func:`pair_scores` with ``tasks.order`` and ``scores.beta`` from an :class:`MgoeConfig`."""
    return pair_scores(interactions, cfg.tasks.order, cfg.scores.beta, cutoff, cfg.scores.binary)


__all__ = ["PAIR_SCORES", "box_cox", "box_cox_scalar", "pair_scores", "pair_scores_from_config", "task_bit"]
