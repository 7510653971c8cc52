"""Training examples (feature joins, zero filling, snapshot choice), snapshot assignments, and the stage's
one wiring (build_features, which run_features calls too) with a label-leak trap."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from mgoe_spark.config import load_config
from mgoe_spark.core.storage import conform
from mgoe_spark.features.build import FittedNodes, build_features
from mgoe_spark.features.edges import edge_width
from mgoe_spark.features.examples import build_examples, snapshot_assignments
from mgoe_spark.windows.cutoffs import Windows, feature_events
from schemas import TRAINING_EXAMPLES

TASKS = ["click", "fav"]
K_U, K_I, HOPS, L = 2, 3, 2, 3
ASG = "snapshot string, side string, node_id long, macro_id int, distance float"


def test_examples_join_features_of_the_right_snapshot_and_fill_zeros(spark):
    samples = spark.createDataFrame(
        [
            (1, 1, "train", 11, [1.0, 0.0], False),
            (1, 2, "valid", 12, [0.0, 1.0], False),
            (2, 1, "test", 21, [1.0, 1.0], False),
            (3, 9, "train", 13, [1.0, 0.0], True),  # unknown user and item
        ],
        "user_id long, item_id long, split string, ts long, labels array<float>, cold_start boolean",
    )
    asg = spark.createDataFrame(
        [
            ("train", "user", 1, 1, 0.0),
            ("train", "user", 2, 2, 0.0),
            ("train", "item", 1, 1, 0.0),
            ("train", "item", 2, 2, 0.0),
            ("test", "user", 1, 1, 0.0),
            ("test", "user", 2, 1, 0.0),  # a different macro in the test snapshot
            ("test", "item", 1, 3, 0.0),
        ],
        ASG,
    )
    edges = spark.createDataFrame(
        [
            ("train", "user", 1, 1, [1.0, 0.0, 2.0]),
            ("train", "item", 1, 1, [0.5, 0.5]),
            ("train", "item", 1, 2, [0.0, 3.0, 1.0]),
            ("train", "item", 2, 2, [7.0, 0.0, 0.0]),
            ("test", "user", 2, 1, [0.0, 4.0, 0.0]),
            ("test", "user", 2, 2, [9.0, 9.0]),
        ],
        "snapshot string, side string, node_id long, hop int, weights array<float>",
    )
    neighbors = spark.createDataFrame(
        [
            ("train", "user", 1, "click", [5, 4]),
            ("train", "item", 1, "fav", [2, 1, 3, 8]),  # longer than L: cut to L
            ("test", "user", 2, "fav", [1]),
        ],
        "snapshot string, side string, node_id long, task string, neighbors array<bigint>",
    )
    lookup = spark.createDataFrame(
        [
            ("train", 1, "click", 1, 0.5),
            ("train", 1, "fav", 1, 1.0),
            ("train", 1, "click", 2, 0.25),
            ("test", 2, "fav", 3, 0.75),
            ("train", 2, "fav", 3, 0.1),  # wrong snapshot for the test row: must not be used
        ],
        "snapshot string, user_id long, task string, macro_id int, value double",
    )
    out = build_examples(samples, asg, edges, neighbors, lookup, TASKS, K_U, K_I, HOPS, L)
    rows = {(r.user_id, r.item_id): r for r in conform(out, TRAINING_EXAMPLES).collect()}
    assert set(rows) == {(1, 1), (1, 2), (2, 1), (3, 9)}
    z2, z3, zl = [0.0] * 2, [0.0] * 3, [0, 0, 0]

    r = rows[(1, 1)]
    assert (r.user_macro, r.item_macro, r.split, list(r.labels)) == (1, 1, "train", [1.0, 0.0])
    assert r.user_edges == [[1.0, 0.0, 2.0], z2] and r.item_edges == [[0.5, 0.5], [0.0, 3.0, 1.0]]
    assert r.user_recent == [[5, 4, 0], zl] and r.item_recent == [zl, [2, 1, 3]]
    assert list(r.lookup) == [0.5, 1.0]

    r = rows[(1, 2)]  # valid row: train snapshot; item 2 has only hop 2
    assert (r.item_macro, r.item_edges, list(r.lookup)) == (2, [z2, [7.0, 0.0, 0.0]], [0.25, 0.0])

    r = rows[(2, 1)]  # test row: test snapshot everywhere
    assert (r.user_macro, r.item_macro) == (1, 3)
    assert r.user_edges == [[0.0, 4.0, 0.0], [9.0, 9.0]] and r.item_edges == [z2, z3]
    assert r.user_recent == [zl, [1, 0, 0]] and list(r.lookup) == [0.0, 0.75]

    r = rows[(3, 9)]  # unknown everywhere: zeros of the right shapes
    assert (r.user_macro, r.item_macro, r.cold_start) == (0, 0, True)
    assert r.user_edges == [z3, z2] and r.item_edges == [z2, z3]
    assert r.user_recent == [zl, zl] and r.item_recent == [zl, zl] and list(r.lookup) == [0.0, 0.0]


def test_recent_ids_beyond_int32_fail_the_build_instead_of_wrapping(spark):
    """The recent lists travel and are written as int32: an id that does not fit must stop the job."""
    samples = spark.createDataFrame(
        [(1, 1, "train", 11, [1.0, 0.0], False)],
        "user_id long, item_id long, split string, ts long, labels array<float>, cold_start boolean",
    )
    asg = spark.createDataFrame([("train", "user", 1, 1, 0.0), ("train", "item", 1, 1, 0.0)], ASG)
    edges = spark.createDataFrame([], "snapshot string, side string, node_id long, hop int, weights array<float>")
    lookup = spark.createDataFrame([], "snapshot string, user_id long, task string, macro_id int, value double")
    neighbors = spark.createDataFrame(
        [("train", "user", 1, "click", [5, 2**31])],
        "snapshot string, side string, node_id long, task string, neighbors array<bigint>",
    )
    out = build_examples(samples, asg, edges, neighbors, lookup, TASKS, K_U, K_I, HOPS, L)
    with pytest.raises(Exception, match="(?i)overflow|cast"):
        out.collect()


def test_snapshot_assignments_keep_fitted_ids_and_delegate_new_nodes(spark):
    fitted = spark.createDataFrame(
        [("user", 1, 2, 0.1), ("item", 1, 1, 0.2)], "side string, node_id long, macro_id int, distance float"
    )
    nodes = spark.createDataFrame([("user", 1), ("user", 5), ("item", 1), ("item", 7)], "side string, node_id long")
    seen = []

    def nearest(new):
        seen.append(new)
        return new.select("side", "node_id", F.lit(3).alias("macro_id"), F.lit(0.5).cast("float").alias("distance"))

    got = {(r.side, r.node_id): r.macro_id for r in snapshot_assignments(fitted, nodes, nearest).collect()}
    assert got == {("user", 1): 2, ("item", 1): 1, ("user", 5): 3, ("item", 7): 3}
    assert {(r.side, r.node_id) for r in seen[0].collect()} == {("user", 5), ("item", 7)}
    assert {(r.side, r.node_id) for r in snapshot_assignments(fitted, nodes, None).collect()} == {
        ("user", 1),
        ("item", 1),
    }
    every = snapshot_assignments(fitted, nodes, nearest, policy="all").collect()
    assert {r.macro_id for r in every} == {3} and len(every) == 4


# ---- build_features with stand-ins for stage 1 -------------------------------------------------------


def simple_pair_scores(events):
    """rho = sum of 2^k over the pair's tasks (beta = 1 gives s = rho)."""
    bit = F.lit(0)
    for k, t in enumerate(TASKS):
        bit = F.when(F.col("task") == t, F.lit(1 << k)).otherwise(bit)
    pairs = events.where(F.col("task").isin(TASKS)).groupBy("user_id", "item_id").agg(F.bit_or(bit).alias("mask"))
    return pairs.select(
        "user_id", "item_id", "mask", F.col("mask").alias("rho"), F.col("mask").cast("double").alias("score")
    )


def modulo_fit(pair_scores):
    users = pair_scores.select(F.lit("user").alias("side"), F.col("user_id").alias("node_id")).distinct()
    items = pair_scores.select(F.lit("item").alias("side"), F.col("item_id").alias("node_id")).distinct()
    nodes = users.unionByName(items)
    k = F.when(F.col("side") == "user", K_U).otherwise(K_I)
    return nodes.select(
        "side", "node_id", (F.col("node_id") % k + 1).cast("int").alias("macro_id"), F.lit(0.0).alias("distance")
    )


def new_nodes_to_macro_one(pair_scores, nodes):
    return nodes.select("side", "node_id", F.lit(1).alias("macro_id"), F.lit(1.0).alias("distance"))


def random_log(seed: int):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(220):
        t = TASKS[int(rng.random() < 0.25)]
        rows.append((int(rng.integers(1, 13)), int(rng.integers(1, 10)), t, int(rng.integers(0, 100)), None))
    return rows


def features_by_row(rows):
    """(user, item, split) -> (labels, every other column)."""
    out = {}
    for r in rows:
        d = r.asDict(recursive=True)
        out[(d.pop("user_id"), d.pop("item_id"), d.pop("split"))] = (d.pop("labels"), d)
    return out


@pytest.mark.slow
def test_build_features_end_to_end_and_label_leak_trap(spark):
    cfg = load_config(
        profile="test",
        overrides=[
            "tasks.order=[click, fav]",
            "input.behavior_map={pv: click}",
            f"kmeans.k_user={K_U}",
            f"kmeans.k_item={K_I}",
            f"neighbors.length={L}",
            "windows.validation_fraction=0.25",
            # observed pairs only: the trap's new item id would move every uniform negative draw
            "samples.space=pairs",
            "samples.negatives_per_positive=0",
        ],
    )
    w = Windows(60, 80)
    log = random_log(3)
    # The trap: events in the TRAIN sample window (60, 80] by user 1, with a new item 42 and a fav that
    # user 1 never had. Leaked into the train snapshot they would change user 1's edges, neighbors, lookup.
    trap = [(1, 42, "fav", 70, None), (1, 2, "fav", 75, None), (1, 3, "click", 79, None)]
    schema = "user_id long, item_id long, task string, ts long, category string"
    # cached: the plans scan the log dozens of times; a Python-list frame would re-run Python each time
    clean_df = spark.createDataFrame(log, schema).cache()
    trap_df = spark.createDataFrame(log + trap, schema).cache()

    def stage2(log_df):  # stand-ins for stage 1 at the train cutoff, then the stage's own wiring
        train_scores = simple_pair_scores(feature_events(log_df, w.train_cutoff))
        nodes = FittedNodes(train_scores, modulo_fit(train_scores), new_nodes_to_macro_one)
        return build_features(cfg, log_df, w, nodes, pair_scores=simple_pair_scores)

    clean = stage2(clean_df)
    trapped = stage2(trap_df).persist()

    rows = conform(trapped.examples, TRAINING_EXAMPLES).collect()
    assert rows and {r.split for r in rows} == {"train", "valid", "test"}
    for r in rows:  # shapes the trainer relies on
        assert [len(h) for h in r.user_edges] == [edge_width("user", h, K_U, K_I) for h in (1, 2)]
        assert [len(h) for h in r.item_edges] == [edge_width("item", h, K_U, K_I) for h in (1, 2)]
        assert [len(x) for x in r.user_recent] == [L, L] and len(r.lookup) == 2 and len(r.labels) == 2

    before = features_by_row(conform(clean.examples, TRAINING_EXAMPLES).collect())
    after = features_by_row(rows)
    train_keys = {k for k in before if k[2] != "test"}
    # the trap changed labels of the train window (new samples with label fav = 1) ...
    assert (1, 42, "train") in after or (1, 42, "valid") in after
    assert not any(k[:2] == (1, 42) for k in before)
    # ... but no feature of any train / valid row changed
    for key in train_keys:
        assert after[key][1] == before[key][1], key
    trap_row = next(v for (u, i, _), v in after.items() if (u, i) == (1, 42))
    assert trap_row[0] == [0.0, 1.0] and trap_row[1]["item_macro"] == 0 and trap_row[1]["cold_start"]
    # the same events ARE features of the test snapshot (ts <= 80): the trap is a real one
    test_before = {v[1]["user_recent"][1][0] for k, v in before.items() if k[0] == 1 and k[2] == "test"}
    test_after = {v[1]["user_recent"][1][0] for k, v in after.items() if k[0] == 1 and k[2] == "test"}
    if test_after:
        assert test_after == {2} and test_before != test_after
    tables = trapped.tagged
    u1_test = tables["recent_neighbors"].where("snapshot = 'test' AND side = 'user' AND node_id = 1 AND task = 'fav'")
    assert u1_test.first().neighbors[:2] == [2, 42]
    # the test snapshot reuses the fitted macro ids; the new item 42 went through assign_fn
    test_asg = {(r.side, r.node_id): r.macro_id for r in tables["assignments"].where("snapshot = 'test'").collect()}
    assert test_asg[("item", 42)] == 1 and test_asg[("user", 5)] == 5 % K_U + 1

    trapped.unpersist()
    clean_df.unpersist()
    trap_df.unpersist()
