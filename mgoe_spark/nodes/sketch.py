"""Node vectors (SPEC 4.2): sketched rows of S_U = S S^T and S_I = S^T S, never materialized.

Users are clustered on rows of ``S_U = S S^T`` (|U| x |U|), items on rows of ``S_I = S^T S``. A random
projection with an |U| x r matrix Omega_U keeps their pairwise distances (Johnson-Lindenstrauss)::

    Z_U = S_U Omega_U = S (S^T Omega_U)        Z_I = S_I Omega_I = S^T (S Omega_I)

computed right-to-left so that nothing bigger than nnz(S) x r is ever touched. Items are symmetric (swap the
roles of user and item); below, ``node`` is the side's column and ``other`` the other side's.

1. ``Y[other] = sum_node s * Omega[node]``: S is shuffled by ``other`` and sorted by ``(other, node)`` inside
   each partition (Spark's external sort, spills to disk); a ``mapInArrow`` numpy function computes the
   Omega rows of a whole Arrow batch at once from the node ids (:func:`omega_matrix`, no join, no stored
   Omega) and sums each run of equal keys. A key whose rows span several batches is carried to the next
   batch as one extra row, so every key's sum is complete when it is emitted: ``(other, y)`` with ``y``
   the r float64 values packed in one binary cell (much cheaper for the JVM to move than ``array<double>``).
2. ``Z[node] = sum_other s * Y[other]``: S (step 1's shuffle by ``other`` is reused, a ``ReusedExchange``)
   joins Y on ``other`` (sort-merge; adaptive execution turns it into a broadcast join when Y turns out
   smaller than ``spark.sql.adaptive.autoBroadcastJoinThreshold``); the joined rows are shuffled by
   ``node``, sorted by ``(node, other)`` and summed per node by the same numpy segmented sum, then
   L2-normalized in numpy.

Costs per side (nnz = non-zeros of S, r = dim, K = other-side nodes): O(nnz r) numpy work (Omega hashing
and Box-Muller for nnz rows, two sparse-times-dense segmented sums); shuffled bytes about
``nnz * 24`` (S by other) + ``K * 8r`` (Y) + ``nnz * (24 + 8r)`` (joined rows by node); two sorts. Memory
per task: one Arrow batch (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, default 10,000:
about 10,000 x r x 8 B = 5 MB of float64 at r = 64, a few copies of it) plus one carried r-vector, whatever
the degree of a hot node; the sorts spill. Nothing per node reaches the driver.

Omega (:func:`omega_matrix`) is a pure numpy function of (seed, side, node id, column): the same node gets
the same row in any task. A splitmix64 stream per node: ``state = mix64(node ^ mix64(seed ^ mix64(salt)))``
(salt 1 for users, 2 for items), the j-th 64-bit draw is ``mix64(state + (j + 1) * 0x9E3779B97F4A7C15)``
(``mix64`` is the splitmix64 finalizer). Entries have mean 0 and variance 1/r, so
``E ||Z_u - Z_v||^2 = ||x_u - x_v||^2`` for rows x of S_U:

- ``gaussian`` (default): N(0, 1/r) by Box-Muller on two uniforms from draw j (its top 23 bits and its
  bottom 24 bits, exact in float32), giving columns 2j and 2j + 1. Box-Muller runs in float32 (numpy's
  SIMD float32 log / cos / sin, ~10x faster than float64: about 1 us per 64-entry row in all); the
  entries are then exact float64 numbers and every later product and sum is float64. The uniforms
  truncate the tails at about 5.8 standard deviations. ``||Z_u - Z_v||^2 / ||x_u - x_v||^2`` is then
  chi-square(r) / r distributed for a fixed pair, the textbook JL setting (tests check the chi-square
  tolerance, and a KS test of the marginals).
- ``rademacher``: +-1/sqrt(r), column c is bit c % 64 of draw c // 64: cheaper, same JL guarantee up to
  constants (Achlioptas 2003).

Products and sums are float64, the output float32. Rows are L2-normalized when ``normalize`` is on (SPEC
4.2, MacGNN normalizes rows); a zero row (possible only by exact cancellation) stays zero rather than
becoming NaN.

Determinism: each key's sum is the sequential float64 fold ``0 + s_1 x_1 + s_2 x_2 + ...`` over its rows in
sorted order (scipy's CSR-times-dense kernel accumulates each row left to right; a carried partial sum
enters as ``1.0 * carry``, which is exact), so the output is bitwise the same for the same input and seed
whatever the partitioning, batch size or shuffle-fetch order (tested). Across machines it is the same up
to the last bits of numpy's float32 log / cos / sin, whose SIMD code path depends on the CPU.

``bench/sketch_agg.py`` compares this with the previous pure-Spark formulation (one ``sum`` aggregate per
column over inline xxhash64 Omega expressions, row-at-a-time code that grows with r): on 531k pairs,
r = 64, local[2] on a loaded 2-core box, 8.7 s vs 30.6 s (user side) and 3.7 s vs 22.5 s (item side).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mgoe_spark.core.arrow_sums import float_lists, ints, segment_sums
from mgoe_spark.core.names import SIDES
from schemas.tables import NODE_VECTORS

if TYPE_CHECKING:
    import pyarrow as pa

Side = Literal["user", "item"]
Distribution = Literal["gaussian", "rademacher"]
DISTRIBUTIONS = ("gaussian", "rademacher")

_KEYS = {"user": ("user_id", "item_id"), "item": ("item_id", "user_id")}
"""side -> (the node column of that side, the other side's column)."""

_SALT = {"user": 1, "item": 2}
_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _check(dim: int, distribution: str, side: str | None = None) -> None:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"sketch: dim (sketch.dim) must be a positive integer, got {dim!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"sketch: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if side is not None and side not in SIDES:
        raise ValueError(f"sketch: side must be one of {SIDES}, got {side!r}")


# ---------------------------------------------------------------------------------------------------------
# Omega: hashed random projection rows (numpy, partition-independent)
# ---------------------------------------------------------------------------------------------------------


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (a bijection with full avalanche); wraps mod 2^64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _node_states(ids: np.ndarray, seed: int, side: Side) -> np.ndarray:
    """The splitmix64 state of each node: ``mix64(id ^ mix64(seed ^ mix64(salt)))`` as uint64 (n,)."""
    salt = _mix64(np.array([_SALT[side]], dtype=np.uint64))
    key = _mix64(np.array([int(seed) & _MASK64], dtype=np.uint64) ^ salt)
    return _mix64(np.asarray(ids, dtype=np.int64).view(np.uint64) ^ key)


def _draws(states: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` splitmix64 outputs of each state: uint64 (n, count)."""
    steps = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return _mix64(states[:, None] + steps)


def omega_matrix(
    ids: np.ndarray, dim: int, seed: int, side: Side, distribution: Distribution = "gaussian"
) -> np.ndarray:
    """Rows ``Omega_side[ids]``: float64 (n, dim), entries with mean 0 and variance 1/dim.

    A pure function of (seed, side, id, column), see the module docstring. O(n * dim) time and memory.
    """
    _check(dim, distribution, side)
    states = _node_states(ids, seed, side)
    n, scale = len(states), 1.0 / np.sqrt(dim)
    if distribution == "gaussian":
        # Box-Muller in float32 (numpy's float32 log / cos / sin are SIMD, ~10x faster than float64); the
        # entries are then exact float64 numbers, and every later product and sum is float64.
        h = _draws(states, (dim + 1) // 2)
        u1 = ((h >> np.uint64(41)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-23)  # in (0, 1)
        u2 = (h & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0**-24)  # in [0, 1)
        radius = np.sqrt(np.float32(-2.0) * np.log(u1))
        angle = np.float32(2.0 * np.pi) * u2
        out = np.empty((n, 2 * h.shape[1]), dtype=np.float64)
        out[:, 0::2] = radius * np.cos(angle)
        out[:, 1::2] = radius * np.sin(angle)
        out *= scale  # in float64: the same N(0, 1) draws for every dim
        return out[:, :dim] if dim % 2 else out
    h = _draws(states, (dim + 63) // 64)
    cols = np.arange(dim)
    bits = (h[:, cols // 64] >> (cols % 64).astype(np.uint64)[None, :]) & np.uint64(1)
    return (bits.astype(np.float64) * 2.0 - 1.0) * scale


# ---------------------------------------------------------------------------------------------------------
# Worker-side helpers (run inside Spark's Python workers on Arrow batches)
# ---------------------------------------------------------------------------------------------------------


def _unpack_rows(col: pa.Array, dim: int) -> np.ndarray:
    """A binary column of ``dim`` little-endian float64 per cell -> float64 (n, dim), viewed in place."""
    import pyarrow as pa

    n = len(col)
    wide = pa.types.is_large_binary(col.type)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int64 if wide else np.int32)[col.offset : col.offset + n + 1]
    if col.null_count or np.any(np.diff(offsets) != dim * 8):
        raise ValueError(f"sketch: packed vector is null or not {dim} doubles (internal error)")
    start = int(offsets[0]) if n else 0
    return np.frombuffer(col.buffers()[2] or b"", dtype="<f8", count=n * dim, offset=start).reshape(n, dim)


def _pack_rows(x: np.ndarray) -> pa.Array:
    """float64 (n, dim) -> binary column, one cell of ``dim`` little-endian float64 per row."""
    import pyarrow as pa

    n, dim = x.shape
    data = np.ascontiguousarray(x, dtype="<f8")
    offsets = np.arange(n + 1, dtype=np.int64) * (dim * 8)
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def l2_normalize(z: np.ndarray) -> np.ndarray:
    """Rows of ``z`` divided by their L2 norms; an all-zero row stays zero (not NaN). float64 (n, dim)."""
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))
    return z / np.where(norm > 0, norm, 1.0)[:, None]


def _make_y_fn(node: str, other: str, dim: int, seed: int, side: Side, distribution: Distribution):
    """mapInArrow: S rows sorted by (other, node) -> ``(other, y packed float64[dim])``, one row per other."""

    def y_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        def omega(batch: pa.RecordBatch) -> np.ndarray:
            return omega_matrix(ints(batch.column(node)), dim, seed, side, distribution)

        for keys, sums in segment_sums(batches, other, "score", omega):
            yield pa.RecordBatch.from_arrays([pa.array(keys), _pack_rows(sums)], names=[other, "y"])

    return y_rows


def _make_z_fn(node: str, dim: int, normalize: bool):
    """mapInArrow: joined rows sorted by (node, other) -> ``(node_id, vector array<float>[dim])``."""

    def z_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for keys, sums in segment_sums(batches, node, "score", lambda b: _unpack_rows(b.column("y"), dim)):
            z = l2_normalize(sums) if normalize else sums
            yield pa.RecordBatch.from_arrays([pa.array(keys), float_lists(z)], names=["node_id", "vector"])

    return z_rows


def _make_omega_fn(dim: int, seed: int, side: Side, distribution: Distribution):
    def omega_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in batches:
            ids = ints(batch.column("node_id"))
            omega = omega_matrix(ids, dim, seed, side, distribution)
            offsets = pa.array(np.arange(len(ids) + 1, dtype=np.int32) * dim)
            vec = pa.ListArray.from_arrays(offsets, pa.array(omega.ravel()))
            yield pa.RecordBatch.from_arrays([pa.array(ids), vec], names=["node_id", "omega"])

    return omega_batches


# ---------------------------------------------------------------------------------------------------------
# DataFrame API
# ---------------------------------------------------------------------------------------------------------


def omega_rows(
    ids: DataFrame, dim: int, seed: int, side: Side, distribution: Distribution = "gaussian", id_col: str = "node_id"
) -> DataFrame:
    """Materialize Omega rows for the non-null ids in ``ids[id_col]``: ``(node_id, omega array<double>[dim])``.

    The same values as :func:`omega_matrix` (which the sketch uses inline); for oracles and inspection only.
    """
    _check(dim, distribution, side)
    src = ids.select(F.col(id_col).cast("long").alias("node_id")).where(F.col("node_id").isNotNull())
    return src.mapInArrow(_make_omega_fn(dim, seed, side, distribution), "node_id long, omega array<double>")


def sketch_side(
    scores: DataFrame,
    side: Side,
    dim: int,
    seed: int,
    normalize: bool = True,
    distribution: Distribution = "gaussian",
    only: DataFrame | None = None,
) -> DataFrame:
    """Sketched rows of S S^T (``side='user'``) or S^T S (``side='item'``).

    Args:
        scores: S as PAIR_SCORES rows (``user_id, item_id, score``), one row per non-zero (rows with a null
            id or score are ignored).
        side: which Gram matrix: ``user`` -> Z_U = S (S^T Omega_U), ``item`` -> Z_I = S^T (S Omega_I).
        dim: r, the sketch dimension.
        seed: seeds Omega (use ``cfg.sub_seed("sketch")``).
        normalize: L2-normalize the rows (zero rows stay zero).
        distribution: Omega entries, ``gaussian`` or ``rademacher``.
        only: optional ``(node_id)`` frame: return the rows of these nodes only. Y still sums over all of
            S, but step 2 joins only their pairs (the test snapshot needs vectors for its new nodes only).

    Returns:
        NODE_VECTORS ``(side, node_id, vector array<float>[dim])``: one row per node with a non-zero in S.
        Lazy; O(nnz * r) work, shuffles S twice (the second time with an r-vector per row), see the module
        docstring.
    """
    _check(dim, distribution, side)
    node, other = _KEYS[side]
    s = scores.select(
        F.col(node).cast("long").alias(node), F.col(other).cast("long").alias(other), F.col("score").cast("double")
    ).where(F.col(node).isNotNull() & F.col(other).isNotNull() & F.col("score").isNotNull())
    # Step 1: Y[other] = sum_node s * Omega[node]. The same shuffled + sorted S feeds the join below, so
    # Spark reuses its exchange.
    s_by_other = s.repartition(other).sortWithinPartitions(other, node)
    y = s_by_other.mapInArrow(_make_y_fn(node, other, dim, seed, side, distribution), f"{other} long, y binary")
    # Step 2: Z[node] = sum_other s * Y[other].
    left = s_by_other
    if only is not None:
        wanted = only.select(F.col("node_id").cast("long").alias(node))
        left = s_by_other.join(wanted, on=node, how="left_semi")
    joined = left.join(y, on=other, how="inner").select(node, other, "score", "y")
    by_node = joined.repartition(node).sortWithinPartitions(node, other)
    z = by_node.mapInArrow(_make_z_fn(node, dim, normalize), "node_id long, vector array<float>")
    return z.select(F.lit(side).alias("side"), "node_id", "vector")


def node_vectors(scores: DataFrame, cfg, side: Side, only: DataFrame | None = None) -> DataFrame:
    """:func:`sketch_side` with ``sketch.*`` settings and the ``sketch`` sub-seed of an :class:`MgoeConfig`."""
    sk = cfg.sketch
    return sketch_side(scores, side, sk.dim, cfg.sub_seed("sketch"), sk.normalize, sk.distribution, only)


__all__ = [
    "NODE_VECTORS",
    "l2_normalize",
    "node_vectors",
    "omega_matrix",
    "omega_rows",
    "segment_sums",
    "sketch_side",
]
