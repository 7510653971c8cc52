"""Macro edges: exact against scipy sparse products (hops 1..3, score and binary), and bounded
intermediate sizes with a hot item."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.sql import functions as F

from mgoe_spark.features.edges import edge_width, macro_edges

K_U, K_I = 3, 4


def random_graph(seed: int, n_users: int = 12, n_items: int = 9, density: float = 0.35):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    scores = rng.integers(1, 16, size=(n_users, n_items)).astype(float) * mask
    user_macro = rng.integers(1, K_U + 1, size=n_users)
    item_macro = rng.integers(1, K_I + 1, size=n_items)
    user_macro[rng.random(n_users) < 0.2] = 0  # unassigned nodes contribute nothing
    item_macro[rng.random(n_items) < 0.2] = 0
    return scores, user_macro, item_macro


def to_frames(spark, scores, user_macro, item_macro):
    us, its = np.nonzero(scores)
    pairs = [(int(u) + 1, int(i) + 1, 1, 1, float(scores[u, i])) for u, i in zip(us, its, strict=True)]
    ps = spark.createDataFrame(pairs, "user_id long, item_id long, mask int, rho int, score double")
    rows = [("user", u + 1, int(m), 0.0) for u, m in enumerate(user_macro) if m > 0]
    rows += [("item", i + 1, int(m), 0.0) for i, m in enumerate(item_macro) if m > 0]
    asg = spark.createDataFrame(rows, "side string, node_id long, macro_id int, distance float")
    return ps, asg


def one_hot(macros: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(macros), k))
    for n, m in enumerate(macros):
        if m > 0:
            out[n, m - 1] = 1.0
    return out


def oracle(scores, user_macro, item_macro, hops: int, binary: bool) -> dict:
    s = sp.csr_matrix((scores > 0).astype(float) if binary else scores)
    c_u, c_i = one_hot(user_macro, K_U), one_hot(item_macro, K_I)
    users, items = s @ c_i, s.T @ c_u
    out = {("user", 1): users, ("item", 1): items}
    for h in range(2, hops + 1):
        users, items = s @ items, s.T @ users
        out[("user", h)], out[("item", h)] = users, items
    return out


@pytest.mark.parametrize(("edge_matrix", "seed"), [("score", 1), ("binary", 2)])
def test_edges_match_scipy_products_for_three_hops(spark, edge_matrix, seed):
    scores, um, im = random_graph(seed)
    ps, asg = to_frames(spark, scores, um, im)
    rows = macro_edges(ps, asg, K_U, K_I, hops=3, edge_matrix=edge_matrix).collect()
    expected = oracle(scores, um, im, 3, edge_matrix == "binary")
    got = {key: np.zeros_like(mat) for key, mat in expected.items()}
    for r in rows:
        assert len(r.weights) == edge_width(r.side, r.hop, K_U, K_I)
        got[(r.side, r.hop)][r.node_id - 1] = r.weights
    for key, mat in expected.items():
        np.testing.assert_allclose(got[key], mat, rtol=1e-5, err_msg=str(key))
    # a node has a row in a hop exactly when its oracle row is non-zero
    nonzero_rows = sum(int((np.abs(m).sum(axis=1) > 0).sum()) for m in expected.values())
    assert len(rows) == nonzero_rows
    # E2_U really is S S^T C_U (the spec's formula, not just our recursion)
    s = sp.csr_matrix((scores > 0).astype(float) if edge_matrix == "binary" else scores)
    np.testing.assert_allclose(got[("user", 2)], s @ (s.T @ one_hot(um, K_U)), rtol=1e-5)


def test_hot_item_keeps_intermediates_linear_in_nnz(spark):
    rng = np.random.default_rng(7)
    n_users, n_items = 150, 60
    pairs = set()
    hot_users = rng.choice(n_users, size=90, replace=False)
    pairs |= {(int(u), 0) for u in hot_users}  # item 0 holds 30% of all pairs
    while len(pairs) < 300:
        pairs.add((int(rng.integers(n_users)), int(rng.integers(1, n_items))))
    scores = np.zeros((n_users, n_items))
    for u, i in pairs:
        scores[u, i] = float(rng.integers(1, 16))
    um = rng.integers(1, K_U + 1, size=n_users)
    im = rng.integers(1, K_I + 1, size=n_items)
    ps, asg = to_frames(spark, scores, um, im)
    trace: dict = {}
    edges = macro_edges(ps, asg, K_U, K_I, hops=2, trace=trace)
    names = ["join_U1", "join_I1", "join_U2", "join_I2", "U2", "I2"]
    counted = None
    for name in names:
        df = trace[name].select(F.lit(name).alias("frame"))
        counted = df if counted is None else counted.unionByName(df)
    counts = {r.frame: r["count"] for r in counted.groupBy("frame").count().collect()}
    nnz, nodes = len(pairs), n_users + n_items
    paths_through_hot = len(hot_users) ** 2
    assert paths_through_hot > 10 * nnz  # enumerating 2-hop paths would be far bigger than nnz
    for name in names:
        assert counts[name] <= nnz + nodes, (name, counts[name], nnz)
    assert counts["join_U2"] == nnz and counts["join_I2"] == nnz  # one row per pair, never per path
    hot = [r.weights for r in edges.where("side = 'item' AND node_id = 1 AND hop = 2").collect()]
    expected = oracle(scores, um, im, 2, binary=False)[("item", 2)][0]
    np.testing.assert_allclose(hot[0], expected, rtol=1e-5)


def test_edges_reject_bad_options(spark):
    ps, asg = to_frames(spark, *random_graph(3))
    with pytest.raises(ValueError, match="edge_matrix"):
        macro_edges(ps, asg, K_U, K_I, edge_matrix="paths")
    with pytest.raises(ValueError, match="hops"):
        macro_edges(ps, asg, K_U, K_I, hops=0)
    bad = asg.withColumn("macro_id", F.when(F.col("side") == "item", 9).otherwise(F.col("macro_id")))
    with pytest.raises(Exception, match=r"item assignment has macro_id outside 1\.\.4: 9"):
        macro_edges(ps, bad, K_U, K_I, hops=1).collect()
