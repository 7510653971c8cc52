"""Preference weights (SPEC 4.3, Eq 8) against a numpy oracle; the neighbor cap bounds the 2-hop rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pyspark.sql import functions as F

from mgoe_spark.nodes.weights import capped_edges, gram_entries, preference_weights, two_hop_lists
from schemas.tables import NODE_WEIGHTS
from tests.oracles import dense_matrix, lower_quantile

SEED = 5


def oracle_weights(triples, side, *, b=None, q_low=0.25, q_high=0.75, w_high=2.0, w_low=0.5, users=None):
    """Eq 8 on dense S S^T / S^T S with the diagonal excluded; exact lower quantiles. Returns ids, A, w, b.

    ``users``: all user ids (a user without any triple is a zero row), default: those in ``triples``.
    """
    users = sorted(users or {u for u, _, _ in triples})
    items = sorted({i for _, i, _ in triples})
    s = dense_matrix(triples, users, items)
    ids, gram = (users, s @ s.T) if side == "user" else (items, s.T @ s)
    off = gram.copy()
    np.fill_diagonal(off, 0.0)
    if b is None:
        b = lower_quantile(off[off > 0], 0.5)
    a = np.where(off > b, off, 0.0).sum(axis=1)
    lo, hi = lower_quantile(a, q_low), lower_quantile(a, q_high)
    w = np.where(a > hi, w_high, np.where(a < lo, w_low, 1.0))
    return ids, a, w, b


def random_triples(rng, users, items, density):
    mask = rng.random((users, items)) < density
    mask[np.arange(users), rng.integers(0, items, users)] = True
    rho = rng.integers(1, 16, (users, items))  # beta = 1: integer scores, so every sum is exact
    return [(int(u + 1), int(i + 1), float(rho[u, i])) for u, i in zip(*np.nonzero(mask), strict=True)]


def to_df(spark, triples):
    return spark.createDataFrame(triples, "user_id long, item_id long, score double")


def collect(df):
    rows = df.collect()
    return {r.node_id: (r.strength, r.weight) for r in rows}, rows


@pytest.fixture(scope="module")
def small(spark):
    triples = random_triples(np.random.default_rng(2), users=24, items=18, density=0.2)
    return triples, to_df(spark, triples).cache()


@pytest.mark.parametrize("side", ["user", "item"])
def test_matches_numpy_oracle_when_cap_not_hit(small, side):
    triples, df = small
    ids, a, w, _ = oracle_weights(triples, side)
    got, rows = collect(preference_weights(df, side, seed=SEED, quantile_rel_error=0.0))
    assert sorted(got) == ids and {r.side for r in rows} == {side}
    np.testing.assert_array_equal([got[i][0] for i in ids], a)  # exact: integer scores
    np.testing.assert_array_equal([got[i][1] for i in ids], w)
    assert {1.0, 2.0, 0.5} <= set(w)  # all three weight classes occur, so the thresholds are exercised


def test_explicit_b_and_other_quantiles(small):
    triples, df = small
    ids, a, w, _ = oracle_weights(triples, "user", b=40.0, q_low=0.1, q_high=0.5, w_high=3.0, w_low=0.2)
    got, _ = collect(
        preference_weights(
            df, "user", seed=SEED, b=40.0, q_low=0.1, q_high=0.5, w_high=3.0, w_low=0.2, quantile_rel_error=0.0
        )
    )
    np.testing.assert_array_equal([got[i][0] for i in ids], a)
    np.testing.assert_array_equal([got[i][1] for i in ids], w)


def test_disabled_is_the_all_ones_ablation(small):
    triples, df = small
    out = preference_weights(df, "item", seed=SEED, enabled=False)
    assert out.columns == NODE_WEIGHTS.column_names
    got, _ = collect(out)
    assert sorted(got) == sorted({i for _, i, _ in triples})
    assert all(v == (0.0, 1.0) for v in got.values())


def hot_item_triples(rng, users=80, items=40, hot_share=0.3):
    """Item 1 is hot: it holds about ``hot_share`` of the events; the rest are spread thinly."""
    triples = {(u, 1): float(rng.integers(1, 16)) for u in range(1, users + 1)}
    n_other = int(users * (1 - hot_share) / hot_share)
    for _ in range(n_other):
        triples[(int(rng.integers(1, users + 1)), int(rng.integers(2, items + 1)))] = float(rng.integers(1, 16))
    return [(u, i, s) for (u, i), s in sorted(triples.items())]


def test_cap_bounds_two_hop_rows_for_a_hot_item(spark):
    triples = hot_item_triples(np.random.default_rng(4))
    deg = Counter(i for _, i, _ in triples)
    assert deg[1] / len(triples) >= 0.29  # the hot item has ~30% of the events
    cap = 10
    df = to_df(spark, triples).cache()

    edges = capped_edges(df, "user", cap, SEED)
    kept = Counter(r.mid for r in edges.select("mid").collect())
    assert kept == Counter({i: min(d, cap) for i, d in deg.items()})  # cap hit on the hot item only

    lists = two_hop_lists(df, "user", cap, SEED)
    assert lists.count() == len(edges.collect())  # one row per capped edge: O(nnz) rows ...
    n_pairs = lists.agg(F.sum(F.size("partners") - 1)).first()[0]  # ... holding the 2-hop paths j != v
    bound = sum(min(d, cap) ** 2 for d in deg.values())
    assert n_pairs == sum(min(d, cap) * (min(d, cap) - 1) for d in deg.values()) <= bound
    uncapped = sum(d * (d - 1) for d in deg.values())
    assert max(d for i, d in deg.items() if i != 1) <= cap  # only the hot item is capped ...
    assert uncapped - n_pairs == deg[1] * (deg[1] - 1) - cap * (cap - 1)  # ... 6320 of its paths become 90
    assert n_pairs < uncapped / 5

    # With the cap, A and w are Eq 8 exactly on the capped matrix S_D (the sampled edges).
    sampled = [(r.node, r.mid, r.score) for r in edges.collect()]
    all_users = {u for u, _, _ in triples}
    assert len({u for u, _, _ in sampled}) < len(all_users)  # some users lost their only (hot) edge: A = 0
    ids, a, w, _ = oracle_weights(sampled, "user", users=all_users)
    got, _ = collect(preference_weights(df, "user", seed=SEED, neighbor_cap=cap, quantile_rel_error=0.0))
    assert sorted(got) == ids  # every user gets a row, sampled or not
    np.testing.assert_array_equal([got[i][0] for i in ids], a)
    np.testing.assert_array_equal([got[i][1] for i in ids], w)

    # Seeded: the same seed keeps the same sample; another seed keeps another one.
    again = {(r.node, r.mid) for r in capped_edges(df, "user", cap, SEED).collect()}
    other = {(r.node, r.mid) for r in capped_edges(df, "user", cap, SEED + 1).collect()}
    assert again == {(u, i) for u, i, _ in sampled} and other != again


def test_approximate_quantiles_stay_close(small):
    """The default rel error (1e-3) gives the exact answer at this size; a coarse one stays within rank error."""
    triples, df = small
    ids, a, w, _ = oracle_weights(triples, "user")
    got, _ = collect(preference_weights(df, "user", seed=SEED, quantile_rel_error=1e-3))
    np.testing.assert_array_equal([got[i][1] for i in ids], w)


def test_bad_arguments_are_clear_errors(small):
    _, df = small
    with pytest.raises(ValueError, match="q_low"):
        preference_weights(df, "user", seed=1, q_low=0.8, q_high=0.2)
    with pytest.raises(ValueError, match="neighbor_cap"):
        preference_weights(df, "user", seed=1, neighbor_cap=0)
    with pytest.raises(ValueError, match="quantile_rel_error"):
        preference_weights(df, "user", seed=1, quantile_rel_error=1.5)
    with pytest.raises(ValueError, match="side"):
        preference_weights(df, "node", seed=1)


def _dense_gram_rows(triples):
    """[(side, {node: off-diagonal entries of its dense S S^T / S^T S row, in partner order})] (the oracle)."""
    users = sorted({u for u, _, _ in triples})
    items = sorted({i for _, i, _ in triples})
    s = dense_matrix(triples, users, items)
    out = []
    for side, ids, gram in (("user", users, s @ s.T), ("item", items, s.T @ s)):
        np.fill_diagonal(gram, 0.0)
        expected: dict[int, list[float]] = {}
        for a, b in zip(*np.nonzero(gram), strict=True):  # row-major: partner order within a node
            expected.setdefault(ids[a], []).append(gram[a, b])
        out.append((side, expected))
    return out


def _rows_by_node(rows) -> dict[int, list[float]]:
    got: dict[int, list[float]] = {}
    for r in rows:
        got.setdefault(r.node, []).append(r.x)
    return got


def test_gram_entries_match_the_dense_product_whatever_the_partitioning(spark, small):
    """The numpy pass sums each node's paths per partner exactly as S S^T does, however the rows arrive."""
    triples, df = small
    for side, expected in _dense_gram_rows(triples):
        for parts in (1, 7):
            with_parts = df.repartition(parts)
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")  # nodes span batches
            try:
                got = gram_entries(with_parts, side, 1000, SEED).collect()
            finally:
                spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
            assert _rows_by_node(got) == expected


def test_sampled_median_is_within_its_rank_error_and_seeded(spark):
    """b from a sample of ~(0.5/eps)^2 entries: its rank among all entries is within a few eps of 1/2."""
    from mgoe_spark.nodes.weights import _accuracy, _median_threshold

    rng = np.random.default_rng(9)
    data = [(node, rng.lognormal(0, 1, 60).tolist()) for node in range(1, 301)]  # 18,000 entries
    rows = spark.createDataFrame(data, "node long, x array<double>")
    values = np.sort(np.concatenate([x for _, x in data]))
    eps = 0.02  # sample of ~625 entries, rank std 0.02
    b = _median_threshold(rows, eps, _accuracy(eps), seed=3)
    rank = np.searchsorted(values, b, side="right") / len(values)
    assert abs(rank - 0.5) < 4 * eps + 1 / eps / len(values)
    assert b == _median_threshold(rows, eps, _accuracy(eps), seed=3)
    exact = _median_threshold(rows, 0.0, _accuracy(0.0), seed=3)
    assert exact == lower_quantile(values, 0.5)


def test_gram_rows_of_a_node_spread_over_tasks_match_the_dense_product(spark, small):
    """A node whose paths exceed paths_per_task is folded in several buckets and merged: same entries."""
    triples, df = small
    for side, expected in _dense_gram_rows(triples):
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
        try:
            spread = gram_entries(df.repartition(3), side, 1000, SEED, paths_per_task=4).collect()
        finally:
            spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
        assert _rows_by_node(spread) == expected
