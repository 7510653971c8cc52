"""Worker-side k-means code: Arrow batches -> numpy blocks, FAISS assignment, per-partition sums.

Everything here runs inside Spark's Python workers (and in the driver for tests) and needs only numpy,
pyarrow, scipy and faiss. Nothing here touches Spark.

Costs (a partition of n nodes, r dims, k centroids):

- :func:`pack_batches`: one pass over the Arrow batches, O(n r) memcpy. The ``list<float>`` column is viewed
  through its Arrow offsets (no per-row Python); the task's rows are held as float32 blocks of ``block_rows``
  rows, 4 n r + 24 n bytes, for the whole fit. A block never mixes input partitions (the ``part`` column)
  and starts at a multiple of ``block_rows`` within its partition, so the blocks do not depend on how many
  partitions one task reads. Bad input (wrong vector length, NaN / negative weight, non-finite vector) is
  counted here, so the driver can raise one clear error before clustering.
- :func:`partial_sums`: O(n k r / threads) for the FAISS search plus O(n r) for the sums; returns
  ``k x (r + 2)`` integers, one float per block and the task's k re-seed candidates (k x r). Mini-batch mode
  touches only the hash-chosen ``fraction`` of the rows.

Slot-count independence: each block's float sums are rounded to a fixed-point grid (int64, scale
:func:`sum_scales` from the global input statistics, resolution ~2^-61 of a bound on the total) and the
integers are added: integer addition is exact, so the totals do not depend on which task holds which block
or in which order the driver adds the tasks. Block inertias travel as a list and are added with
``math.fsum`` (exact, order-free). A fit on 2 task slots and one on 4 give bit-identical centroids.
- :func:`sample_rows`: O(n) hashing; returns the rows whose hash key is below ``prob`` (the init sample).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

SUM_CHUNK = 4096  # rows summed in float32 before adding to the float64 totals (relative error ~1e-6)
GOLDEN = 0.6180339887498949  # rotation of the mini-batch window: consecutive batches barely overlap
ASSIGN_SCHEMA = "node_id long, macro_id int, distance float"


# ---- hashing (partition-independent) ----------------------------------------------------------------------


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
    return np.modf(u + iteration * GOLDEN)[0] < fraction


# ---- packing ----------------------------------------------------------------------------------------------

STAT_KEYS = (
    "n", "r", "wsum", "max_w", "max_x", "nonzero", "bad_len", "bad_len_id", "bad_w", "bad_w_id", "bad_x", "bad_x_id",
)  # fmt: skip


@dataclass
class Block:
    """Up to ``block_rows`` nodes of one input partition: ids int64 (n,), x float32 (n, r), w float64 (n,),
    u float64 (n,) (the mini-batch hash key)."""

    ids: np.ndarray
    x: np.ndarray
    w: np.ndarray
    u: np.ndarray


def empty_stats() -> dict[str, float]:
    return {key: (-1 if key.endswith("_id") or key == "r" else 0) for key in STAT_KEYS}


def merge_stats(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Combine two partitions' input statistics (commutative; ``r`` = -2 flags two different lengths)."""
    out = {}
    for key in STAT_KEYS:
        if key == "r":
            rs = {v for v in (a[key], b[key]) if v != -1}
            out[key] = rs.pop() if len(rs) == 1 else (-2 if rs else -1)
        elif key.endswith("_id"):
            ids = [v for v in (a[key], b[key]) if v >= 0]
            out[key] = min(ids) if ids else -1
        elif key.startswith("max_"):
            out[key] = max(a[key], b[key])
        else:
            out[key] = a[key] + b[key]
    return out


def vectors_from_arrow(col: pa.Array, r: int) -> tuple[np.ndarray, np.ndarray]:
    """``list<float>`` Arrow column -> (float32 (n, r) matrix, bool mask of rows with a valid length-r list).

    The child values are viewed through the offsets; rows of the wrong length (or null) are reported in
    the mask and their matrix rows are zero.
    """
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    offsets = col.offsets.to_numpy()
    ok = np.diff(offsets) == r
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


def _first_length(col: pa.Array) -> int:
    """Length of the first non-null list in the column, -1 if none."""
    offsets = col.offsets.to_numpy()
    valid = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False)) if col.null_count else [0]
    if len(offsets) < 2 or not len(valid):
        return -1
    i = int(valid[0])
    return int(offsets[i + 1] - offsets[i])


def _first_id(ids: np.ndarray, bad: np.ndarray) -> int:
    return int(ids[bad].min()) if bad.any() else -1


def _seal(parts: list[tuple[np.ndarray, ...]], seed: int, stats: dict[str, float]) -> Block:
    ids = np.concatenate([p[0] for p in parts])
    x = np.ascontiguousarray(np.concatenate([p[1] for p in parts]), dtype=np.float32)
    w = np.concatenate([p[2] for p in parts])
    ok = np.concatenate([p[3] for p in parts])
    bad_w = ~np.isfinite(w) | (w < 0)
    bad_x = ok & ~np.isfinite(x).all(axis=1)
    here = {
        "n": len(ids),
        "r": stats["r"],
        "wsum": float(w[~bad_w].sum()),
        # bounds for the fixed-point sums (NaN / inf here only with bad rows, and then the fit refuses)
        "max_w": float(w.max()) if len(w) else 0.0,
        "max_x": float(max(x.max(), -x.min())) if x.size else 0.0,
        "nonzero": int((x != 0).any(axis=1).sum()),
        "bad_len": int((~ok).sum()),
        "bad_len_id": _first_id(ids, ~ok),
        "bad_w": int(bad_w.sum()),
        "bad_w_id": _first_id(ids, bad_w),
        "bad_x": int(bad_x.sum()),
        "bad_x_id": _first_id(ids, bad_x),
    }
    stats.update(merge_stats(stats, here))
    return Block(ids, x, w, hash_uniform(ids, seed, salt=1))


def pack_batches(
    batches: Iterable[pa.RecordBatch], r: int | None, seed: int, block_rows: int
) -> tuple[list[Block], dict[str, float]]:
    """Arrow batches ``(node_id, vector, weight[, part])`` -> (numpy blocks, input statistics of the task).

    ``part`` (int, optional: 0 when absent) is the input partition of each row; the rows of one partition
    arrive contiguously. Blocks are cut at every ``block_rows`` rows of a partition and at partition ends,
    whatever the Arrow batch sizes. ``r``: the expected vector length; ``None`` takes the first vector's
    length (the driver checks that all tasks agree). Bad rows stay in the blocks (counted in the
    statistics); the fit refuses to start.
    """
    import pyarrow as pa

    blocks: list[Block] = []
    stats = empty_stats()
    parts: list[tuple[np.ndarray, ...]] = []
    rows, current = 0, None

    def seal(upto: int) -> None:
        """Seal the first ``upto`` pending rows as one block; keep the rest pending."""
        nonlocal parts, rows
        head, rest, taken = [], [], 0
        for piece in parts:
            m = len(piece[0])
            if taken >= upto:
                rest.append(piece)
            elif taken + m <= upto:
                head.append(piece)
            else:  # split this piece
                cut = upto - taken
                head.append(tuple(c[:cut] for c in piece))
                rest.append(tuple(c[cut:] for c in piece))
            taken += m
        blocks.append(_seal(head, seed, stats))
        parts, rows = rest, rows - upto

    for batch in batches:
        if batch.num_rows == 0:
            continue
        col = batch.column("vector")
        if stats["r"] == -1:
            stats["r"] = r if r is not None else _first_length(col)
            if stats["r"] < 0:  # every vector of the batch is null: length still unknown
                stats["r"] = -1
        width = max(int(stats["r"]), 0)
        ids = batch.column("node_id").to_numpy(zero_copy_only=False).astype(np.int64)
        w = np.asarray(batch.column("weight").cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        x, ok = vectors_from_arrow(col, width)
        names = batch.schema.names
        part = batch.column("part").to_numpy(zero_copy_only=False) if "part" in names else np.zeros(len(ids), int)
        cuts = [0, *(np.flatnonzero(np.diff(part)) + 1).tolist(), len(ids)]
        for lo, hi in itertools.pairwise(cuts):
            if current is not None and part[lo] != current and parts:  # a new input partition: close the block
                seal(rows)
            current = part[lo]
            parts.append((ids[lo:hi], x[lo:hi], w[lo:hi], ok[lo:hi]))
            rows += hi - lo
            while rows >= block_rows:
                seal(block_rows)
    if parts:
        seal(rows)
    return blocks, stats


# ---- FAISS search and sums ----------------------------------------------------------------------------------


def faiss_index(centroids: np.ndarray, threads: int):
    """An exact L2 index on the centroids, with FAISS's OpenMP threads capped (Spark runs tasks in parallel)."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


def nearest(index, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, squared distances float64 >= 0) of each row of ``x`` to the centroids in ``index``."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    d, i = index.search(np.ascontiguousarray(x), 1)
    return i[:, 0].astype(np.int64), np.maximum(d[:, 0].astype(np.float64), 0.0)


PartialSums = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(sums, block_inertia, cand_ids, cand_score, cand_x)``: ``sums`` int64 = [fixed-point coordinate sums
(k*r), fixed-point weights (k), counts (k)] (see :func:`sum_scales`); ``block_inertia`` float64, one weighted
inertia per block; the candidates are the k heaviest-farthest (``w * d``) rows, for re-seeding."""


def sum_scales(n: int, max_w: float, max_x: float) -> tuple[int, int]:
    """Binary exponents ``(coord, weight)`` of the fixed-point sums: ``round(sum * 2**coord)`` stays below
    2^61 for any set of rows, because ``n * max_w * max_x`` bounds every coordinate sum (``n * max_w`` every
    weight sum). Computed from exact input statistics (a count and two maxima), so every task and every slot
    count uses the same grid. Resolution: 2^-61 of the bound (far below float32 centroid precision)."""
    coord = 61 - math.frexp(max(n * max_w * max_x, 1e-300))[1]
    weight = 61 - math.frexp(max(n * max_w, 1e-300))[1]
    return coord, weight


def _fixed(values: np.ndarray, exponent: int) -> np.ndarray:
    return np.rint(np.ldexp(values, exponent)).astype(np.int64)


def partial_sums(
    blocks: Iterable[Block],
    centroids: np.ndarray,
    iteration: int,
    fraction: float,
    threads: int,
    scales: tuple[int, int],
    labels_out: list[tuple[np.ndarray, ...]] | None = None,
) -> PartialSums:
    """One task's contribution to a k-means step (see :data:`PartialSums`). O(n k r / threads).

    Each block's sums are taken in float (float32 products over ``SUM_CHUNK`` rows, accumulated in float64),
    then rounded to the fixed-point grid ``scales`` (:func:`sum_scales`) and added as integers: the result
    does not depend on how blocks are grouped into tasks. ``labels_out``: a list that receives ``(ids,
    labels, squared distances)`` per block (the final pass's assignments, 20 bytes a node)."""
    import scipy.sparse as sp

    k, r = centroids.shape
    index = None
    total = np.zeros(k * (r + 2), dtype=np.int64)
    inertias: list[float] = []
    cand_ids = np.zeros(0, dtype=np.int64)
    cand_score = np.zeros(0, dtype=np.float64)
    cand_x = np.zeros((0, r), dtype=np.float32)
    for block in blocks:
        ids, x, w = block.ids, block.x, block.w
        if fraction < 1.0:
            sel = minibatch_mask(block.u, iteration, fraction)
            ids, x, w = ids[sel], x[sel], w[sel]
        if len(ids) == 0:
            continue
        if index is None:
            index = faiss_index(centroids, threads)
        lab, d = nearest(index, x)
        if labels_out is not None:
            labels_out.append((ids, lab.astype(np.int32), d.astype(np.float32)))
        # per-cluster weighted sums: a one-hot (k x n) CSC matrix needs no sorting to build; float32
        # products over chunks of SUM_CHUNK rows, accumulated in float64 (4x cheaper than upcasting x)
        coord = np.zeros((k, r), dtype=np.float64)
        w32 = w.astype(np.float32)
        for lo in range(0, len(lab), SUM_CHUNK):
            hi = min(lo + SUM_CHUNK, len(lab))
            onehot = sp.csc_matrix((w32[lo:hi], lab[lo:hi], np.arange(hi - lo + 1)), shape=(k, hi - lo))
            coord += onehot @ x[lo:hi]
        total[: k * r] += _fixed(coord.ravel(), scales[0])
        total[k * r : k * r + k] += _fixed(np.bincount(lab, weights=w, minlength=k), scales[1])
        total[k * r + k :] += np.bincount(lab, minlength=k)
        score = w * d
        inertias.append(float(score.sum()))
        top = np.argpartition(-score, k - 1)[:k] if len(score) > k else np.arange(len(score))
        cand_ids = np.concatenate([cand_ids, ids[top]])
        cand_score = np.concatenate([cand_score, score[top]])
        cand_x = np.concatenate([cand_x, x[top]])
        keep = np.lexsort((cand_ids, -cand_score))[:k]  # ties: smaller id first
        cand_ids, cand_score, cand_x = cand_ids[keep], cand_score[keep], cand_x[keep]
    return total, np.asarray(inertias, dtype=np.float64), cand_ids, cand_score, cand_x


def sample_rows(blocks: Iterable[Block], seed: int, prob: float) -> tuple[np.ndarray, ...]:
    """``(ids, x, w, key)`` of the rows whose hash key (seed, id) is below ``prob``: the init sample."""
    out = []
    for block in blocks:
        key = hash_uniform(block.ids, seed, salt=2)
        sel = key < prob
        if sel.any():
            out.append((block.ids[sel], block.x[sel], block.w[sel], key[sel]))
    if not out:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate([o[i] for o in out]) for i in range(4))


def assign_batches(batches: Iterable[pa.RecordBatch], centroids: np.ndarray, threads: int) -> Iterator[pa.RecordBatch]:
    """Nodes ``(node_id, vector)`` -> ``(node_id, macro_id 1..k, squared distance)`` Arrow batches."""

    r = centroids.shape[1]
    index = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ids = batch.column("node_id").to_numpy(zero_copy_only=False).astype(np.int64)
        x, ok = vectors_from_arrow(batch.column("vector"), r)
        if not ok.all():
            raise ValueError(f"node {int(ids[~ok][0])}: vector is null or its length is not r={r}")
        if index is None:
            index = faiss_index(centroids, threads)
        lab, d = nearest(index, x)
        yield assignment_batch(ids, lab, d)


def assignment_batch(ids: np.ndarray, labels: np.ndarray, d: np.ndarray) -> Any:
    """An :data:`ASSIGN_SCHEMA` Arrow batch from 0-based labels and squared distances."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.array(ids), pa.array((np.asarray(labels) + 1).astype(np.int32)), pa.array(d.astype(np.float32))],
        names=["node_id", "macro_id", "distance"],
    )


def label_batch(ids: np.ndarray, labels: np.ndarray, d: np.ndarray) -> Any:
    """``(node_id int64, label int32 0-based, distance float32)`` Arrow batch: a final pass's raw labels."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.array(ids), pa.array(np.asarray(labels, dtype=np.int32)), pa.array(np.asarray(d, dtype=np.float32))],
        names=["node_id", "label", "distance"],
    )


def ipc_payload(batch: Any) -> bytes:
    """One Arrow batch as an Arrow IPC stream (cached as one binary value: far cheaper than n cached rows)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def unpacked(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow helper: rows of one binary column of :func:`ipc_payload` values -> the batches inside."""
    import pyarrow as pa

    for batch in batches:
        for payload in batch.column(0).to_pylist():
            yield from pa.ipc.open_stream(payload)
