"""k-hop macro edges (SPEC 4.5, Eq 10), by repeated sparse x K-column products.

With S the |U| x |I| merging matrix (``edge_matrix=score``: s_ui; ``binary``: 1 for every pair with s > 0)
and C_U, C_I the one-hot assignment matrices (|U| x K_U, |I| x K_I)::

    U_1 = S C_I      I_1 = S^T C_U                   (E1_U, E1_I)
    U_h = S I_{h-1}  I_h = S^T U_{h-1}   for h >= 2  (U_2 = S S^T C_U = E2_U, I_2 = S^T S C_I = E2_I, ...)

so hop h of a user points to item macros (K_I columns) when h is odd and to user macros (K_U) when h is
even; items the other way round. Each product is one "push": join S (nnz rows) with the other side's
K-vectors on the shared node (one row per pair, never one per path: a hot item sends the same K-vector along
each of its pairs, it does not pair its users with each other), then sum the weighted K-vectors per node
(:func:`mgoe_spark.arrow_sums.segment_sums`: the joined rows are shuffled by node, sorted, and folded in
numpy per Arrow batch). Cost per hop and side: O(nnz * K) arithmetic, a shuffle of O(nnz) rows of K
floats, intermediate rows <= nnz, task memory one batch. The driver sees nothing but the plan.

Nodes with no non-zero edge in a hop (e.g. all their neighbors unassigned) get no row; the
training-example builder fills zeros.
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

USER, ITEM = "user", "item"


def edge_values(pair_scores: DataFrame, edge_matrix: Literal["score", "binary"]) -> DataFrame:
    """S as (user_id, item_id, value): the score or 1 per pair with score > 0."""
    if edge_matrix not in ("score", "binary"):
        raise ValueError(f"edges.edge_matrix must be 'score' or 'binary', got {edge_matrix!r}")
    s = pair_scores.where(F.col("score") > 0)
    value = F.col("score").cast("double") if edge_matrix == "score" else F.lit(1.0)
    return s.select("user_id", "item_id", value.alias("value"))


def one_hot(assignments: DataFrame, side: str, k: int) -> DataFrame:
    """C_side as (node_id, vec): dense K-vector with a 1 at ``macro_id - 1``. O(nodes * K). A macro id
    outside 1..K fails the job with a message naming it."""
    macro = F.col("macro_id")
    # a macro id outside 1..K would silently vanish from every edge: fail the job instead
    checked = F.when((macro >= 1) & (macro <= k), macro).otherwise(
        F.raise_error(F.concat(F.lit(f"{side} assignment has macro_id outside 1..{k}: "), macro.cast("string")))
    )
    onehot = F.transform(F.sequence(F.lit(1), F.lit(int(k))), lambda m: F.when(m == checked, 1.0).otherwise(0.0))
    return assignments.where(F.col("side") == side).select("node_id", onehot.cast("array<float>").alias("vec"))


def push(values: DataFrame, vectors: DataFrame, to_side: str, trace: dict[str, DataFrame] | None = None) -> DataFrame:
    """One sparse x K-column product: ``out[a] = sum_b value_ab * vectors[b]`` over the pairs (a, b) of S.

    ``to_side='user'``: a = user, b = item (S x V); ``'item'``: a = item, b = user (S^T x V).
    ``vectors``: (node_id, vec) on the other side. Returns (node_id, vec). The join has one row per pair
    whose other end has a vector (<= nnz rows). If ``trace`` is given, the join is stored in it under
    ``'join'`` so tests can count its rows.
    """
    this, other = ("user_id", "item_id") if to_side == USER else ("item_id", "user_id")
    joined = values.join(vectors.withColumnRenamed("node_id", other), on=other, how="inner")
    if trace is not None:
        trace["join"] = joined
    by_node = joined.repartition(this).sortWithinPartitions(this, other)
    return by_node.mapInArrow(_sum_fn(this), "node_id long, vec array<float>")


def _sum_fn(key: str):
    """mapInArrow: joined rows sorted by (key, other) -> ``(node_id, vec)``, sum of value * vec per key."""

    def fn(batches):
        import pyarrow as pa

        from mgoe_spark.arrow_sums import fixed_lists, float_lists, segment_sums

        dim: list[int] = []

        def rows(batch):
            col = batch.column("vec")
            if not dim:
                dim.append(len(col[0]))
            return fixed_lists(col, dim[0])

        for keys, sums in segment_sums(batches, key, "value", rows):
            yield pa.RecordBatch.from_arrays([pa.array(keys), float_lists(sums)], names=["node_id", "vec"])

    return fn


def macro_edges(
    pair_scores: DataFrame,
    assignments: DataFrame,
    k_user: int,
    k_item: int,
    hops: int = 2,
    edge_matrix: Literal["score", "binary"] = "score",
    trace: dict[str, DataFrame] | None = None,
) -> DataFrame:
    """MACRO_EDGES rows (side, node_id, hop, weights float32[K]) for hops 1..``hops``, both sides.

    ``pair_scores``: PAIR_SCORES (user_id, item_id, score). ``assignments``: ASSIGNMENTS (side, node_id,
    macro_id 1..K). Nodes without an assignment contribute nothing (a zero vector). Cost O(hops * nnz * K);
    ``trace`` (optional dict) receives every intermediate DataFrame by name (``U1``, ``I1``, ``join_U2``...).
    The hop-h frames are reused by hop h+1 and by the output; Spark's exchange reuse computes each once
    within the returned plan (callers writing several outputs may ``persist`` it).
    """
    if hops < 1:
        raise ValueError(f"edges.hops must be >= 1, got {hops}")
    if k_user < 1 or k_item < 1:
        raise ValueError(f"k_user and k_item must be >= 1, got {k_user}, {k_item}")
    values = edge_values(pair_scores, edge_matrix)
    user_vecs: DataFrame | None = None
    item_vecs: DataFrame | None = None
    outputs: list[DataFrame] = []
    for hop in range(1, hops + 1):
        # Users are pushed item-side vectors and vice versa; hop 1 starts from the one-hot assignments.
        src_for_users = one_hot(assignments, ITEM, k_item) if hop == 1 else item_vecs
        src_for_items = one_hot(assignments, USER, k_user) if hop == 1 else user_vecs
        t_u: dict[str, DataFrame] = {}
        t_i: dict[str, DataFrame] = {}
        new_user = push(values, src_for_users, USER, t_u)
        new_item = push(values, src_for_items, ITEM, t_i)
        user_vecs, item_vecs = new_user, new_item
        if trace is not None:
            trace.update({f"U{hop}": new_user, f"I{hop}": new_item, f"join_U{hop}": t_u["join"]})
            trace[f"join_I{hop}"] = t_i["join"]
        for side, df in ((USER, new_user), (ITEM, new_item)):
            outputs.append(
                df.select(
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
