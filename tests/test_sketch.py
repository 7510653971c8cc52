"""Sketched node vectors (SPEC 4.2) against exact numpy rows of S S^T and S^T S."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2, kstest, norm

from mgoe_spark.core.arrow_sums import segment_sums
from mgoe_spark.nodes.sketch import omega_matrix, omega_rows, sketch_side
from schemas.tables import NODE_VECTORS
from tests.oracles import adjusted_rand_index, dense_matrix, kmeans

SEED = 11


def random_scores(rng, users: int, items: int, density: float):
    """Random S as (user, item, score) triples with ids 1..N and Box-Cox(beta=0.5)-like real scores."""
    mask = rng.random((users, items)) < density
    mask[np.arange(users), rng.integers(0, items, users)] = True  # every user has a pair
    mask[rng.integers(0, users, items), np.arange(items)] = True  # every item has a pair
    rho = rng.integers(1, 16, (users, items))
    score = 2 * (np.sqrt(rho + 1.0) - 1)  # beta = 0.5
    return [(int(u + 1), int(i + 1), float(score[u, i])) for u, i in zip(*np.nonzero(mask), strict=True)]


def to_df(spark, triples):
    return spark.createDataFrame(triples, "user_id long, item_id long, score double")


def collect_vectors(df) -> dict[int, np.ndarray]:
    return {r.node_id: np.array(r.vector, dtype=np.float64) for r in df.collect()}


def exact_gram(triples, side: str):
    users = sorted({u for u, _, _ in triples})
    items = sorted({i for _, i, _ in triples})
    s = dense_matrix(triples, users, items)
    return (users, s @ s.T) if side == "user" else (items, s.T @ s)


@pytest.fixture(scope="module")
def small(spark):
    triples = random_scores(np.random.default_rng(3), users=18, items=22, density=0.25)
    return triples, to_df(spark, triples).cache()


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("side", ["user", "item"])
def test_sketch_equals_exact_product_with_same_omega(spark, small, side, distribution):
    """(a) Z = S_side Omega exactly (float32 output), Omega materialized from the same hashes."""
    triples, df = small
    dim = 16
    ids, gram = exact_gram(triples, side)
    omega_df = omega_rows(spark.createDataFrame([(i,) for i in ids], "node_id long"), dim, SEED, side, distribution)
    omega_map = {r.node_id: np.array(r.omega) for r in omega_df.collect()}
    omega = np.stack([omega_map[i] for i in ids])
    assert omega.shape == (len(ids), dim)
    assert np.array_equal(omega, omega_matrix(np.array(ids), dim, SEED, side, distribution))
    if distribution == "rademacher":
        assert set(np.unique(np.abs(omega)).round(12)) == {round(dim**-0.5, 12)}
    expected = gram @ omega  # = S (S^T Omega) for users, S^T (S Omega) for items

    raw = collect_vectors(sketch_side(df, side, dim, SEED, normalize=False, distribution=distribution))
    assert sorted(raw) == ids
    got = np.stack([raw[i] for i in ids])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())

    normed = collect_vectors(sketch_side(df, side, dim, SEED, normalize=True, distribution=distribution))
    got_n = np.stack([normed[i] for i in ids])
    np.testing.assert_allclose(got_n, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_output_schema_and_determinism(spark, small):
    _, df = small
    a = sketch_side(df, "user", 8, SEED)
    assert a.columns == NODE_VECTORS.column_names
    assert a.schema["vector"].dataType.simpleString() == "array<float>"
    assert {r.side for r in a.collect()} == {"user"}
    first, again = collect_vectors(a), collect_vectors(sketch_side(df, "user", 8, SEED))
    other = collect_vectors(sketch_side(df, "user", 8, SEED + 1))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.allclose(first[k], other[k]) for k in first)
    assert all(len(v) == 8 for v in first.values())


def test_only_returns_the_same_rows_for_the_wanted_nodes(spark, small):
    _, df = small
    full = collect_vectors(sketch_side(df, "item", 8, SEED))
    wanted = sorted(full)[::3]
    only = spark.createDataFrame([(int(i),) for i in wanted], "node_id long")
    part = collect_vectors(sketch_side(df, "item", 8, SEED, only=only))
    assert sorted(part) == wanted
    assert all(np.array_equal(part[k], full[k]) for k in wanted)  # Y still sums over all of S


@pytest.mark.parametrize("side", ["user", "item"])
def test_bitwise_identical_whatever_the_partitioning_and_batch_size(spark, small, side):
    """Each key's sum is one sequential fold in sorted order, so other partition counts, tiny Arrow batches
    (keys spanning batches: the carry path) and a shuffled input order give the very same bits."""
    triples, df = small
    base = collect_vectors(sketch_side(df, side, 8, SEED, normalize=False))
    conf = {"spark.sql.shuffle.partitions": "3", "spark.sql.execution.arrow.maxRecordsPerBatch": "7"}
    old = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        shuffled = [triples[i] for i in np.random.default_rng(1).permutation(len(triples))]
        got = collect_vectors(sketch_side(to_df(spark, shuffled).repartition(5), side, 8, SEED, normalize=False))
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)
    assert sorted(got) == sorted(base)
    assert all(np.array_equal(got[k], base[k]) for k in base)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 6), min_size=1, max_size=40).map(sorted),
    cuts=st.lists(st.integers(1, 39), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_segment_sums_is_the_sequential_fold_per_key_whatever_the_batches(keys, cuts, seed):
    """segment_sums over any split of a sorted stream = per key, 0 + w_1 x_1 + w_2 x_2 + ... in stream
    order, bit for bit; every key exactly once, in order."""
    rng = np.random.default_rng(seed)
    n, dim = len(keys), 3
    w, x = rng.normal(size=n), rng.normal(size=(n, dim)) * 10.0 ** rng.integers(-6, 6, (n, 1))
    bounds = [0, *sorted({c for c in cuts if c < n}), n]
    batches = [
        pa.RecordBatch.from_arrays(
            [pa.array(keys[lo:hi], pa.int64()), pa.array(w[lo:hi]), pa.array(np.arange(lo, hi))],
            names=["k", "w", "row"],
        )
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    out = list(segment_sums(iter(batches), "k", "w", lambda b: x[b.column("row").to_numpy()]))
    got_keys = np.concatenate([k for k, _ in out])
    got = np.concatenate([s for _, s in out])
    assert got_keys.tolist() == sorted(set(keys))
    for key, row in zip(got_keys, got, strict=True):
        want = np.zeros(dim)
        for j in np.flatnonzero(np.array(keys) == key):
            want = want + w[j] * x[j]
        assert np.array_equal(row, want)


def test_segment_sums_rejects_an_unsorted_stream():
    batch = pa.RecordBatch.from_arrays([pa.array([2, 1]), pa.array([1.0, 1.0])], names=["k", "w"])
    with pytest.raises(RuntimeError, match="not sorted"):
        list(segment_sums(iter([batch]), "k", "w", lambda b: np.ones((b.num_rows, 2))))


def test_pairwise_distances_within_jl_tolerance(spark):
    """(b) Gaussian Omega: for a fixed pair, ||Z_u - Z_v||^2 / ||x_u - x_v||^2 ~ chi2(r) / r exactly.

    Tolerance: the two-sided chi2(r)/r quantiles at delta / (2 P) for P pairs (union bound), delta = 1e-3,
    i.e. all P ratios inside with probability >= 99.9%. For r = 64, P = 435 that is [0.37, 2.07] (eps shrinks
    like sqrt(log(P / delta) / r), the JL scaling).
    """
    dim = 64
    triples = random_scores(np.random.default_rng(5), users=30, items=25, density=0.2)
    users, gram = exact_gram(triples, "user")
    z = collect_vectors(sketch_side(to_df(spark, triples), "user", dim, SEED, normalize=False))
    zs = np.stack([z[u] for u in users])
    pairs = list(itertools.combinations(range(len(users)), 2))
    exact = np.array([np.sum((gram[a] - gram[b]) ** 2) for a, b in pairs])
    sketched = np.array([np.sum((zs[a] - zs[b]) ** 2) for a, b in pairs])
    assert np.all(exact > 0)
    ratio = sketched / exact
    delta = 1e-3
    lo = chi2.ppf(delta / (2 * len(pairs)), dim) / dim
    hi = chi2.ppf(1 - delta / (2 * len(pairs)), dim) / dim
    assert lo <= ratio.min() and ratio.max() <= hi, (lo, ratio.min(), ratio.max(), hi)
    # Unbiased on average (mean of P correlated chi2/r ratios; 4 sd of one ratio over sqrt of ~n pairs).
    assert abs(ratio.mean() - 1) < 4 * np.sqrt(2 / dim) / np.sqrt(len(users))


def planted_scores(rng, groups: int = 3, users_per: int = 20, items_per: int = 15):
    """Users of group g interact mostly with items of group g (p=0.45) and rarely elsewhere (p=0.04)."""
    ug = np.repeat(np.arange(groups), users_per)
    ig = np.repeat(np.arange(groups), items_per)
    p = np.where(ug[:, None] == ig[None, :], 0.45, 0.04)
    mask = rng.random(p.shape) < p
    rho = rng.integers(1, 16, p.shape)
    triples = [(int(u + 1), int(i + 1), float(rho[u, i])) for u, i in zip(*np.nonzero(mask), strict=True)]
    return triples, ug, ig


@pytest.mark.parametrize("side", ["user", "item"])
def test_planted_clusters_from_sketch_agree_with_exact_rows(spark, side):
    """(c) k-means on the (normalized) sketch agrees with k-means on the exact normalized rows: ARI >= 0.9."""
    triples, ug, ig = planted_scores(np.random.default_rng(7))
    ids, gram = exact_gram(triples, side)
    truth = (ug if side == "user" else ig)[np.array(ids) - 1]
    exact_rows = gram / np.linalg.norm(gram, axis=1, keepdims=True)
    z = collect_vectors(sketch_side(to_df(spark, triples), side, 64, SEED, normalize=True))
    zs = np.stack([z[i] for i in ids])
    k = 3
    exact_labels = kmeans(exact_rows, k, seed=0)
    sketch_labels = kmeans(zs, k, seed=0)
    assert adjusted_rand_index(exact_labels, truth) >= 0.9  # the planted structure is there to find
    assert adjusted_rand_index(sketch_labels, exact_labels) >= 0.9


def test_bad_arguments_are_clear_errors(spark, small):
    _, df = small
    with pytest.raises(ValueError, match="sketch.dim"):
        sketch_side(df, "user", 0, SEED)
    with pytest.raises(ValueError, match="distribution"):
        sketch_side(df, "user", 4, SEED, distribution="uniform")
    with pytest.raises(ValueError, match="side"):
        sketch_side(df, "users", 4, SEED)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_omega_moments_and_distribution(distribution):
    """The hashed Omega over 20000 consecutive node ids: mean 0, variance 1/r, uncorrelated columns, and
    N(0, 1/r) marginals for gaussian (KS test per column, Bonferroni over the columns at level 1e-3)."""
    dim, n = 7, 20_000
    omega = omega_matrix(np.arange(1, n + 1), dim, SEED, "user", distribution)
    assert omega.shape == (n, dim) and omega.dtype == np.float64
    z = omega * np.sqrt(dim)
    assert np.all(np.abs(z.mean(0)) < 5 / np.sqrt(n))  # 5 standard errors
    assert np.all(np.abs(z.var(0) - 1) < 5 * np.sqrt(2 / n))
    corr = np.corrcoef(z.T)[np.triu_indices(dim, 1)]
    assert np.all(np.abs(corr) < 5 / np.sqrt(n))
    if distribution == "gaussian":
        pvalues = [kstest(omega[:, c], norm(scale=dim**-0.5).cdf).pvalue for c in range(dim)]
        assert min(pvalues) > 1e-3 / dim, pvalues
    else:
        assert set(np.unique(z)) == {-1.0, 1.0}


def test_omega_is_a_pure_function_of_seed_side_id_and_column():
    ids = np.array([5, 1, 2**40, 3, 5])
    full = omega_matrix(ids, 9, SEED, "item")
    alone = np.concatenate([omega_matrix(ids[i : i + 1], 9, SEED, "item") for i in range(len(ids))])
    assert np.array_equal(full, alone) and np.array_equal(full[0], full[4])
    # a longer row starts with the shorter one (column c depends on c only), odd dim included
    np.testing.assert_allclose(omega_matrix(ids, 12, SEED, "item")[:, :9] * np.sqrt(12 / 9), full, rtol=1e-12)
    for changed in (omega_matrix(ids, 9, SEED + 1, "item"), omega_matrix(ids, 9, SEED, "user")):
        assert not np.any(np.isclose(changed, full))
    with pytest.raises(ValueError, match="sketch.dim"):
        omega_matrix(ids, 0, SEED, "item")
