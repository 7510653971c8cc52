"""Node vectors (SPEC 4.2): sketched rows of S_U = S S^T and S_I = S^T S, never materialized.

Users are clustered on rows of ``S_U = S S^T`` (|U| x |U|), items on rows of ``S_I = S^T S``. A random
projection with an |U| x r matrix Omega_U keeps their pairwise distances (Johnson-Lindenstrauss)::

    Z_U = S_U Omega_U = S (S^T Omega_U)        Z_I = S_I Omega_I = S^T (S Omega_I)

computed right-to-left so that nothing bigger than nnz(S) x r is ever touched:

1. ``Y[i] = sum_u s_ui * Omega_U[u]`` (per item). Omega_U[u] is a pure function of (seed, u, column): it is
   computed inline on each row of S by hashing, so this step is one aggregation and no join; no Omega matrix
   is stored, shipped or collected.
2. ``Z_U[u] = sum_i s_ui * Y[i]`` (per user): one join of S with Y on the item, one aggregation.

Items are symmetric (swap the roles of user and item). Per side: one join and two aggregations, O(nnz * r)
work and O((|U| + |I|) * r) shuffled state after map-side combining.

Omega entries have mean 0 and variance 1/r, so ``E ||Z_u - Z_v||^2 = ||x_u - x_v||^2`` for rows x of S_U:

- ``gaussian`` (default): N(0, 1/r) via Box-Muller on two hashed uniforms (:func:`mgoe_spark.rand.normal`).
  Then ``||Z_u - Z_v||^2 / ||x_u - x_v||^2`` is exactly chi-square(r) / r distributed for a fixed pair, the
  textbook JL setting (tests check the chi-square tolerance).
- ``rademacher``: +-1/sqrt(r), one bit of a 64-bit xxhash per entry (one hash per 64 columns): cheaper,
  same JL guarantee up to constants (Achlioptas 2003).

Vectors are summed in double and stored as float32. The rows are L2-normalized when ``normalize`` is on
(SPEC 4.2, MacGNN normalizes rows); a zero row (possible only by exact cancellation) stays zero rather
than becoming NaN. Summation order inside Spark's aggregation may vary with shuffle-fetch order, so two
runs can differ in the last bits of a double (far below float32 resolution in practice).

How the r-vectors are aggregated: one ``sum`` aggregate per column (``F.sum(s * omega_c)`` for c < r, then
``array(...)``). Spark combines them map-side in a fixed-width hash-aggregate buffer (r doubles per key) with
whole-stage codegen, so a hot key costs O(r) memory. ``bench/sketch_agg.py`` compares it with
explode + groupBy(key, c) (r times more shuffled rows, plus a re-pivot) and collect_list + zip_with
(materializes all of a key's vectors in one task: O(deg * r) memory for a hot item, not billion-safe);
see that file's docstring for measured numbers. Whole-stage codegen needs r + 1 <= spark.sql.codegen.maxFields
(default 100); bigger r still works, through the slower interpreted aggregation path.
"""

from __future__ import annotations

import math
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mgoe_spark import rand
from schemas.tables import NODE_VECTORS

Side = Literal["user", "item"]
Distribution = Literal["gaussian", "rademacher"]
DISTRIBUTIONS = ("gaussian", "rademacher")
SIDES = ("user", "item")

_KEYS = {"user": ("user_id", "item_id"), "item": ("item_id", "user_id")}
"""side -> (the node column of that side, the other side's column)."""


def _check(dim: int, distribution: str, side: str | None = None) -> None:
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"sketch: dim (sketch.dim) must be a positive integer, got {dim!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"sketch: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if side is not None and side not in SIDES:
        raise ValueError(f"sketch: side must be one of {SIDES}, got {side!r}")


def omega_entries(node: Column, dim: int, seed: int, side: Side, distribution: Distribution) -> list[Column]:
    """The ``dim`` entries of row ``Omega_side[node]`` as double columns (mean 0, variance 1/dim).

    Pure functions of (seed, side, node id, column index): the same node gets the same row on any executor.
    """
    _check(dim, distribution, side)
    salt = f"omega_{side}"
    scale = 1.0 / math.sqrt(dim)
    if distribution == "gaussian":
        return [rand.normal(seed, salt, node, F.lit(c)) * F.lit(scale) for c in range(dim)]
    # One 64-bit hash per block of 64 columns; column c uses bit c % 64 of block c // 64.
    blocks = [F.xxhash64(F.lit(int(seed)), F.lit(salt), node, F.lit(b)) for b in range((dim + 63) // 64)]
    out = []
    for c in range(dim):
        bit = F.shiftrightunsigned(blocks[c // 64], c % 64).bitwiseAND(F.lit(1))
        out.append((bit.cast("double") * F.lit(2.0) - F.lit(1.0)) * F.lit(scale))
    return out


def omega_rows(
    ids: DataFrame, dim: int, seed: int, side: Side, distribution: Distribution = "gaussian", id_col: str = "node_id"
) -> DataFrame:
    """Materialize Omega rows for the ids in ``ids[id_col]``: ``(node_id, omega array<double>[dim])``.

    For oracles and inspection only (the sketch itself never materializes Omega).
    """
    entries = omega_entries(F.col(id_col).cast("long"), dim, seed, side, distribution)
    return ids.select(F.col(id_col).cast("long").alias("node_id"), F.array(*entries).alias("omega"))


def _sum_vectors(df: DataFrame, key: str, terms: list[Column], out: str) -> DataFrame:
    """``groupBy(key)``, one ``sum`` per vector component, packed into ``array<double>`` column ``out``."""
    sums = [F.sum(t).alias(f"_c{c}") for c, t in enumerate(terms)]
    agg = df.groupBy(key).agg(*sums)
    return agg.select(key, F.array(*[F.col(f"_c{c}") for c in range(len(terms))]).alias(out))


def l2_normalize(vec: Column) -> Column:
    """Divide an ``array<double>`` by its L2 norm; an all-zero array is returned unchanged (not NaN)."""
    norm = F.sqrt(F.aggregate(vec, F.lit(0.0), lambda acc, x: acc + x * x))
    return F.when(norm > 0, F.transform(vec, lambda x: x / norm)).otherwise(vec)


def sketch_side(
    scores: DataFrame,
    side: Side,
    dim: int,
    seed: int,
    normalize: bool = True,
    distribution: Distribution = "gaussian",
) -> DataFrame:
    """Sketched rows of S S^T (``side='user'``) or S^T S (``side='item'``).

    Args:
        scores: S as PAIR_SCORES rows (``user_id, item_id, score``), one row per non-zero.
        side: which Gram matrix: ``user`` -> Z_U = S (S^T Omega_U), ``item`` -> Z_I = S^T (S Omega_I).
        dim: r, the sketch dimension.
        seed: seeds Omega (use ``cfg.sub_seed("sketch")``).
        normalize: L2-normalize the rows (zero rows stay zero).
        distribution: Omega entries, ``gaussian`` or ``rademacher``.

    Returns:
        NODE_VECTORS ``(side, node_id, vector array<float>[dim])``: one row per node with a non-zero in S.
        O(nnz * r) work: one aggregation (step 1), one join + one aggregation (step 2); lazy.
    """
    _check(dim, distribution, side)
    node, other = _KEYS[side]
    s = scores.select(F.col(node).cast("long").alias(node), F.col(other).cast("long").alias(other), "score")
    # Step 1: Y[other] = sum_node s * Omega[node]  (Omega computed inline from the node id: no join).
    omega = omega_entries(F.col(node), dim, seed, side, distribution)
    y = _sum_vectors(s, other, [F.col("score") * w for w in omega], "y")
    # Step 2: Z[node] = sum_other s * Y[other].
    joined = s.join(y, on=other, how="inner")
    z = _sum_vectors(joined, node, [F.col("score") * F.col("y")[c] for c in range(dim)], "z")
    vec = l2_normalize(F.col("z")) if normalize else F.col("z")
    return z.select(
        F.lit(side).alias("side"),
        F.col(node).alias("node_id"),
        vec.cast("array<float>").alias("vector"),
    )


def node_vectors(scores: DataFrame, cfg, side: Side) -> DataFrame:
    """:func:`sketch_side` with ``sketch.*`` settings and the ``sketch`` sub-seed of an :class:`MgoeConfig`."""
    sk = cfg.sketch
    return sketch_side(scores, side, sk.dim, cfg.sub_seed("sketch"), sk.normalize, sk.distribution)


__all__ = ["NODE_VECTORS", "l2_normalize", "node_vectors", "omega_entries", "omega_rows", "sketch_side"]
