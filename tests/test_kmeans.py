"""Weighted k-means with FAISS on partitions (SPEC 4.4): numpy oracles, planted groups, errors, persistence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgoe_spark.nodes.kmeans import (
    WeightedKMeans,
    hash_uniform,
    kmeans_plusplus,
    match_to_previous,
    minibatch_mask,
)
from schemas.tables import CENTROIDS, KMEANS_STATS
from tests.oracles import adjusted_rand_index

NODES = "node_id long, vector array<float>, weight double"


def nodes_df(spark, x: np.ndarray, w: np.ndarray, ids: np.ndarray | None = None, partitions: int = 3):
    ids = np.arange(1, len(x) + 1) if ids is None else ids
    rows = [(int(i), [float(v) for v in row], float(wt)) for i, row, wt in zip(ids, x, w, strict=True)]
    return spark.createDataFrame(rows, NODES).repartition(partitions)


def planted(seed: int, k: int = 4, r: int = 6, per: int = 60, spread: float = 6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, spread, (k, r))
    labels = np.repeat(np.arange(k), per)
    x = (centers[labels] + rng.normal(0.0, 1.0, (len(labels), r))).astype(np.float32)
    w = rng.choice([0.5, 1.0, 2.0], size=len(labels))
    return x, w, labels, centers


def assignments(model: WeightedKMeans, df) -> dict[int, tuple[int, float]]:
    return {row["node_id"]: (row["macro_id"], row["distance"]) for row in model.assign(df).collect()}


def weighted_lloyd(x, w, centroids, iters):
    """numpy oracle: Lloyd steps for Eq 9 (argmin assignment, weighted mean update)."""
    c = centroids.astype(np.float64).copy()
    x = x.astype(np.float64)
    for _ in range(iters):
        lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            m = lab == j
            if w[m].sum() > 0:
                c[j] = (w[m, None] * x[m]).sum(0) / w[m].sum()
    return c


def weighted_inertia(x, w, c):
    d = ((x.astype(np.float64)[:, None, :] - c[None].astype(np.float64)) ** 2).sum(-1)
    return float((w * d.min(1)).sum())


# ---- pure helpers -----------------------------------------------------------------------------------------


def brute_ari(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    same_a = np.array([a[i] == a[j] for i, j in pairs])
    same_b = np.array([b[i] == b[j] for i, j in pairs])
    n11 = (same_a & same_b).sum()
    expected = same_a.sum() * same_b.sum() / len(pairs)
    top = (same_a.sum() + same_b.sum()) / 2
    return 1.0 if top == expected else (n11 - expected) / (top - expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=2, max_size=25))
def test_ari_matches_pair_counting(pairs):
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    assert adjusted_rand_index(a, b) == pytest.approx(brute_ari(a, b), abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 0.95), st.integers(0, 50))
def test_minibatch_mask_fraction_and_rotation(fraction, iteration):
    u = hash_uniform(np.arange(20_000), seed=3, salt=1)
    mask = minibatch_mask(u, iteration, fraction)
    assert abs(mask.mean() - fraction) < 0.02
    assert not np.array_equal(mask, minibatch_mask(u, iteration + 1, fraction))


def test_hash_uniform_is_keyed_by_id_and_seed():
    ids = np.array([5, 1, 9, 5], dtype=np.int64)
    u = hash_uniform(ids, seed=7)
    assert u[0] == u[3] and len(set(u[:3])) == 3 and ((0 <= u) & (u < 1)).all()
    np.testing.assert_array_equal(hash_uniform(ids[::-1], seed=7), u[::-1])  # order/partition independent
    assert not np.array_equal(hash_uniform(ids, seed=8), u)


def test_kmeans_plusplus_picks_distinct_sample_points_and_respects_zero_weights():
    x = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], dtype=np.float64)
    w = np.array([1, 1, 1, 1, 0.0])
    c = kmeans_plusplus(x, w, 4, seed=1)
    got = {tuple(row) for row in c}
    assert got == {(0, 0), (10, 0), (0, 10), (10, 10)}  # the zero-weight point is never drawn


def test_match_to_previous_recovers_a_permutation():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(6, 4))
    perm = rng.permutation(6)
    new = old[perm] + rng.normal(0, 0.01, size=(6, 4))
    p = match_to_previous(new, old)
    np.testing.assert_allclose(new[p], old, atol=0.05)


# ---- Spark fits -------------------------------------------------------------------------------------------


def test_full_mode_matches_numpy_weighted_lloyd_same_init(spark):
    x, w, _, centers = planted(1, k=4, spread=2.0)  # overlapping groups: assignments change over iterations
    init = x[[0, 1, 2, 3]].astype(np.float64)
    df = nodes_df(spark, x, w)
    km = WeightedKMeans(4, mode="full", max_iter=5, tol=0.0, seed=0).fit(df, init_centroids=init)
    oracle = weighted_lloyd(x, w, init, km.n_iter)
    np.testing.assert_allclose(km.centroids, oracle, rtol=1e-4, atol=1e-4)
    ours, ref = weighted_inertia(x, w, km.centroids), weighted_inertia(x, w, oracle)
    assert abs(ours - ref) <= 0.01 * ref
    assert km.inertia == pytest.approx(ours, rel=1e-5)  # the final pass reports the all-node objective
    assert [s.iteration for s in km.stats] == list(range(1, km.n_iter + 1))
    assert all(sum(s.sizes) == len(x) for s in km.stats)


def test_minibatch_updates_follow_weighted_sculley_rates(spark):
    x, w, _, _ = planted(2, k=3, per=50)
    ids = np.arange(1, len(x) + 1) * 7
    init = x[[0, 50, 100]].astype(np.float64)
    df = nodes_df(spark, x, w, ids=ids)
    km = WeightedKMeans(3, mode="minibatch", batch_fraction=0.3, max_iter=3, tol=0.0, seed=11)
    km.fit(df, init_centroids=init)
    # oracle: same hash-chosen batches; v_c += W_c; mu_c += (S_c - W_c mu_c) / v_c
    c, v = init.copy(), np.zeros(3)
    u = hash_uniform(ids, 11, salt=1)
    for it in range(1, 4):
        m = minibatch_mask(u, it, 0.3)
        xb, wb = x[m].astype(np.float64), w[m]
        lab = ((xb[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(3):
            wj = wb[lab == j].sum()
            if wj > 0:
                v[j] += wj
                c[j] += ((wb[lab == j, None] * xb[lab == j]).sum(0) - wj * c[j]) / v[j]
        assert km.stats[it - 1].sizes == np.bincount(lab, minlength=3).tolist()
    np.testing.assert_allclose(km.centroids, c, rtol=1e-4, atol=1e-4)


def test_weights_move_centroids_to_the_weighted_mean(spark):
    # two far-apart pairs; weights 1 and 3 pull each centroid 3/4 of the way (Eq 9), not to the midpoint
    x = np.array([[0, 0], [1, 0], [100, 0], [100, 2]], dtype=np.float32)
    w = np.array([1.0, 3.0, 3.0, 1.0])
    km = WeightedKMeans(2, mode="full", max_iter=5, seed=0).fit(nodes_df(spark, x, w, partitions=2))
    got = km.centroids[np.argsort(km.centroids[:, 0])]
    np.testing.assert_allclose(got, [[0.75, 0.0], [100.0, 0.5]], rtol=1e-6)
    assert sorted(km.weights.tolist()) == [4.0, 4.0] and sorted(km.sizes.tolist()) == [2, 2]
    assert km.inertia == pytest.approx(1 * 0.75**2 + 3 * 0.25**2 + 3 * 0.5**2 + 1 * 1.5**2)


def test_planted_groups_recovered_and_same_seed_is_deterministic(spark):
    x, w, labels, _ = planted(3, k=5, per=50)
    df = nodes_df(spark, x, w)
    a = WeightedKMeans(5, mode="minibatch", batch_fraction=0.5, max_iter=6, seed=5).fit(df)
    got_a = assignments(a, df)
    pred = np.array([got_a[i + 1][0] for i in range(len(x))])
    assert adjusted_rand_index(labels, pred) >= 0.9
    assert set(pred) <= set(range(1, 6))
    # same seed, same data, other partitioning: same centroids (to float rounding), same assignments
    b = WeightedKMeans(5, mode="minibatch", batch_fraction=0.5, max_iter=6, seed=5).fit(df.repartition(2))
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-5, atol=1e-5)
    assert {i: m for i, (m, _) in assignments(b, df).items()} == {i: m for i, (m, _) in got_a.items()}


def test_same_seed_identical_full_run(spark):
    x, w, _, _ = planted(4, k=3, per=40)
    df = nodes_df(spark, x, w)
    runs = [WeightedKMeans(3, mode="full", max_iter=4, seed=9).fit(df) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].centroids, runs[1].centroids)
    assert assignments(runs[0], df) == assignments(runs[1], df)
    assert runs[0].version == runs[1].version


def test_bad_input_gives_clear_errors(spark):
    x, w, _, _ = planted(5, k=2, per=3)
    with pytest.raises(ValueError, match=r"k=7 is larger than the number of nodes \(6\)"):
        WeightedKMeans(7, mode="full").fit(nodes_df(spark, x, w))
    with pytest.raises(ValueError, match="all 6 node vectors are zero"):
        WeightedKMeans(2, mode="full").fit(nodes_df(spark, np.zeros_like(x), w))
    bad_w = w.copy()
    bad_w[2] = np.nan
    with pytest.raises(ValueError, match=r"1 node weight\(s\) are NaN.*node 3"):
        WeightedKMeans(2, mode="full").fit(nodes_df(spark, x, bad_w))
    rows = [(1, [1.0, 2.0], 1.0), (2, [1.0], 1.0), (3, [0.0, 1.0], 1.0)]
    with pytest.raises(ValueError, match=r"not of length r=2 \(e.g. node 2\)"):
        WeightedKMeans(2, mode="full").fit(spark.createDataFrame(rows, NODES), r=2)
    with pytest.raises(ValueError, match="needs a 'weight' column"):
        WeightedKMeans(2).fit(spark.createDataFrame([(1, [1.0])], "node_id long, vector array<float>"))
    with pytest.raises(ValueError, match="not fitted"):
        WeightedKMeans(2).assign(nodes_df(spark, x, w))


def test_single_node(spark):
    df = spark.createDataFrame([(42, [3.0, -1.0], 2.0)], NODES)
    km = WeightedKMeans(1, mode="minibatch", seed=0).fit(df)
    np.testing.assert_array_equal(km.centroids, [[3.0, -1.0]])
    assert assignments(km, df) == {42: (1, 0.0)}
    with pytest.raises(ValueError, match=r"k=2 is larger than the number of nodes \(1\)"):
        WeightedKMeans(2).fit(df)


def test_save_load_cold_start_and_tables(spark, tmp_path):
    x, w, _, centers = planted(6, k=3, per=40)
    df = nodes_df(spark, x, w)
    km = WeightedKMeans(3, mode="full", max_iter=5, seed=2).fit(df)
    loaded = WeightedKMeans.load(km.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.centroids, km.centroids)
    assert loaded.version == km.version and loaded.k == 3 and loaded.r == 6
    # cold start: unseen nodes get the nearest centroid's id, the same from the original and the loaded model
    rng = np.random.default_rng(60)
    new_x = (centers[rng.integers(0, 3, 30)] + rng.normal(0, 1, (30, 6))).astype(np.float32)
    new_df = nodes_df(spark, new_x, np.ones(30), ids=np.arange(1000, 1030))
    got = assignments(loaded, new_df)
    assert got == assignments(km, new_df)
    d = ((new_x[:, None, :].astype(np.float64) - km.centroids[None].astype(np.float64)) ** 2).sum(-1)
    assert [got[1000 + i][0] for i in range(30)] == (d.argmin(1) + 1).tolist()
    np.testing.assert_allclose([got[1000 + i][1] for i in range(30)], d.min(1), rtol=1e-4, atol=1e-4)
    # CENTROIDS / KMEANS_STATS rows conform to the contracts; the model can be rebuilt from CENTROIDS rows
    cdf = km.centroids_frame(spark, "user", run_date="2026-11-23")
    assert cdf.schema == CENTROIDS.spark(with_partition=False)
    rows = cdf.collect()
    assert [r["macro_id"] for r in rows] == [1, 2, 3] and rows[0]["version"] == f"2026-11-23-{km.version}"
    assert sum(r["size"] for r in rows) == len(x)
    rebuilt = WeightedKMeans.from_centroid_rows(rows)
    np.testing.assert_array_equal(rebuilt.centroids, km.centroids)
    sdf = km.stats_frame(spark, "user")
    assert sdf.schema == KMEANS_STATS.spark(with_partition=False) and sdf.count() == km.n_iter
    with pytest.raises(ValueError, match="no saved k-means model"):
        WeightedKMeans.load(tmp_path / "missing")


def test_warm_start_keeps_macro_ids_stable_on_shifted_data(spark):
    x, w, labels, _ = planted(7, k=4, per=40)
    df = nodes_df(spark, x, w)
    old = WeightedKMeans(4, mode="full", max_iter=6, seed=3).fit(df)
    old_ids = {i: m for i, (m, _) in assignments(old, df).items()}
    # newer data: every node drifts a little, plus a small global translation; different seed and ids
    rng = np.random.default_rng(70)
    x2 = (x + rng.normal(0, 0.3, x.shape) + 0.5).astype(np.float32)
    df2 = nodes_df(spark, x2, w)
    new = WeightedKMeans(4, mode="minibatch", batch_fraction=0.5, max_iter=5, seed=99).fit(df2, warm_start=old)
    new_ids = {i: m for i, (m, _) in assignments(new, df2).items()}
    same = np.mean([old_ids[i] == new_ids[i] for i in old_ids])
    assert same >= 0.95
    # macro m's new centroid is the one closest to old macro m
    d = ((new.centroids[:, None, :] - old.centroids[None]) ** 2).sum(-1)
    assert (d.argmin(0) == np.arange(4)).all()
    # a cold (non-warm) fit with another seed lands on a permutation; matching restores the old ids
    cold = WeightedKMeans(4, mode="full", max_iter=6, seed=1234).fit(df2)
    perm = match_to_previous(cold.centroids, old.centroids)
    np.testing.assert_allclose(cold.centroids[perm], new.centroids, atol=0.3)


def test_empty_cluster_is_reseeded_and_reported(spark):
    x, w, labels, _ = planted(8, k=3, per=40)
    df = nodes_df(spark, x, w)
    # the third start is far from every node: it gets no weight in the first step and must be re-seeded
    init = np.vstack([x[0], x[40], np.full(6, 1e3)]).astype(np.float64)
    km = WeightedKMeans(3, mode="full", max_iter=6, seed=0).fit(df, init_centroids=init)
    assert km.stats[0].reseeded == 1 and km.stats[0].sizes[2] == 0
    assert km.reseeded_total >= 1 and (km.sizes > 0).all()
    pred = np.array([m for _, (m, _) in sorted(assignments(km, df).items())])
    assert adjusted_rand_index(labels, pred) >= 0.9


def test_from_config_uses_the_kmeans_section(test_config):
    s = test_config.kmeans
    km = WeightedKMeans.from_config(s, k=s.k_user, seed=test_config.sub_seed("kmeans:user"))
    assert (km.k, km.mode, km.max_iter, km.tol, km.batch_fraction) == (
        s.k_user,
        s.mode,
        s.max_iter,
        s.tol,
        s.batch_fraction,
    )
    assert km.block_rows == s.block_rows and km.seed == test_config.sub_seed("kmeans:user")


@pytest.mark.parametrize("mode", ["full", "minibatch"])
def test_resident_and_jobs_engines_give_identical_fits(spark, mode):
    x, w, _, _ = planted(9, k=3, per=40)
    df = nodes_df(spark, x, w, partitions=2)  # 2 partitions = the 2 task slots: both engines see the same blocks
    # block_rows=16: several numpy blocks per partition, as on real data
    params = dict(mode=mode, max_iter=4, batch_fraction=0.5, tol=0.0, patience=10, seed=4, block_rows=16)
    jobs = WeightedKMeans(3, engine="jobs", **params).fit(df)
    resident = WeightedKMeans(3, engine="resident", **params).fit(df)
    assert (resident.engine_used, jobs.engine_used) == ("resident", "jobs")
    np.testing.assert_array_equal(resident.centroids, jobs.centroids)
    assert [vars(s) for s in resident.stats] == [vars(s) for s in jobs.stats]
    assert resident.inertia == jobs.inertia and resident.n_iter == jobs.n_iter == 4
    assert assignments(resident, df) == assignments(jobs, df)


def test_plateau_fires_after_patience_steps_without_relative_improvement():
    from mgoe_spark.nodes.kmeans.loop import Plateau

    smooth = Plateau(alpha=0.5, tol=0.01, patience=2)
    smooth.step(20.0, 2.0)  # per unit weight: 10
    smooth.step(12.0, 2.0)  # 6: EWA 0.5 * 10 + 0.5 * 6
    assert smooth.ewa == 8.0
    p = Plateau(alpha=1.0, tol=0.01, patience=2)  # no smoothing: the per-unit-weight inertia itself
    # 10 -> 9 is a 10% drop (best 9); 8.95 and 8.94 are less than 1% below 9: stale twice, stop
    assert [p.step(v, 1.0) for v in (10.0, 9.0, 8.95, 8.94)] == [False, False, False, True]
    assert p.best == 9.0


def test_both_modes_stop_before_max_iter_and_say_why(spark):
    x, w, _, _ = planted(11, k=4, per=50)
    df = nodes_df(spark, x, w, partitions=2)
    full = WeightedKMeans(4, mode="full", max_iter=40, tol=1e-4, seed=3).fit(df)
    assert full.stop_reason == "shift_below_tol" and full.n_iter < 40 and full.stats[-1].shift < 1e-4
    mini = WeightedKMeans(4, mode="minibatch", batch_fraction=0.3, max_iter=40, tol=1e-3, patience=3, seed=3).fit(df)
    assert mini.stop_reason == "inertia_plateau" and mini.n_iter < 40
    assert weighted_inertia(x, w, mini.centroids) <= 1.05 * weighted_inertia(x, w, full.centroids)
    rows = mini.stats_frame(spark, "user").orderBy("iteration").collect()
    assert [r["stop_reason"] for r in rows] == [None] * (mini.n_iter - 1) + ["inertia_plateau"]
    assert {(r["engine"], r["fallback_reason"]) for r in rows} == {("jobs", None)}  # the default engine


def test_resident_engine_falls_back_to_jobs_and_records_why(spark, monkeypatch, caplog):
    import logging

    from mgoe_spark.nodes.kmeans import model as model_module
    from mgoe_spark.nodes.kmeans.resident import EngineUnavailable, ResidentEngine

    x, w, _, _ = planted(12, k=3, per=30)
    df = nodes_df(spark, x, w, partitions=2)
    params = dict(mode="full", max_iter=5, tol=0.0, seed=6)
    reference = WeightedKMeans(3, engine="jobs", **params).fit(df)
    # 1. the resident engine cannot start here (e.g. dynamic allocation): one log line, jobs engine
    monkeypatch.setattr(model_module, "resident_blocker", lambda spark: "dynamic allocation is on")
    with caplog.at_level(logging.WARNING, logger="mgoe.kmeans"):
        km = WeightedKMeans(3, engine="resident", **params).fit(df)
    assert "resident engine not used (dynamic allocation is on); one Spark job per iteration" in caplog.text
    assert (km.engine_used, km.fallback_reason) == ("jobs", "dynamic allocation is on")
    rows = km.stats_frame(spark, "item").collect()
    assert {(r["engine"], r["fallback_reason"]) for r in rows} == {("jobs", "dynamic allocation is on")}
    np.testing.assert_array_equal(km.centroids, reference.centroids)
    monkeypatch.undo()

    # 2. it stops mid-fit (a task or the resident job fails): the fit restarts on the jobs engine, same result
    def broken(self, *args):
        raise EngineUnavailable("a task failed: simulated")

    monkeypatch.setattr(ResidentEngine, "step_parts", broken)
    km = WeightedKMeans(3, engine="resident", **params).fit(df)
    assert (km.engine_used, km.fallback_reason) == ("jobs", "a task failed: simulated")
    np.testing.assert_array_equal(km.centroids, reference.centroids)


@pytest.mark.parametrize("engine", ["jobs", "resident"])
def test_training_assignments_of_the_fit_equal_assign(spark, engine):
    """Both engines keep the final pass's labels: the fitted nodes' assignments need no second pass."""
    x, w, _, _ = planted(10, k=3, per=30)
    df = nodes_df(spark, x, w, partitions=2)
    old = WeightedKMeans(3, mode="full", max_iter=5, seed=1, engine="jobs").fit(df)
    # warm start: the emitted macro ids must follow the Hungarian renumbering, like assign() does
    km = WeightedKMeans(3, mode="full", max_iter=5, seed=2, engine=engine, block_rows=16)
    km.fit(df, warm_start=old)
    assert km.engine_used == engine and km._fit_cache is not None and km._fit_cache.is_cached
    fitted = {row["node_id"]: (row["macro_id"], row["distance"]) for row in km.training_assignments().collect()}
    assert fitted == assignments(km, df) and len(fitted) == len(x)
    assert {m for m, _ in fitted.values()} == {1, 2, 3}
    cache = km._fit_cache
    km.unpersist()
    assert not cache.is_cached


def test_both_ways_into_the_workers_give_the_same_blocks(spark):
    """The fast path (the DataFrame's Arrow batches as an RDD) and the public one (mapInArrow, then .rdd)."""
    from pyspark.sql import functions as F

    from mgoe_spark.nodes.kmeans.engines import packed_blocks

    x, w, _, _ = planted(15, k=3, per=20)
    w[3] = np.nan  # bad rows travel too (the statistics count them)
    df = nodes_df(spark, x, w, partitions=3).withColumn("part", F.spark_partition_id())

    def layout(arrow_rdd: bool):
        rdd = packed_blocks(df, None, 7, 8, arrow_rdd=arrow_rdd)
        parts = rdd.glom().collect()
        return [[(b.ids.tolist(), b.x.tobytes(), b.w.tobytes(), b.u.tobytes(), s) for b, s in p] for p in parts]

    fast, public = layout(True), layout(False)
    assert fast == public and sum(len(p) for p in fast) >= 3
    lineage = packed_blocks(df, None, 7, 8).toDebugString().decode()
    assert "toArrowBatchRdd" in lineage and "javaToPython" not in lineage  # the fast path is the one taken


def test_jobs_engine_final_pass_emits_renumbered_labels(spark):
    """The jobs engine's final pass caches each node's label; emit(new_id) maps label l to macro new_id[l] + 1."""
    from pyspark.sql import functions as F

    from mgoe_spark.nodes.kmeans.blocks import sum_scales
    from mgoe_spark.nodes.kmeans.engines import JobsEngine

    x, w, _, centers = planted(14, k=3, per=20)
    df = nodes_df(spark, x, w, partitions=2).withColumn("part", F.spark_partition_id())
    c = centers.astype(np.float32)
    with JobsEngine(df, None, 0, 16, 1) as eng:
        stats = eng.stats()
        parts = eng.step_parts(c, 0, 1.0, sum_scales(int(stats["n"]), stats["max_w"], stats["max_x"]))
        assert sum(int(p[0][-3:].sum()) for p in parts) == len(x)  # the counts of the final pass
        emitted = eng.emit(np.array([2, 0, 1]))
        cache = eng.emitted
    got = {r["node_id"]: (r["macro_id"], r["distance"]) for r in emitted.collect()}
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    want = {i + 1: (int([3, 1, 2][lab]), d[i, lab]) for i, lab in enumerate(d.argmin(1))}
    assert {i: m for i, (m, _) in got.items()} == {i: m for i, (m, _) in want.items()}
    np.testing.assert_allclose([got[i][1] for i in want], [want[i][1] for i in want], rtol=1e-4, atol=1e-4)
    assert cache.is_cached  # close() left the labels' cache to the caller
    cache.unpersist()


@pytest.mark.parametrize("mode", ["full", "minibatch"])
def test_fit_does_not_depend_on_the_task_slot_count(spark, monkeypatch, mode):
    from mgoe_spark.nodes.kmeans import model as model_module

    x, w, _, _ = planted(13, k=3, per=50)
    df = nodes_df(spark, x, w, partitions=4).persist()  # 4 input partitions, fixed row order
    df.count()
    # block_rows=16: several blocks per partition; the resident tasks read 2 (or all 4) partitions each
    params = dict(mode=mode, max_iter=5, batch_fraction=0.5, tol=0.0, patience=10, seed=5, block_rows=16)
    fits = {"jobs, 4 tasks": WeightedKMeans(3, engine="jobs", **params).fit(df)}
    for slots in (2, 1):
        monkeypatch.setattr(model_module, "task_slots", lambda spark, slots=slots: slots)
        fits[f"resident, {slots} slots"] = WeightedKMeans(3, engine="resident", **params).fit(df)
    assert [f.engine_used for f in fits.values()] == ["jobs", "resident", "resident"]
    ref = fits["jobs, 4 tasks"]
    for name, km in fits.items():
        np.testing.assert_array_equal(km.centroids, ref.centroids, err_msg=name)
        assert km.version == ref.version and km.inertia == ref.inertia, name
        assert [vars(s) for s in km.stats] == [vars(s) for s in ref.stats], name
        assert np.array_equal(km.weights, ref.weights) and np.array_equal(km.sizes, ref.sizes), name
    fitted = {r["node_id"]: r["macro_id"] for r in fits["resident, 1 slots"].training_assignments().collect()}
    assert fitted == {i: m for i, (m, _) in assignments(ref, df).items()}
    df.unpersist()


def test_pack_batches_cuts_blocks_per_input_partition_whatever_the_batches():
    import pyarrow as pa

    from mgoe_spark.nodes.kmeans.blocks import pack_batches

    rng = np.random.default_rng(0)
    n, r = 50, 3
    ids = np.arange(1, n + 1)
    part = np.repeat([0, 1, 2], [17, 20, 13])
    x = rng.normal(size=(n, r)).astype(np.float32)
    w = rng.random(n)

    def batches(size):
        for lo in range(0, n, size):
            sl = slice(lo, lo + size)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x[sl].ravel()), r).cast(pa.list_(pa.float32()))
            cols = [pa.array(ids[sl]), vec, pa.array(w[sl]), pa.array(part[sl].astype(np.int32))]
            yield pa.RecordBatch.from_arrays(cols, names=["node_id", "vector", "weight", "part"])

    layouts = []
    for size in (50, 7, 3):
        blocks, stats = pack_batches(batches(size), None, 0, 8)
        layouts.append([b.ids.tolist() for b in blocks])
        assert stats["n"] == n and stats["max_w"] == w.max() and stats["max_x"] == np.abs(x).max()
    # partition sizes 17, 20, 13 with 8-row blocks: 8 8 1 | 8 8 4 | 8 5, for any batch size
    expected = [
        ids[lo:hi].tolist() for lo, hi in [(0, 8), (8, 16), (16, 17), (17, 25), (25, 33), (33, 37), (37, 45), (45, 50)]
    ]
    assert layouts == [expected] * 3


def test_fixed_point_sums_are_exact_in_any_grouping():
    from mgoe_spark.nodes.kmeans.blocks import Block, hash_uniform, partial_sums, sum_scales
    from mgoe_spark.nodes.kmeans.loop import combine

    rng = np.random.default_rng(1)
    k, r = 4, 5
    blocks = []
    for b in range(6):
        ids = np.arange(b * 30, b * 30 + 30) + 1
        x = rng.normal(0, 10, (30, r)).astype(np.float32)
        blocks.append(Block(ids, x, rng.random(30) * 3, hash_uniform(ids, 0, 1)))
    c = rng.normal(0, 10, (k, r)).astype(np.float32)
    n = 180
    scales = sum_scales(n, max(b.w.max() for b in blocks), max(np.abs(b.x).max() for b in blocks))
    one = combine([partial_sums(blocks, c, 1, 1.0, 1, scales)], k, r, scales)
    split = combine(
        [partial_sums(g, c, 1, 1.0, 1, scales) for g in (blocks[4:], blocks[:1], blocks[1:4])], k, r, scales
    )
    for key in ("coord", "wsum", "cnt"):
        np.testing.assert_array_equal(one[key], split[key])
    assert one["inertia"] == split["inertia"]
    # and the fixed-point sums are the weighted sums (oracle in float64)
    x = np.concatenate([b.x for b in blocks]).astype(np.float64)
    w = np.concatenate([b.w for b in blocks])
    lab = ((x[:, None] - c[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    oracle = np.stack([(w[lab == j, None] * x[lab == j]).sum(0) for j in range(k)])
    np.testing.assert_allclose(one["coord"], oracle, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(one["wsum"], np.bincount(lab, weights=w, minlength=k), rtol=1e-12)
