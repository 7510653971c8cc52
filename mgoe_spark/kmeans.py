"""Weighted mini-batch k-means with FAISS on Spark partitions (SPEC 4.4, Eq 9).

Objective (Eq 9): minimise ``sum_v w_v ||z_v - mu_c(v)||^2``; a centroid is the weighted mean
``mu_k = sum_{v in k} w_v z_v / sum_{v in k} w_v``.

Input: a DataFrame of nodes ``(node_id int64, vector array<float> of length r, weight double)``.

How it runs (n nodes, r dims, k centroids, P partitions, T iterations):

1. **Blocks** (one pass, O(n r)): each partition's Arrow batches are packed into a few large rows
   ``(ids, x, w, u)`` of raw little-endian bytes (``block_rows`` nodes each) and cached. Iterating over
   the cache then moves a handful of big binary values per partition through Arrow instead of millions of
   ``array<float>`` rows: the JVM -> Python hand-off becomes a memcpy and numpy views the bytes with no
   per-row work. The same pass counts bad input (wrong vector length, NaN / negative weights, non-finite
   vectors), so the driver raises one clear error before any clustering.
2. **Init** (one pass + O(m k r) on the driver): a hash-seeded uniform sample of at most
   ``m = init_samples_per_center * k`` nodes (with their weights) is collected; greedy weighted k-means++ on it.
3. **Iterations** (T passes, O(n k r / threads) each, FAISS): the centroids travel in the task closure
   (k x r floats); each partition builds a ``faiss.IndexFlatL2`` on them, assigns its nodes (mini-batch: a
   seeded, hash-chosen ``batch_fraction`` of them that rotates every iteration; full: all), and returns
   ``k x (r + 2)`` sums (weighted coordinate sums, weights, counts) plus inertia and its ``k`` farthest
   nodes (re-seed candidates). The driver adds the P small arrays (O(P k r) driver memory) and updates:
   full = Lloyd step; mini-batch = Sculley's per-centre learning rate ``eta_c = W_c(batch) / v_c`` with
   ``v_c`` the running weighted count. Empty clusters are re-seeded at the heaviest-farthest nodes.
   Stops after ``max_iter`` or when the relative centroid shift ``||M' - M||_F / ||M||_F < tol``.
4. **Final pass** (one pass): sizes, weights and inertia of the final clustering over all nodes; then
   :meth:`WeightedKMeans.assign` gives the lazy ``(node_id, macro_id, distance)`` DataFrame.

Only k x r sized things ever reach the driver (plus the bounded init sample). FAISS's OpenMP threads are
capped to ``spark.task.cpus`` in every task (``faiss_threads`` overrides). Determinism: every random choice
is a hash of (seed, node id) or a seeded numpy generator on the driver, and partition results are combined
in partition order, so the same input, partitioning and seed give the same centroids and assignments.

Macro ids are ``1..k``: centroid row ``m - 1`` is macro ``m``. A refit can warm-start from a previous model
and is then matched to it (Hungarian on centroid distance) so macro ``m`` keeps its meaning (SPEC 3).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from mgoe_spark.config import KMeansSettings

FORMAT_VERSION = 1
_GOLDEN = 0.6180339887498949  # rotation of the mini-batch window: consecutive batches barely overlap

_BLOCK_SCHEMA = (
    "n long, ids binary, x binary, w binary, u binary, wsum double, nonzero long, "
    "bad_len long, bad_len_id long, bad_w long, bad_w_id long, bad_x long, bad_x_id long"
)
_STEP_SCHEMA = "sums binary, cand_ids binary, cand_score binary, cand_x binary"
_SAMPLE_SCHEMA = "ids binary, x binary, w binary, key binary"
ASSIGN_SCHEMA = "node_id long, macro_id int, distance float"


# ---------------------------------------------------------------------------------------------------------
# Hashing (numpy, partition-independent)
# ---------------------------------------------------------------------------------------------------------


def hash_uniform(ids: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A uniform float64 in [0, 1) per id from splitmix64(id, seed, salt): same id -> same number anywhere."""
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    z = ids.astype(np.uint64) ^ mix
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def minibatch_mask(u: np.ndarray, iteration: int, fraction: float) -> np.ndarray:
    """Rows in iteration ``iteration``'s mini-batch: ``frac(u + iteration * golden) < fraction``.

    Each node is in a fraction ``fraction`` of the batches and the window moves every iteration, so all
    nodes are visited every ~1/fraction iterations (a low-discrepancy sequence, not independent draws).
    """
    if fraction >= 1.0:
        return np.ones(len(u), dtype=bool)
    return np.modf(u + iteration * _GOLDEN)[0] < fraction


# ---------------------------------------------------------------------------------------------------------
# Worker-side helpers (run inside Spark's Python workers; only numpy / pyarrow / faiss)
# ---------------------------------------------------------------------------------------------------------


def _vectors_from_arrow(col: pa.Array, r: int) -> tuple[np.ndarray, np.ndarray]:
    """``list<float>`` Arrow column -> (float32 (n, r) matrix, bool mask of rows with a valid length-r list).

    Zero-copy-ish: the child values are viewed through the offsets; rows of the wrong length (or null)
    are reported in the mask and their matrix rows are zero.
    """
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    offsets = col.offsets.to_numpy()
    lengths = np.diff(offsets)
    ok = lengths == r
    if col.null_count:
        ok &= col.is_valid().to_numpy(zero_copy_only=False)
    values = col.values.to_numpy(zero_copy_only=False)
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    if ok.all():
        return values[offsets[0] : offsets[-1]].reshape(n, r), ok
    x = np.zeros((n, r), dtype=np.float32)
    rows = np.flatnonzero(ok)
    if len(rows):
        idx = offsets[rows][:, None] + np.arange(r)[None, :]
        x[rows] = values[idx]
    return x, ok


def _first_id(ids: np.ndarray, bad: np.ndarray) -> int:
    return int(ids[bad].min()) if bad.any() else -1


def _faiss_index(centroids: np.ndarray, threads: int):
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


def _nearest(index, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, squared distances float64 >= 0) of each row of ``x`` to the centroids in ``index``."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    d, i = index.search(np.ascontiguousarray(x), 1)
    return i[:, 0].astype(np.int64), np.maximum(d[:, 0].astype(np.float64), 0.0)


def _pack_block(parts: list[tuple[np.ndarray, ...]], seed: int) -> dict[str, Any]:
    ids = np.concatenate([p[0] for p in parts])
    x = np.concatenate([p[1] for p in parts])
    w = np.concatenate([p[2] for p in parts])
    ok = np.concatenate([p[3] for p in parts])
    bad_len = ~ok
    bad_w = ~np.isfinite(w) | (w < 0)
    bad_x = ok & ~np.isfinite(x).all(axis=1)
    u = hash_uniform(ids, seed, salt=1)
    return {
        "n": len(ids),
        "ids": ids.astype("<i8").tobytes(),
        "x": x.astype("<f4").tobytes(),
        "w": w.astype("<f8").tobytes(),
        "u": u.astype("<f8").tobytes(),
        "wsum": float(w[~bad_w].sum()),
        "nonzero": int((x != 0).any(axis=1).sum()),
        "bad_len": int(bad_len.sum()),
        "bad_len_id": _first_id(ids, bad_len),
        "bad_w": int(bad_w.sum()),
        "bad_w_id": _first_id(ids, bad_w),
        "bad_x": int(bad_x.sum()),
        "bad_x_id": _first_id(ids, bad_x),
    }


def _make_block_fn(r: int, seed: int, block_rows: int):
    """mapInArrow function: node batches -> packed blocks of up to ``block_rows`` nodes."""

    def to_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        parts: list[tuple[np.ndarray, ...]] = []
        rows = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("node_id").to_numpy(zero_copy_only=False).astype(np.int64)
            w = batch.column("weight").cast(pa.float64()).to_numpy(zero_copy_only=False)
            x, ok = _vectors_from_arrow(batch.column("vector"), r)
            parts.append((ids, x, np.asarray(w, dtype=np.float64), ok))
            rows += len(ids)
            if rows >= block_rows:
                yield pa.RecordBatch.from_pylist([_pack_block(parts, seed)])
                parts, rows = [], 0
        if parts:
            yield pa.RecordBatch.from_pylist([_pack_block(parts, seed)])

    return to_blocks


def _unpack(batch: pa.RecordBatch, i: int, r: int, cols: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    dtypes = {"ids": "<i8", "x": "<f4", "w": "<f8", "u": "<f8"}
    for c in cols:
        buf = batch.column(c)[i].as_buffer()
        arr = np.frombuffer(buf, dtype=dtypes[c])
        out[c] = arr.reshape(-1, r) if c == "x" else arr
    return out


def _make_step_fn(centroids: np.ndarray, iteration: int, fraction: float, threads: int):
    """mapInArrow function: blocks -> one row per partition with the k x (r + 2) sums and re-seed candidates.

    ``sums`` packs ``[coordinate sums (k*r), weights (k), counts (k), inertia (1)]`` as float64.
    """
    k, r = centroids.shape

    def step(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import scipy.sparse as sp

        index = None
        coord = np.zeros((k, r), dtype=np.float64)
        wsum = np.zeros(k, dtype=np.float64)
        cnt = np.zeros(k, dtype=np.float64)
        inertia = 0.0
        cand_ids = np.zeros(0, dtype=np.int64)
        cand_score = np.zeros(0, dtype=np.float64)
        cand_x = np.zeros((0, r), dtype=np.float32)
        seen = False
        for batch in batches:
            for i in range(batch.num_rows):
                b = _unpack(batch, i, r, ("ids", "x", "w", "u"))
                ids, x, w = b["ids"], b["x"], b["w"]
                if fraction < 1.0:
                    sel = minibatch_mask(b["u"], iteration, fraction)
                    ids, x, w = ids[sel], x[sel], w[sel]
                if len(ids) == 0:
                    continue
                seen = True
                if index is None:
                    index = _faiss_index(centroids, threads)
                lab, d = _nearest(index, x)
                onehot = sp.csr_matrix((w, (lab, np.arange(len(lab)))), shape=(k, len(lab)))
                coord += onehot @ x.astype(np.float64)
                wsum += np.bincount(lab, weights=w, minlength=k)
                cnt += np.bincount(lab, minlength=k)
                score = w * d
                inertia += float(score.sum())
                # keep the k heaviest-farthest nodes as re-seed candidates (ties: smaller id first)
                top = np.argpartition(-score, k - 1)[:k] if len(score) > k else np.arange(len(score))
                cand_ids = np.concatenate([cand_ids, ids[top]])
                cand_score = np.concatenate([cand_score, score[top]])
                cand_x = np.concatenate([cand_x, x[top]])
                keep = np.lexsort((cand_ids, -cand_score))[:k]
                cand_ids, cand_score, cand_x = cand_ids[keep], cand_score[keep], cand_x[keep]
        if not seen:
            return
        sums = np.concatenate([coord.ravel(), wsum, cnt, [inertia]])
        yield pa.RecordBatch.from_pylist(
            [
                {
                    "sums": sums.astype("<f8").tobytes(),
                    "cand_ids": cand_ids.astype("<i8").tobytes(),
                    "cand_score": cand_score.astype("<f8").tobytes(),
                    "cand_x": cand_x.astype("<f4").tobytes(),
                }
            ]
        )

    return step


def _make_sample_fn(r: int, seed: int, prob: float):
    """mapInArrow function: blocks -> the nodes whose hash key is below ``prob`` (the init sample)."""

    def sample(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in batches:
            for i in range(batch.num_rows):
                b = _unpack(batch, i, r, ("ids", "x", "w"))
                key = hash_uniform(b["ids"], seed, salt=2)
                sel = key < prob
                if not sel.any():
                    continue
                row = {
                    "ids": b["ids"][sel].tobytes(),
                    "x": b["x"][sel].tobytes(),
                    "w": b["w"][sel].tobytes(),
                    "key": key[sel].astype("<f8").tobytes(),
                }
                yield pa.RecordBatch.from_pylist([row])

    return sample


def _make_assign_fn(centroids: np.ndarray, threads: int):
    """mapInArrow function: nodes ``(node_id, vector)`` -> ``(node_id, macro_id 1..k, squared distance)``."""
    r = centroids.shape[1]

    def assign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        index = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("node_id").to_numpy(zero_copy_only=False).astype(np.int64)
            x, ok = _vectors_from_arrow(batch.column("vector"), r)
            if not ok.all():
                bad = int(ids[~ok][0])
                raise ValueError(f"node {bad}: vector is null or its length is not r={r}")
            if index is None:
                index = _faiss_index(centroids, threads)
            lab, d = _nearest(index, x)
            yield pa.RecordBatch.from_arrays(
                [pa.array(ids), pa.array((lab + 1).astype(np.int32)), pa.array(d.astype(np.float32))],
                names=["node_id", "macro_id", "distance"],
            )

    return assign


# ---------------------------------------------------------------------------------------------------------
# Driver-side math (k x r sized)
# ---------------------------------------------------------------------------------------------------------


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
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
    d2 = _sq_dists(x, centers[:1])[:, 0]
    for c in range(1, k):
        pot = w * d2
        total = pot.sum()
        if total <= 0:
            picks = np.searchsorted(np.cumsum(w), rng.random(k - c) * w.sum(), side="right")
            centers[c:] = x[np.minimum(picks, m - 1)]
            break
        cand = np.minimum(np.searchsorted(np.cumsum(pot), rng.random(trials) * total, side="right"), m - 1)
        cand_d2 = np.minimum(d2[None, :], _sq_dists(x[cand], x).reshape(len(cand), m))
        best = int(np.argmin((cand_d2 * w[None, :]).sum(1)))
        centers[c] = x[cand[best]]
        d2 = cand_d2[best]
    return centers


def match_to_previous(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Permutation ``p`` so that ``new[p]`` lines up with ``old`` (Hungarian on squared centroid distance).

    ``new[p[m]]`` is the new centroid that takes macro id ``m + 1`` of the old model.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(_sq_dists(np.asarray(old, np.float64), np.asarray(new, np.float64)))
    perm = np.empty(len(old), dtype=np.int64)
    perm[rows] = cols
    return perm


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie), from the contingency table."""
    from scipy.sparse import coo_matrix

    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = coo_matrix((np.ones(len(ai)), (ai, bi))).tocsr()

    def comb2(v):
        v = np.asarray(v, dtype=np.float64)
        return (v * (v - 1) / 2).sum()

    index = comb2(table.data)
    sa, sb, total = comb2(table.sum(1).A1), comb2(table.sum(0).A1), comb2([len(ai)])
    expected = sa * sb / total if total else 0.0
    top = (sa + sb) / 2
    return 1.0 if top == expected else float((index - expected) / (top - expected))


# ---------------------------------------------------------------------------------------------------------
# The estimator / fitted model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class IterationStats:
    """One row of KMEANS_STATS (without ``side``)."""

    iteration: int
    inertia: float
    shift: float
    sizes: list[int]
    imbalance: float
    reseeded: int


class WeightedKMeans:
    """Weighted k-means over a Spark DataFrame of nodes; after :meth:`fit` it holds the fitted state.

    Fitted state: ``centroids`` (k, r) float32 (row m-1 = macro m), ``weights`` / ``sizes`` per cluster over
    all nodes, ``inertia`` (weighted, all nodes), ``stats`` (per iteration), ``version`` (content hash),
    ``seed``. :meth:`save` / :meth:`load` keep it as ``model.npz`` + ``model.json``; :meth:`centroid_rows`
    / :meth:`from_centroid_rows` as CENTROIDS-table rows.

    >>> km = WeightedKMeans(k=20, mode="full", seed=7)          # doctest: +SKIP
    >>> km.fit(nodes)                                            # doctest: +SKIP
    >>> km.assign(nodes)  # DataFrame(node_id, macro_id 1..20, distance)  # doctest: +SKIP
    """

    def __init__(
        self,
        k: int,
        *,
        mode: Literal["minibatch", "full"] = "minibatch",
        max_iter: int = 30,
        tol: float = 1e-4,
        batch_fraction: float = 0.2,
        init_samples_per_center: int = 256,
        seed: int = 0,
        faiss_threads: int | None = None,
        block_rows: int = 65_536,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if mode not in ("minibatch", "full"):
            raise ValueError(f"mode must be 'minibatch' or 'full', got {mode!r}")
        if not 0 < batch_fraction <= 1:
            raise ValueError(f"batch_fraction must be in (0, 1], got {batch_fraction}")
        if max_iter < 1 or init_samples_per_center < 1 or block_rows < 1:
            raise ValueError("max_iter, init_samples_per_center and block_rows must be >= 1")
        self.k = k
        self.mode = mode
        self.max_iter = max_iter
        self.tol = tol
        self.batch_fraction = batch_fraction
        self.init_samples_per_center = init_samples_per_center
        self.seed = seed
        self.faiss_threads = faiss_threads
        self.block_rows = block_rows
        # fitted state
        self.centroids: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.inertia: float | None = None
        self.stats: list[IterationStats] = []
        self.n_iter = 0
        self.reseeded_total = 0

    @classmethod
    def from_config(cls, settings: KMeansSettings, k: int, seed: int) -> WeightedKMeans:
        """Build from the ``kmeans`` config section (``k`` is ``k_user`` or ``k_item``; ``seed`` a sub-seed)."""
        return cls(
            k,
            mode=settings.mode,
            max_iter=settings.max_iter,
            tol=settings.tol,
            batch_fraction=settings.batch_fraction,
            init_samples_per_center=settings.init_samples_per_center,
            seed=seed,
            faiss_threads=settings.faiss_threads,
            block_rows=settings.block_rows,
        )

    # ---- properties ------------------------------------------------------------------------------------

    @property
    def r(self) -> int:
        self._check_fitted()
        return int(self.centroids.shape[1])

    @property
    def version(self) -> str:
        """Content hash of the fitted centroids (first 12 hex digits of sha256)."""
        self._check_fitted()
        return hashlib.sha256(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()).hexdigest()[:12]

    def _check_fitted(self) -> None:
        if self.centroids is None:
            raise ValueError("the k-means model is not fitted yet: call fit() or load() first")

    def _threads(self, spark: SparkSession) -> int:
        if self.faiss_threads is not None:
            return self.faiss_threads
        return int(spark.conf.get("spark.task.cpus", "1") or 1)

    # ---- fit -------------------------------------------------------------------------------------------

    def fit(
        self,
        nodes: DataFrame,
        *,
        init_centroids: np.ndarray | None = None,
        warm_start: WeightedKMeans | None = None,
        r: int | None = None,
    ) -> WeightedKMeans:
        """Fit on ``nodes`` (node_id, vector, weight). Returns ``self``.

        ``init_centroids`` (k, r): start from these instead of k-means++ (benchmarks, tests).
        ``warm_start``: a previous fitted model with the same k and r; its centroids are the start and the
        result is matched to them (Hungarian) so macro ids keep their meaning.
        ``r``: the vector length; default: read from the first row.
        """
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        for col in ("node_id", "vector", "weight"):
            if col not in nodes.columns:
                raise ValueError(f"the nodes DataFrame needs a '{col}' column; it has {nodes.columns}")
        spark = nodes.sparkSession
        if warm_start is not None:
            warm_start._check_fitted()
            if warm_start.k != self.k:
                raise ValueError(f"warm start needs the same k: previous model has k={warm_start.k}, now {self.k}")
            init_centroids = warm_start.centroids
        if r is None:
            if init_centroids is not None:
                r = int(np.asarray(init_centroids).shape[1])
            else:
                first = nodes.select(F.size("vector").alias("r")).first()
                if first is None:
                    raise ValueError("cannot cluster an empty set of nodes")
                r = int(first["r"])
        if r < 1:
            raise ValueError(f"node vectors must have length >= 1, got {r}")
        shape = None if init_centroids is None else np.asarray(init_centroids).shape
        if shape is not None and shape != (self.k, r):
            raise ValueError(f"initial centroids must have shape ({self.k}, {r}), got {shape}")
        threads = self._threads(spark)

        blocks = (
            nodes.select(
                F.col("node_id").cast("long"), F.col("vector").cast("array<float>"), F.col("weight").cast("double")
            )
            .mapInArrow(_make_block_fn(r, self.seed, self.block_rows), _BLOCK_SCHEMA)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            n, total_w = self._validate(blocks, r)
            if init_centroids is not None:
                centroids = np.asarray(init_centroids, dtype=np.float64).copy()
            else:
                centroids = self._init(blocks, r, n)
            centroids = self._iterate(blocks, centroids, threads)
            self.centroids = centroids.astype(np.float32)
            final = self._step(blocks, self.centroids, 0, 1.0, threads)
            self.weights, self.sizes, self.inertia = final["wsum"], final["cnt"].astype(np.int64), final["inertia"]
        finally:
            blocks.unpersist()
        if warm_start is not None:
            self._permute(match_to_previous(self.centroids, warm_start.centroids))
        return self

    def _validate(self, blocks: DataFrame, r: int) -> tuple[int, float]:
        """Count nodes and bad input over the cached blocks; raise one clear error for bad input."""
        from pyspark.sql import functions as F

        def first_bad(c: str):
            return F.min(F.when(F.col(c) >= 0, F.col(c)))

        row = blocks.agg(
            F.sum("n").alias("n"),
            F.sum("wsum").alias("wsum"),
            F.sum("nonzero").alias("nonzero"),
            *[F.sum(c).alias(c) for c in ("bad_len", "bad_w", "bad_x")],
            *[first_bad(c).alias(c) for c in ("bad_len_id", "bad_w_id", "bad_x_id")],
        ).first()
        n = int(row["n"] or 0)
        if n == 0:
            raise ValueError("cannot cluster an empty set of nodes")
        if row["bad_len"]:
            raise ValueError(
                f"{row['bad_len']} node vector(s) are null or not of length r={r} (e.g. node {row['bad_len_id']})"
            )
        if row["bad_w"]:
            raise ValueError(
                f"{row['bad_w']} node weight(s) are NaN, infinite, null or negative (e.g. node {row['bad_w_id']})"
            )
        if row["bad_x"]:
            raise ValueError(f"{row['bad_x']} node vector(s) contain NaN or infinity (e.g. node {row['bad_x_id']})")
        if self.k > n:
            raise ValueError(f"k={self.k} is larger than the number of nodes ({n}); lower k")
        if not row["nonzero"]:
            raise ValueError(f"all {n} node vectors are zero: nothing to cluster (check the node vectors stage)")
        if not row["wsum"] or row["wsum"] <= 0:
            raise ValueError(f"the node weights sum to {row['wsum']}; at least one weight must be positive")
        return n, float(row["wsum"])

    def _init(self, blocks: DataFrame, r: int, n: int) -> np.ndarray:
        """Weighted k-means++ on a hash-seeded sample of at most ``init_samples_per_center * k`` nodes."""
        cap = self.init_samples_per_center * self.k
        # oversample a little so the sample rarely falls short of the cap, then keep the smallest keys
        prob = min(1.0, 1.2 * cap / n)
        rows = blocks.select("ids", "x", "w").mapInArrow(_make_sample_fn(r, self.seed, prob), _SAMPLE_SCHEMA)
        rows = rows.collect()
        ids = np.concatenate([np.frombuffer(x["ids"], "<i8") for x in rows])
        x = np.concatenate([np.frombuffer(x["x"], "<f4").reshape(-1, r) for x in rows])
        w = np.concatenate([np.frombuffer(x["w"], "<f8") for x in rows])
        key = np.concatenate([np.frombuffer(x["key"], "<f8") for x in rows])
        keep = np.lexsort((ids, key))[:cap]  # partition-independent choice ...
        keep = keep[np.argsort(ids[keep], kind="stable")]  # ... and order
        x, w = x[keep], w[keep]
        if w.sum() <= 0:  # all sampled weights zero: fall back to unweighted seeding on the sample
            w = np.ones_like(w)
        return kmeans_plusplus(x, w, self.k, self.seed)

    def _step(self, blocks: DataFrame, centroids: np.ndarray, iteration: int, fraction: float, threads: int):
        fn = _make_step_fn(np.asarray(centroids, dtype=np.float32), iteration, fraction, threads)
        rows = blocks.select("ids", "x", "w", "u").mapInArrow(fn, _STEP_SCHEMA).collect()
        k, r = centroids.shape
        total = np.zeros(k * (r + 2) + 1)
        cand_ids, cand_score, cand_x = [], [], []
        for row in rows:  # partition order: deterministic float sums
            total += np.frombuffer(row["sums"], "<f8")
            cand_ids.append(np.frombuffer(row["cand_ids"], "<i8"))
            cand_score.append(np.frombuffer(row["cand_score"], "<f8"))
            cand_x.append(np.frombuffer(row["cand_x"], "<f4").reshape(-1, r))
        cids = np.concatenate(cand_ids) if cand_ids else np.zeros(0, np.int64)
        cscore = np.concatenate(cand_score) if cand_score else np.zeros(0)
        cx = np.concatenate(cand_x) if cand_x else np.zeros((0, r), np.float32)
        order = np.lexsort((cids, -cscore))[:k]
        return {
            "coord": total[: k * r].reshape(k, r),
            "wsum": total[k * r : k * r + k],
            "cnt": total[k * r + k : k * r + 2 * k],
            "inertia": float(total[-1]),
            "cand_score": cscore[order],
            "cand_x": cx[order].astype(np.float64),
        }

    def _iterate(self, blocks: DataFrame, centroids: np.ndarray, threads: int) -> np.ndarray:
        full = self.mode == "full"
        fraction = 1.0 if full else self.batch_fraction
        running = np.zeros(self.k)  # Sculley's per-centre weighted counts v_c
        self.stats = []
        self.reseeded_total = 0
        for it in range(1, self.max_iter + 1):
            s = self._step(blocks, centroids, it, fraction, threads)
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
            sizes = s["cnt"].astype(np.int64)
            mean = sizes.mean()
            self.stats.append(
                IterationStats(
                    iteration=it,
                    inertia=s["inertia"],
                    shift=shift,
                    sizes=sizes.tolist(),
                    imbalance=float(sizes.max() / mean) if mean > 0 else 0.0,
                    reseeded=len(reseed),
                )
            )
            self.reseeded_total += len(reseed)
            centroids = new
            self.n_iter = it
            if shift < self.tol and not len(reseed):
                break
        return centroids

    def _permute(self, perm: np.ndarray) -> None:
        self.centroids = self.centroids[perm]
        self.weights = self.weights[perm]
        self.sizes = self.sizes[perm]
        for s in self.stats:  # keep per-iteration sizes in the final id order
            s.sizes = [s.sizes[p] for p in perm]

    # ---- assign ----------------------------------------------------------------------------------------

    def assign(self, nodes: DataFrame) -> DataFrame:
        """Nearest centroid of every node: DataFrame ``(node_id long, macro_id int 1..k, distance float)``.

        Lazy, one pass, O(n k r / threads). Works for nodes never seen in the fit (cold start): same ids.
        ``distance`` is the squared L2 distance to the centroid.
        """
        from pyspark.sql import functions as F

        self._check_fitted()
        fn = _make_assign_fn(self.centroids, self._threads(nodes.sparkSession))
        src = nodes.select(F.col("node_id").cast("long"), F.col("vector").cast("array<float>"))
        return src.mapInArrow(fn, ASSIGN_SCHEMA)

    # ---- persistence -----------------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "r": self.r,
            "version": self.version,
            "seed": self.seed,
            "mode": self.mode,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "batch_fraction": self.batch_fraction,
            "init_samples_per_center": self.init_samples_per_center,
            "block_rows": self.block_rows,
            "inertia": self.inertia,
            "n_iter": self.n_iter,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>/model.npz`` (centroids, weights, sizes) and ``<path>/model.json`` (k, r, version, ...)."""
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "model.npz", centroids=self.centroids, weights=self.weights, sizes=self.sizes)
        (out / "model.json").write_text(json.dumps(self._meta(), indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> WeightedKMeans:
        """Read a model written by :meth:`save`; checks the stored version hash against the centroids."""
        src = Path(path)
        if not (src / "model.json").is_file() or not (src / "model.npz").is_file():
            raise ValueError(f"no saved k-means model at '{src}' (expected model.json and model.npz)")
        meta = json.loads((src / "model.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"'{src}': unsupported model format {meta.get('format_version')}")
        arrays = np.load(src / "model.npz")
        model = cls(
            meta["k"],
            mode=meta["mode"],
            max_iter=meta["max_iter"],
            tol=meta["tol"],
            batch_fraction=meta["batch_fraction"],
            init_samples_per_center=meta["init_samples_per_center"],
            seed=meta["seed"],
            block_rows=meta["block_rows"],
        )
        model.centroids = arrays["centroids"].astype(np.float32)
        model.weights = arrays["weights"]
        model.sizes = arrays["sizes"]
        model.inertia = meta["inertia"]
        model.n_iter = meta["n_iter"]
        if model.centroids.shape != (meta["k"], meta["r"]) or model.version != meta["version"]:
            raise ValueError(f"'{src}': centroids do not match model.json (corrupt or edited model)")
        return model

    def centroid_rows(self, side: str, run_date: str | None = None) -> list[dict[str, Any]]:
        """CENTROIDS-table rows (k of them). ``version`` = ``<run_date>-<content hash>`` (or the hash alone)."""
        self._check_fitted()
        version = f"{run_date}-{self.version}" if run_date else self.version
        return [
            {
                "side": side,
                "macro_id": m + 1,
                "centroid": [float(v) for v in self.centroids[m]],
                "weight": float(self.weights[m]),
                "size": int(self.sizes[m]),
                "version": version,
            }
            for m in range(self.k)
        ]

    def centroids_frame(self, spark: SparkSession, side: str, run_date: str | None = None) -> DataFrame:
        """The CENTROIDS table (without ``run_date``) as a DataFrame of k rows."""
        from schemas.tables import CENTROIDS

        return spark.createDataFrame(self.centroid_rows(side, run_date), CENTROIDS.spark(with_partition=False))

    def stats_frame(self, spark: SparkSession, side: str) -> DataFrame:
        """The KMEANS_STATS table (without ``run_date``): one row per iteration."""
        from schemas.tables import KMEANS_STATS

        rows = [{"side": side, **vars(s)} for s in self.stats]
        return spark.createDataFrame(rows, KMEANS_STATS.spark(with_partition=False))

    @classmethod
    def from_centroid_rows(cls, rows: list[Any], **params: Any) -> WeightedKMeans:
        """Rebuild a fitted model from CENTROIDS rows of one side (e.g. ``read_table(...).collect()``, k rows)."""
        if not rows:
            raise ValueError("no centroid rows given")
        rows = sorted(rows, key=lambda row: row["macro_id"])
        ids = [row["macro_id"] for row in rows]
        if ids != list(range(1, len(rows) + 1)):
            raise ValueError(f"centroid macro ids must be 1..{len(rows)} with no gaps, got {ids}")
        if len({row["side"] for row in rows}) > 1:
            raise ValueError("centroid rows mix sides; pass the rows of one side")
        model = cls(len(rows), **params)
        model.centroids = np.array([row["centroid"] for row in rows], dtype=np.float32)
        model.weights = np.array([row["weight"] for row in rows], dtype=np.float64)
        model.sizes = np.array([row["size"] for row in rows], dtype=np.int64)
        return model
