"""The driver side of a fit: input checks, k-means++ init, the update rules, the stop rules, and the one
update loop both engines run (:func:`run_fit`).

An engine (:mod:`mgoe_spark.nodes.kmeans.engines`) only answers three questions about the data it holds:
its input statistics, a hash-seeded sample, and the summed :data:`~mgoe_spark.nodes.kmeans.blocks.PartialSums`
of one step for given centroids. Everything else happens here, on k x r sized arrays:

- O(P k r) per iteration to add the P tasks' sums (fixed-point integers: exact, so the result does not
  depend on the number of tasks or the order they answer in);
- O(k r) for the update: full = Lloyd step, mini-batch = Sculley's per-centre rate ``eta_c = W_c / v_c``;
- O(m k r trials) once for greedy weighted k-means++ on the init sample of ``m <= init_samples_per_center
  * k`` nodes.

Stop rules (checked after each iteration; a re-seed always forces another iteration):

- ``full``: relative centroid shift ``||M' - M||_F / ||M||_F < tol``;
- ``minibatch``: the batch inertia per unit weight, smoothed as an exponentially weighted average (EWA,
  ``alpha = min(1, 2 * batch_fraction)``, scikit-learn's MiniBatchKMeans rule), has not dropped by more than a
  relative ``tol`` below its best value for ``patience`` iterations. (The Sculley shift shrinks like 1/t and
  never reaches ``tol``: it is no stop rule for mini-batch.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mgoe_spark.core.errors import UserError
from mgoe_spark.nodes.kmeans.blocks import PartialSums

STOP_SHIFT = "shift_below_tol"
STOP_PLATEAU = "inertia_plateau"
STOP_MAX_ITER = "max_iter"


@dataclass
class IterationStats:
    """One row of KMEANS_STATS (without ``side`` and the per-fit columns)."""

    iteration: int
    inertia: float
    smoothed_inertia: float
    shift: float
    sizes: list[int]
    imbalance: float
    reseeded: int


@dataclass
class FitResult:
    """What :func:`run_fit` returns: final centroids, per-iteration stats, why it stopped, the final pass."""

    centroids: np.ndarray
    stats: list[IterationStats]
    stop_reason: str
    final: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


class FitInputError(UserError, ValueError):
    """The nodes cannot be clustered as given (the message says why and names a node)."""

    hint = "check the input log and the feature window (windows.*), or lower kmeans.k_*"


# ---- input checks and init -----------------------------------------------------------------------------------


def validate(stats: dict[str, float], k: int, r: int | None) -> tuple[int, int]:
    """Raise one clear :class:`FitInputError` for bad input; return (number of nodes, vector length)."""
    n = int(stats["n"] or 0)
    if n == 0:
        raise FitInputError("cannot cluster an empty set of nodes")
    if stats["r"] == -2:
        raise FitInputError("node vectors have different lengths across partitions; pass r= or fix the vectors")
    length = int(stats["r"]) if r is None else r
    if stats["bad_len"]:
        raise FitInputError(
            f"{stats['bad_len']} node vector(s) are null or not of length r={length} (e.g. node {stats['bad_len_id']})"
        )
    if length < 1:
        raise FitInputError(f"node vectors must have length >= 1, got {length}")
    if stats["bad_w"]:
        raise FitInputError(
            f"{stats['bad_w']} node weight(s) are NaN, infinite, null or negative (e.g. node {stats['bad_w_id']})"
        )
    if stats["bad_x"]:
        raise FitInputError(f"{stats['bad_x']} node vector(s) contain NaN or infinity (e.g. node {stats['bad_x_id']})")
    if k > n:
        raise FitInputError(f"k={k} is larger than the number of nodes ({n}); lower k")
    if not stats["nonzero"]:
        raise FitInputError(f"all {n} node vectors are zero: nothing to cluster (check the node vectors stage)")
    if not stats["wsum"] or stats["wsum"] <= 0:
        raise FitInputError(f"the node weights sum to {stats['wsum']}; at least one weight must be positive")
    return n, length


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances (len(x), len(c)) via the GEMM expansion, clipped at 0."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_plusplus(x: np.ndarray, w: np.ndarray, k: int, seed: int, trials: int | None = None) -> np.ndarray:
    """Greedy weighted k-means++ (Arthur & Vassilvitskii; sklearn's greedy variant) on a driver-side sample.

    A candidate is drawn with probability ``w_v D(v)^2 / sum w D^2`` (the first with probability ``w_v /
    sum w``); of ``trials`` (default 2 + ln k) candidates the one lowering the weighted potential most wins.
    If the potential reaches 0 (fewer distinct points than k) the remaining centres repeat sample points;
    those clusters start empty and are re-seeded during the fit. O(k * trials * m * r).

    Args: x (m, r) float, w (m,) non-negative weights with a positive sum. Returns (k, r) float64.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    m = len(x)
    trials = trials or 2 + int(math.log(k))
    centers = np.empty((k, x.shape[1]))
    first = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))
    centers[0] = x[min(first, m - 1)]
    d2 = sq_dists(x, centers[:1])[:, 0]
    for c in range(1, k):
        pot = w * d2
        total = pot.sum()
        if total <= 0:
            picks = np.searchsorted(np.cumsum(w), rng.random(k - c) * w.sum(), side="right")
            centers[c:] = x[np.minimum(picks, m - 1)]
            break
        cand = np.minimum(np.searchsorted(np.cumsum(pot), rng.random(trials) * total, side="right"), m - 1)
        cand_d2 = np.minimum(d2[None, :], sq_dists(x[cand], x).reshape(len(cand), m))
        best = int(np.argmin((cand_d2 * w[None, :]).sum(1)))
        centers[c] = x[cand[best]]
        d2 = cand_d2[best]
    return centers


def init_from_sample(parts: list[tuple[np.ndarray, ...]], k: int, r: int, seed: int, cap: int) -> np.ndarray:
    """k-means++ on the ``cap`` sample rows with the smallest hash keys: independent of the partitioning."""
    parts = [p for p in parts if len(p[0])]
    ids = np.concatenate([p[0] for p in parts])
    x = np.concatenate([p[1] for p in parts]).reshape(len(ids), r)
    w = np.concatenate([p[2] for p in parts])
    key = np.concatenate([p[3] for p in parts])
    keep = np.lexsort((ids, key))[:cap]  # partition-independent choice ...
    keep = keep[np.argsort(ids[keep], kind="stable")]  # ... and order
    x, w = x[keep], w[keep]
    if w.sum() <= 0:  # all sampled weights zero: fall back to unweighted seeding on the sample
        w = np.ones_like(w)
    return kmeans_plusplus(x, w, k, seed)


def match_to_previous(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Permutation ``p`` so that ``new[p]`` lines up with ``old`` (Hungarian on squared centroid distance).

    ``new[p[m]]`` is the new centroid that takes macro id ``m + 1`` of the old model.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(sq_dists(np.asarray(old, np.float64), np.asarray(new, np.float64)))
    perm = np.empty(len(old), dtype=np.int64)
    perm[rows] = cols
    return perm


# ---- one step ----------------------------------------------------------------------------------------------


def combine(parts: list[PartialSums], k: int, r: int, scales: tuple[int, int]) -> dict[str, Any]:
    """Add the per-task sums and pick the k re-seed candidates. Exact and order-free: the fixed-point sums
    are integers, the block inertias are added with ``math.fsum`` and the candidates are ranked by (score,
    id), so the result does not depend on how the nodes were split into tasks."""
    total = np.zeros(k * (r + 2), dtype=np.int64)
    inertias, cand_ids, cand_score, cand_x = [], [], [], []
    for sums, block_inertia, ids, score, xs in parts:
        total += sums
        inertias.append(block_inertia)
        cand_ids.append(ids)
        cand_score.append(score)
        cand_x.append(np.asarray(xs).reshape(-1, r))
    cids = np.concatenate(cand_ids) if cand_ids else np.zeros(0, np.int64)
    cscore = np.concatenate(cand_score) if cand_score else np.zeros(0)
    cx = np.concatenate(cand_x) if cand_x else np.zeros((0, r), np.float32)
    order = np.lexsort((cids, -cscore))[:k]
    return {
        "coord": np.ldexp(total[: k * r].astype(np.float64), -scales[0]).reshape(k, r),
        "wsum": np.ldexp(total[k * r : k * r + k].astype(np.float64), -scales[1]),
        "cnt": total[k * r + k :].astype(np.float64),
        "inertia": math.fsum(np.concatenate(inertias).tolist()) if inertias else 0.0,
        "cand_score": cscore[order],
        "cand_x": cx[order].astype(np.float64),
    }


def update(centroids: np.ndarray, s: dict[str, Any], running: np.ndarray, full: bool) -> tuple[np.ndarray, float, int]:
    """One centroid update from combined sums ``s``: Lloyd (full) or weighted Sculley (mini-batch).

    ``running`` (Sculley's v_c) is updated in place. Returns (new centroids, relative shift, re-seeded).
    """
    new = centroids.copy()
    has = s["wsum"] > 0
    if full:
        new[has] = s["coord"][has] / s["wsum"][has, None]
    else:
        # mu_c <- mu_c + (S_c - W_c mu_c) / v_c with v_c += W_c: eta_c = W_c / v_c (weighted Sculley)
        running[has] += s["wsum"][has]
        new[has] += (s["coord"][has] - s["wsum"][has, None] * centroids[has]) / running[has, None]
    # full: a cluster with no weight is empty. Mini-batch: a cluster missing from one batch may just
    # be small, so only clusters that never drew any weight (running count 0) are re-seeded.
    empty = np.flatnonzero(~has if full else ~has & (running == 0))
    usable = s["cand_x"][s["cand_score"] > 0]
    reseed = empty[: len(usable)]
    if len(reseed):
        new[reseed] = usable[: len(reseed)]
        running[reseed] = 0.0
    shift = float(np.linalg.norm(new - centroids) / max(np.linalg.norm(centroids), 1e-12))
    return new, shift, len(reseed)


class Plateau:
    """Mini-batch stop: the EWA of the batch inertia per unit weight has not improved for ``patience`` steps."""

    def __init__(self, alpha: float, tol: float, patience: int) -> None:
        self.alpha, self.tol, self.patience = alpha, tol, patience
        self.ewa: float | None = None
        self.best = math.inf
        self.stale = 0

    def step(self, batch_inertia: float, batch_weight: float) -> bool:
        value = batch_inertia / batch_weight if batch_weight > 0 else 0.0
        self.ewa = value if self.ewa is None else (1 - self.alpha) * self.ewa + self.alpha * value
        if self.ewa < self.best * (1 - self.tol):
            self.best, self.stale = self.ewa, 0
        else:
            self.stale += 1
        return self.stale >= self.patience


# ---- the loop ----------------------------------------------------------------------------------------------


Step = Callable[[np.ndarray, int, float], dict[str, Any]]
"""``step(centroids float32 (k, r), iteration, fraction) -> combine(...)`` over all partitions."""


def run_fit(
    step: Step,
    centroids: np.ndarray,
    *,
    mode: str,
    max_iter: int,
    tol: float,
    batch_fraction: float,
    patience: int,
) -> FitResult:
    """The update loop of both engines: iterate ``step`` + :func:`update` until a stop rule fires, then one
    full pass (all nodes) with the final centroids for sizes, weights and inertia."""
    full = mode == "full"
    fraction = 1.0 if full else batch_fraction
    k = len(centroids)
    centroids = np.asarray(centroids, dtype=np.float64).copy()
    running = np.zeros(k)  # Sculley's per-centre weighted counts v_c
    plateau = Plateau(min(1.0, 2.0 * fraction), tol, patience)
    stats: list[IterationStats] = []
    reason = STOP_MAX_ITER
    for it in range(1, max_iter + 1):
        s = step(centroids.astype(np.float32), it, fraction)
        flat = plateau.step(s["inertia"], float(s["wsum"].sum()))
        centroids, shift, reseeded = update(centroids, s, running, full)
        sizes = s["cnt"].astype(np.int64)
        mean = sizes.mean()
        stats.append(
            IterationStats(
                iteration=it,
                inertia=s["inertia"],
                smoothed_inertia=float(plateau.ewa),
                shift=shift,
                sizes=sizes.tolist(),
                imbalance=float(sizes.max() / mean) if mean > 0 else 0.0,
                reseeded=reseeded,
            )
        )
        if reseeded:
            continue
        if full and shift < tol:
            reason = STOP_SHIFT
            break
        if not full and flat:
            reason = STOP_PLATEAU
            break
    final = step(centroids.astype(np.float32), 0, 1.0)
    return FitResult(centroids.astype(np.float32), stats, reason, final)
