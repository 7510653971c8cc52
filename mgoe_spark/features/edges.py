"""k-hop macro edges (SPEC 4.5, Eq 10), by repeated sparse x K-column products.

With S the |U| x |I| merging matrix (``edge_matrix=score``: s_ui; ``binary``: 1 for every pair with s > 0)
and C_U, C_I the one-hot assignment matrices (|U| x K_U, |I| x K_I)::

    U_1 = S C_I      I_1 = S^T C_U                   (E1_U, E1_I)
    U_h = S I_{h-1}  I_h = S^T U_{h-1}   for h >= 2  (U_2 = S S^T C_U = E2_U, I_2 = S^T S C_I = E2_I, ...)

so hop h of a user points to item macros (K_I columns) when h is odd and to user macros (K_U) when h is
even; items the other way round. Each product is one "push": join S (nnz rows) with the other side's
K-vectors on the shared node (one row per pair, never one per path: a hot item sends the same K-vector along
each of its pairs, it does not pair its users with each other), then sum the weighted K-vectors per node
(:func:`mgoe_spark.core.arrow_sums.segment_sums`: the joined rows are shuffled by node, sorted, and folded in
numpy per Arrow batch). Cost per hop and side: O(nnz * K) arithmetic, a shuffle of O(nnz) rows of K
floats, intermediate rows <= nnz, task memory one batch. The driver sees nothing but the plan.

Hop 1 needs no K-vectors at all: each pair meets ONE macro id of its other end, so (``method='hybrid'``)
it can be a JVM join of S with the integer macro ids and a ``groupBy(node, macro).sum``, combined
map-side (nnz join rows of 4 numbers instead of nnz one-hot K-arrays through Python), and the dense arrays
are built once from its sparse rows. Hops >= 2 push those dense arrays. An all-sparse variant (hop h from
the sparse hop h-1 rows) is kept as ``method='sparse'`` for ``bench/edges.py``: from hop 2 on its join
has nnz x min(K, deg) rows, which made it 2-4.5x slower than the dense push at K = 256. Measured side by
side on an unloaded box the dense push (the default) still won at both K = 20 and K = 256: the extra
aggregation + dense-array assembly stages cost more than the one-hot arrays they save at these sizes.

Both snapshots go through the same joins and aggregations when the inputs carry a ``snapshot`` column
(the dense push packs (snapshot, node) into one int64 key for its numpy fold).

Nodes with no non-zero edge in a hop (e.g. all their neighbors unassigned) get no row; the
training-example builder fills zeros.
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mgoe_spark.core.names import ITEM, SNAPSHOTS, USER


def edge_values(
    pair_scores: DataFrame, edge_matrix: Literal["score", "binary"], keys: list[str] | None = None
) -> DataFrame:
    """S as (keys..., user_id, item_id, value): the score or 1 per pair with score > 0."""
    if edge_matrix not in ("score", "binary"):
        raise ValueError(f"edges.edge_matrix must be 'score' or 'binary', got {edge_matrix!r}")
    s = pair_scores.where(F.col("score") > 0)
    value = F.col("score").cast("double") if edge_matrix == "score" else F.lit(1.0)
    return s.select(*(keys or []), "user_id", "item_id", value.alias("value"))


def one_hot(assignments: DataFrame, side: str, k: int) -> DataFrame:
    """C_side as (node_id, vec): dense K-vector with a 1 at ``macro_id - 1``. O(nodes * K). A macro id
    outside 1..K fails the job with a message naming it."""
    macro = F.col("macro_id")
    # a macro id outside 1..K would silently vanish from every edge: fail the job instead
    checked = F.when((macro >= 1) & (macro <= k), macro).otherwise(
        F.raise_error(F.concat(F.lit(f"{side} assignment has macro_id outside 1..{k}: "), macro.cast("string")))
    )
    onehot = F.transform(F.sequence(F.lit(1), F.lit(int(k))), lambda m: F.when(m == checked, 1.0).otherwise(0.0))
    keys = _keys(assignments)
    return assignments.where(F.col("side") == side).select(*keys, "node_id", onehot.cast("array<float>").alias("vec"))


_NODE_BITS = 48
"""A tagged push packs (snapshot, node) into one sortable int64: snapshot index << 48 | node id."""


def _packed(keys: list[str], node: str) -> Column:
    if not keys:
        return F.col(node)
    idx = F.when(F.col("snapshot") == SNAPSHOTS[0], F.lit(0))
    for k, name in enumerate(SNAPSHOTS[1:], start=1):
        idx = idx.when(F.col("snapshot") == name, F.lit(k))
    ok = idx.isNotNull() & (F.col(node) >= 0) & (F.col(node) < F.lit(1 << _NODE_BITS))
    packed = F.shiftleft(idx.cast("long"), _NODE_BITS) + F.col(node)
    return F.when(ok, packed).otherwise(
        F.raise_error(
            F.concat(
                F.lit(f"edges: snapshot not in {SNAPSHOTS} or {node} not in [0, 2^48): "), F.col(node).cast("string")
            )
        )
    )


def _unpacked(df: DataFrame, keys: list[str]) -> DataFrame:
    if not keys:
        return df
    idx = F.shiftright("node_id", _NODE_BITS)
    snap = F.when(idx == 0, F.lit(SNAPSHOTS[0]))
    for k, name in enumerate(SNAPSHOTS[1:], start=1):
        snap = snap.when(idx == k, F.lit(name))
    node = F.col("node_id").bitwiseAND(F.lit((1 << _NODE_BITS) - 1))
    return df.select(snap.alias("snapshot"), node.alias("node_id"), "vec")


def push(values: DataFrame, vectors: DataFrame, to_side: str, trace: dict[str, DataFrame] | None = None) -> DataFrame:
    """One sparse x K-column product: ``out[a] = sum_b value_ab * vectors[b]`` over the pairs (a, b) of S.

    ``to_side='user'``: a = user, b = item (S x V); ``'item'``: a = item, b = user (S^T x V).
    ``vectors``: (snapshot?, node_id, vec) on the other side. Returns (snapshot?, node_id, vec). The join
    has one row per pair whose other end has a vector (<= nnz rows); the joined rows are shuffled by node
    (nnz x (4K + 24) bytes, no map-side combine possible) and folded in numpy per Arrow batch. If
    ``trace`` is given, the join is stored in it under ``'join'`` so tests can count its rows.
    """
    this, other = ("user_id", "item_id") if to_side == USER else ("item_id", "user_id")
    keys = _keys(values)
    joined = values.join(vectors.withColumnRenamed("node_id", other), on=[*keys, other], how="inner")
    if trace is not None:
        trace["join"] = joined
    rows = joined.select(_packed(keys, this).alias("_key"), other, "value", "vec")
    by_node = rows.repartition("_key").sortWithinPartitions("_key", other)
    return _unpacked(by_node.mapInArrow(_sum_fn("_key"), "node_id long, vec array<float>"), keys)


def _sum_fn(key: str):
    """mapInArrow: joined rows sorted by (key, other) -> ``(node_id, vec)``, sum of value * vec per key."""

    def fn(batches):
        import pyarrow as pa

        from mgoe_spark.core.arrow_sums import fixed_lists, float_lists, segment_sums

        dim: list[int] = []

        def rows(batch):
            col = batch.column("vec")
            if not dim:
                dim.append(len(col[0]))
            return fixed_lists(col, dim[0])

        for keys, sums in segment_sums(batches, key, "value", rows):
            yield pa.RecordBatch.from_arrays([pa.array(keys), float_lists(sums)], names=["node_id", "vec"])

    return fn


def _keys(df: DataFrame) -> list[str]:
    """The snapshot key, when the frame is tagged with one (every snapshot computed in one pass)."""
    return ["snapshot"] if "snapshot" in df.columns else []


def macro_ids(assignments: DataFrame, side: str, k: int) -> DataFrame:
    """C_side as sparse rows ``(snapshot?, node_id, macro, w = 1.0)``. A macro id outside 1..K fails the job
    with a message naming it. O(nodes)."""
    macro = F.col("macro_id")
    checked = F.when((macro >= 1) & (macro <= k), macro).otherwise(
        F.raise_error(F.concat(F.lit(f"{side} assignment has macro_id outside 1..{k}: "), macro.cast("string")))
    )
    keys = _keys(assignments)
    return assignments.where(F.col("side") == side).select(
        *keys, "node_id", checked.cast("int").alias("macro"), F.lit(1.0).alias("w")
    )


def sparse_push(
    values: DataFrame, rows: DataFrame, to_side: str, trace: dict[str, DataFrame] | None = None
) -> DataFrame:
    """One sparse x sparse product: ``out[a, m] = sum_b value_ab * rows[b, m]`` over the pairs (a, b) of S.

    ``rows``: sparse (snapshot?, node_id, macro, w) of the other side. The join has one row per (pair,
    macro of its other end): at most nnz * min(K, deg) rows, never one per path; ``groupBy(node, macro)
    .sum`` combines them map-side, so the shuffle carries at most (distinct (node, macro) per map task)
    rows of 4 numbers. Returns (snapshot?, node_id, macro, w). The join is stored in ``trace['join']``.
    """
    this, other = ("user_id", "item_id") if to_side == USER else ("item_id", "user_id")
    keys = _keys(values)
    joined = values.join(rows.withColumnRenamed("node_id", other), on=[*keys, other], how="inner")
    if trace is not None:
        trace["join"] = joined
    return joined.groupBy(*keys, F.col(this).alias("node_id"), "macro").agg(
        F.sum(F.col("value") * F.col("w")).alias("w")
    )


def dense_rows(sparse: DataFrame, k: int) -> DataFrame:
    """Sparse (snapshot?, node_id, macro, w) -> (snapshot?, node_id, vec float32[k]): one row per node.
    One shuffle of the sparse rows (<= nodes * k); a node's row holds at most k entries."""
    keys = _keys(sparse)
    by_node = sparse.groupBy(*keys, "node_id").agg(
        F.map_from_entries(F.collect_list(F.struct("macro", "w"))).alias("m")
    )
    vec = F.transform(F.sequence(F.lit(1), F.lit(int(k))), lambda m: F.coalesce(F.try_element_at("m", m), F.lit(0.0)))
    return by_node.select(*keys, "node_id", vec.cast("array<float>").alias("vec"))


Method = Literal["hybrid", "sparse", "dense"]
METHODS = ("hybrid", "sparse", "dense")


def macro_edges(
    pair_scores: DataFrame,
    assignments: DataFrame,
    k_user: int,
    k_item: int,
    hops: int = 2,
    edge_matrix: Literal["score", "binary"] = "score",
    trace: dict[str, DataFrame] | None = None,
    method: Method = "dense",
) -> DataFrame:
    """MACRO_EDGES rows (snapshot?, side, node_id, hop, weights float32[K]) for hops 1..``hops``, both sides.

    ``pair_scores``: PAIR_SCORES (user_id, item_id, score). ``assignments``: ASSIGNMENTS (side, node_id,
    macro_id 1..K). When both carry a ``snapshot`` column, every snapshot is computed in the same pass
    (one join and one aggregation per hop and side for all of them) and the output carries it too.
    Nodes without an assignment contribute nothing (a zero vector).

    ``method`` (``bench/edges.py`` measures them; the default, ``dense``, was the fastest at K = 20 and
    K = 256 on 70k pairs, local[2], load ~6, best of 2: dense 4.8 / 7.4 s, hybrid 8.2 / 10.8 s, sparse
    6.3 / 15.3 s):

    - ``hybrid``: hop 1 by :func:`sparse_push` from the integer macro ids (nnz join rows, one per pair,
      summed per (node, macro) with map-side combine, all in the JVM), dense K-arrays built once
      (:func:`dense_rows`); hops >= 2 by the dense :func:`push` of the hop h-1 arrays (nnz rows of K
      floats folded in numpy).
    - ``sparse``: every hop by :func:`sparse_push` from the sparse hop h-1 rows; the join grows to
      nnz x min(K, deg) rows from hop 2 on (4.5x slower than ``dense`` at K = 256).
    - ``dense``: every hop by :func:`push`, hop 1 from one-hot K-arrays (nnz x 4K bytes shuffled for a
      single non-zero per row).

    Cost per hop and side: O(nnz * K); task memory: one Arrow batch (numpy) or Spark's aggregation and
    sort buffers (spill), whatever the degree. ``trace`` (optional dict) receives every intermediate
    DataFrame by name (``U1``, ``I1``, ``join_U2``...). The hop-h frames are reused by hop h+1 and by the
    output (Spark's exchange reuse computes each once within the returned plan).
    """
    if hops < 1:
        raise ValueError(f"edges.hops must be >= 1, got {hops}")
    if k_user < 1 or k_item < 1:
        raise ValueError(f"k_user and k_item must be >= 1, got {k_user}, {k_item}")
    if method not in METHODS:
        raise ValueError(f"macro_edges: method must be one of {METHODS}, got {method!r}")
    keys = _keys(pair_scores)
    values = edge_values(pair_scores, edge_matrix, keys)
    users: DataFrame | None = None  # sparse (node_id, macro, w) or dense (node_id, vec) rows of the last hop
    items: DataFrame | None = None
    outputs: list[DataFrame] = []
    for hop in range(1, hops + 1):
        t_u: dict[str, DataFrame] = {}
        t_i: dict[str, DataFrame] = {}
        sparse = method == "sparse" or (method == "hybrid" and hop == 1)
        if sparse:
            src_u = macro_ids(assignments, ITEM, k_item) if hop == 1 else items
            src_i = macro_ids(assignments, USER, k_user) if hop == 1 else users
            users, items = sparse_push(values, src_u, USER, t_u), sparse_push(values, src_i, ITEM, t_i)
            dense_u = dense_rows(users, edge_width(USER, hop, k_user, k_item))
            dense_i = dense_rows(items, edge_width(ITEM, hop, k_user, k_item))
        else:
            src_u = one_hot(assignments, ITEM, k_item) if hop == 1 else items
            src_i = one_hot(assignments, USER, k_user) if hop == 1 else users
            dense_u, dense_i = push(values, src_u, USER, t_u), push(values, src_i, ITEM, t_i)
        if method != "sparse":
            users, items = dense_u, dense_i  # the next hop pushes dense arrays
        if trace is not None:
            trace.update({f"U{hop}": dense_u, f"I{hop}": dense_i, f"join_U{hop}": t_u["join"]})
            trace[f"join_I{hop}"] = t_i["join"]
        for side, df in ((USER, dense_u), (ITEM, dense_i)):
            outputs.append(
                df.select(
                    *keys,
                    F.lit(side).alias("side"),
                    "node_id",
                    F.lit(hop).cast("int").alias("hop"),
                    F.col("vec").alias("weights"),
                )
            )
    out = outputs[0]
    for df in outputs[1:]:
        out = out.unionByName(df)
    return out


def edge_width(side: str, hop: int, k_user: int, k_item: int) -> int:
    """K of a hop's weight array: users point to item macros on odd hops, to user macros on even ones."""
    to_items = (hop % 2 == 1) == (side == USER)
    return k_item if to_items else k_user
