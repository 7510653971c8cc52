"""Data-quality checks (mgoe_spark.quality.checks) and gates (mgoe_spark.quality.gates) on tiny tables."""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs import quality as qjob
from jobs.common import job_main
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.storage import TableNotFound, read_table, write_table
from mgoe_spark.quality import gates
from mgoe_spark.quality.checks import (
    TableSpec,
    check_table,
    duplicate_keys,
    empty_macro_nodes,
    non_finite_condition,
    ratio_at_most,
)
from schemas import (
    ASSIGNMENTS,
    CENTROIDS,
    INTERACTIONS,
    MACRO_EDGES,
    NODE_VECTORS,
    NODE_WEIGHTS,
    PAIR_SCORES,
    QUALITY_CHECKS,
    RECENT_NEIGHBORS,
    REGISTRY,
    REJECTS,
    SAMPLES,
    TASK_LOOKUP,
    TRAINING_EXAMPLES,
    VOCAB_ITEMS,
    VOCAB_USERS,
    WINDOWS,
)

RUN_DATE = "2026-11-23"
SNAPSHOTS = ("train", "test")
NODE_TABLES = (WINDOWS, PAIR_SCORES, NODE_VECTORS, NODE_WEIGHTS, ASSIGNMENTS, CENTROIDS)
SPECIAL = [float("nan"), float("inf"), float("-inf")]

# ---- checks ------------------------------------------------------------------------------------------------

floats = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(SPECIAL))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(floats, st.lists(floats, max_size=3), st.lists(st.lists(floats, max_size=2), max_size=2)),
        min_size=1,
        max_size=8,
    )
)
def test_non_finite_counts_match_numpy(spark, rows):
    schema = T.StructType(
        [
            T.StructField("x", T.DoubleType()),
            T.StructField("v", T.ArrayType(T.FloatType())),
            T.StructField("m", T.ArrayType(T.ArrayType(T.FloatType()))),
        ]
    )
    df = spark.createDataFrame(rows, schema)
    values = {"x": [[x] for x, _, _ in rows], "v": [v for _, v, _ in rows], "m": [sum(m, []) for _, _, m in rows]}
    for column, per_row in values.items():
        got = df.where(non_finite_condition(df, column)).count()
        want = sum(bool((~np.isfinite(np.asarray(vals, dtype=np.float64))).any()) for vals in per_row)
        assert got == want, column


def test_non_finite_rejects_a_non_float_column(spark):
    df = spark.createDataFrame([(1,)], "a bigint")
    with pytest.raises(ValueError, match="not a float column"):
        non_finite_condition(df, "a")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"])), min_size=1, max_size=12))
def test_duplicate_keys_match_counter(spark, keys):
    df = spark.createDataFrame(keys, "k bigint, s string")
    result = duplicate_keys(df, "t", ["k", "s"])
    dups = sorted(k for k, c in Counter(keys).items() if c > 1)
    assert result.value == len(dups)
    assert result.passed == (not dups)
    if dups:
        assert f"k={dups[0][0]!r}, s={dups[0][1]!r}" in result.detail


def test_check_table_counts_every_kind_of_problem(spark):
    rows = [(1, "a", 0.5), (1, "a", float("nan")), (2, None, 3.0), (3, "c", -1.0)]
    df = spark.createDataFrame(rows, "id bigint, s string, w double")
    spec = TableSpec("t", min_rows=5, unique=[["id", "s"]], finite=["w"], violations={"negative_w": F.col("w") < 0})
    got = {r.check: r for r in check_table(df, spec)}
    assert (got["row_count"].passed, got["row_count"].value) == (False, 4)
    assert got["null_keys"].value == 1
    assert got["finite_w"].value == 1
    # NaN < 0 is false in Spark SQL; the -1.0 row is the only negative one.
    assert got["negative_w"].value == 1
    assert got["unique_id_s"].value == 1 and "id=1" in got["unique_id_s"].detail
    clean = check_table(df.where("id = 3"), TableSpec("t", unique=[["id"]], finite=["w"]))
    assert all(r.passed for r in clean)


def test_check_table_counts_a_null_violation_as_bad(spark):
    df = spark.createDataFrame([(None,), (2,)], "x bigint")
    (_, bad) = check_table(df, TableSpec("t", violations={"x_big": F.col("x") > 1}))
    assert bad.value == 2  # a condition that is null (unknown) counts as a violation, not as a pass


def test_empty_macro_nodes_names_the_empty_ids(spark):
    df = spark.createDataFrame([("user", 1), ("user", 3), ("item", 1), ("item", 2)], "side string, macro_id int")
    user, item = empty_macro_nodes(df, {"user": 3, "item": 2})
    assert (user.passed, user.value) == (False, 1) and "empty macro ids: 2" in user.detail
    assert (item.passed, item.value) == (True, 0)


def test_ratio_at_most():
    assert ratio_at_most("t", "r", 1, 20, 0.05).passed
    assert not ratio_at_most("t", "r", 2, 20, 0.05).passed
    assert ratio_at_most("t", "r", 0, 0, 0.0).passed
    assert math.isclose(ratio_at_most("t", "r", 3, 4, 1.0).value, 0.75)


# ---- gates on a tiny consistent world ------------------------------------------------------------------------

N_USERS, N_ITEMS = 6, 5


def _settings(cfg) -> str:
    from mgoe_spark.windows.cutoffs import settings_json

    return settings_json(cfg.windows, "epoch_seconds")


def _tables(cfg) -> dict:
    """Rows for every table a gate reads, consistent with the test config (4 tasks, K=4/4, r=32, 2 hops)."""
    tasks = cfg.tasks.order
    t, r, ku, ki, hops = len(tasks), cfg.sketch.dim, cfg.kmeans.k_user, cfg.kmeans.k_item, cfg.edges.hops
    pairs = [(u, 1 + (u + j) % N_ITEMS) for u in range(1, N_USERS + 1) for j in range(2)]
    k_of = {"user": ku, "item": ki}
    nodes = [("user", u) for u in range(1, N_USERS + 1)] + [("item", i) for i in range(1, N_ITEMS + 1)]
    macro = {(s, n): 1 + (n - 1) % k_of[s] for s, n in nodes}
    other = {"user": "item", "item": "user"}
    return {
        INTERACTIONS.name: [(u, i, tasks[(u + i) % t], 1000 + u, None) for u, i in pairs],
        VOCAB_USERS.name: [(f"u{u}", u, RUN_DATE) for u in range(1, N_USERS + 1)],
        VOCAB_ITEMS.name: [(f"i{i}", i, RUN_DATE) for i in range(1, N_ITEMS + 1)],
        REJECTS.name: [],
        PAIR_SCORES.name: [(u, i, 1, 1, 0.5) for u, i in pairs],
        NODE_VECTORS.name: [(s, n, [0.1] * r) for s, n in nodes],
        NODE_WEIGHTS.name: [(s, n, 2.0, 1.0) for s, n in nodes],
        ASSIGNMENTS.name: [("train", s, n, macro[s, n], 0.25) for s, n in nodes],
        CENTROIDS.name: [(s, m, [0.0] * r, 1.0, 1, "v1", "fp") for s in k_of for m in range(1, k_of[s] + 1)],
        MACRO_EDGES.name: [
            (snap, s, n, h, [0.5] * k_of[other[s] if h % 2 else s])
            for snap in SNAPSHOTS
            for s, n in nodes
            for h in range(1, hops + 1)
        ],
        RECENT_NEIGHBORS.name: [(snap, s, n, tasks[0], [1, 2]) for snap in SNAPSHOTS for s, n in nodes],
        TASK_LOOKUP.name: [(snap, u, tasks[0], 1 + u % ki, 1.0) for snap in SNAPSHOTS for u in range(1, N_USERS + 1)],
        # windows: features <= 1003 < train samples <= 2000 < test samples
        WINDOWS.name: [(1003, 2000, "epoch_seconds", "quantile", _settings(cfg), 16, 0.5, 0.25, 0.25, None, None)],
        SAMPLES.name: [
            (u, i, "train" if u < 5 else "test", 1500 if u < 5 else 2500, [1.0] + [0.0] * (t - 1), False)
            for u, i in pairs
        ],
        TRAINING_EXAMPLES.name: [
            (
                u,
                i,
                "train" if u < 5 else "test",
                [1.0] + [0.0] * (t - 1),
                macro["user", u],
                macro["item", i],
                [[0.5] * ki, [0.5] * ku],
                [[0.5] * ku, [0.5] * ki],
                [[i, 0]] * t,
                [[u]] * t,
                [0.5] * t,
                False,
            )
            for u, i in pairs
        ],
    }


def _write(spark, root, schema, rows):
    write_table(spark.createDataFrame(rows, schema.spark(with_partition=False)), schema, str(root), RUN_DATE)


def _in_memory(spark, tables):
    """A gate reader over in-memory rows (the gates take any reader; the job tests below go through disk)."""
    return lambda schema: spark.createDataFrame(tables[schema.name], schema.spark(with_partition=False))


@pytest.mark.parametrize("gate", ["ingest", "nodes", "features"])
def test_every_gate_passes_on_consistent_tables(spark, test_config, gate):
    results = gates.GATES[gate](_in_memory(spark, _tables(test_config)), test_config)
    assert results and [r.line() for r in results if not r.passed] == []


BREAKS = [
    # (gate, table, how to break the rows, the check that must fail)
    ("ingest", INTERACTIONS, lambda rows: rows + rows[:1], ("interactions", "unique_user_id_item_id_task_ts")),
    (
        "ingest",
        INTERACTIONS,
        lambda rows: [(*rows[0][:2], "like", *rows[0][3:])] + rows,
        ("interactions", "unknown_task"),
    ),
    ("ingest", VOCAB_USERS, lambda rows: rows[:-1] + [("u99", 99, RUN_DATE)], ("vocab_users", "dense_ids")),
    (
        "ingest",
        REJECTS,
        lambda rows: [("log.csv", "x", "not enough fields", "field_count")],
        ("rejects", "reject_fraction"),
    ),
    ("nodes", NODE_WEIGHTS, lambda rows: [(*rows[0][:3], float("nan"))] + rows[1:], ("node_weights", "finite_weight")),
    (
        "nodes",
        NODE_WEIGHTS,
        lambda rows: [(*rows[0][:2], float("inf"), 1.0)] + rows[1:],
        ("node_weights", "finite_strength"),
    ),
    (
        "nodes",
        ASSIGNMENTS,
        lambda rows: [(*r[:3], 1, r[4]) if r[1:4:2] == ("user", 2) else r for r in rows],
        ("assignments", "empty_macro_nodes_user"),
    ),
    ("nodes", ASSIGNMENTS, lambda rows: [(*rows[0][:3], 9, 0.0)] + rows[1:], ("assignments", "macro_id_out_of_range")),
    ("nodes", CENTROIDS, lambda rows: [(*rows[0][:4], 0, "v1", "fp")] + rows[1:], ("centroids", "empty_cluster")),
    ("nodes", PAIR_SCORES, lambda rows: [], ("pair_scores", "row_count")),
    ("nodes", WINDOWS, lambda rows: [(*rows[0][:6], 0.75, 0.0, 0.25, None, None)], ("windows", "empty_windows")),
    ("nodes", WINDOWS, lambda rows: rows + rows, ("windows", "row_count")),
    (
        "features",
        SAMPLES,
        lambda rows: [(*rows[0][:3], 2500, *rows[0][4:])] + rows[1:],
        ("samples", "outside_its_window"),
    ),
    (
        "features",
        SAMPLES,
        lambda rows: rows[:-1] + [(*rows[-1][:3], 1999, *rows[-1][4:])],
        ("samples", "outside_its_window"),
    ),
    (
        "features",
        SAMPLES,
        lambda rows: [(*rows[0][:4], [1.0, 1.0] + list(rows[0][4][2:]), rows[0][5])] + rows[1:],
        ("samples", "labels_not_one_hot"),  # the default events space: one behavior per row
    ),
    ("features", SAMPLES, lambda rows: rows + rows[:1], ("samples", "unique_user_id_item_id_split_ts_labels")),
    ("features", MACRO_EDGES, lambda rows: [(*rows[0][:4], [0.5])] + rows[1:], ("macro_edges", "weights_length")),
    ("features", MACRO_EDGES, lambda rows: rows + [("later", *rows[0][1:])], ("macro_edges", "unknown_snapshot")),
    (
        "features",
        RECENT_NEIGHBORS,
        lambda rows: rows + rows[-1:],
        ("recent_neighbors", "unique_snapshot_side_node_id_task"),
    ),
    ("features", TASK_LOOKUP, lambda rows: [(*rows[0][:4], float("nan"))] + rows[1:], ("task_lookup", "finite_value")),
    (
        "features",
        TRAINING_EXAMPLES,
        lambda rows: [r for r in rows if r[2] != "test"],
        ("training_examples", "rows_test"),
    ),
    (
        "features",
        TRAINING_EXAMPLES,
        lambda rows: [(*rows[0][:3], [1.0], *rows[0][4:])] + rows[1:],
        ("training_examples", "labels_length"),
    ),
]


@pytest.mark.parametrize("gate,schema,brk,expected", BREAKS, ids=[f"{b[0]}-{b[3][1]}" for b in BREAKS])
def test_a_broken_table_fails_exactly_its_check(spark, test_config, gate, schema, brk, expected):
    tables = _tables(test_config)
    tables[schema.name] = brk(tables[schema.name])
    results = gates.GATES[gate](_in_memory(spark, tables), test_config)
    failed = {(r.table, r.check) for r in results if not r.passed}
    assert failed == {expected}


def test_job_records_each_gate_and_exits_3_on_failure(spark, test_config, tmp_path, capsys):
    root, tables = tmp_path, _tables(test_config)
    for name in ("interactions", "vocab_users", "vocab_items", "rejects", *(s.name for s in NODE_TABLES)):
        _write(spark, root, REGISTRY[name], tables[name])
    common = ["--profile", "test", "--run-date", RUN_DATE, "--output", str(root)]
    assert job_main(qjob, ["--gate", "ingest", *common]) == 0
    _write(
        spark, root, NODE_WEIGHTS, [(*tables[NODE_WEIGHTS.name][0][:3], float("nan"))] + tables[NODE_WEIGHTS.name][1:]
    )
    assert job_main(qjob, ["--gate", "nodes", *common]) == qjob.QUALITY_FAILED
    assert job_main(qjob, ["--gate", "nodes", "--warn-only", *common]) == 0
    err = capsys.readouterr().err
    assert "quality gate 'nodes' failed 1 check(s): node_weights.finite_weight=1" in err
    recorded = read_table(spark, QUALITY_CHECKS, str(root), RUN_DATE)
    by_gate = {r["gate"]: r["n"] for r in recorded.groupBy("gate").count().withColumnRenamed("count", "n").collect()}
    assert set(by_gate) == {"ingest", "nodes"}  # the nodes re-run replaced the nodes rows, kept the ingest rows
    assert recorded.groupBy("gate", "table_name", "check").count().where("count > 1").count() == 0
    bad = recorded.where(~F.col("passed")).select("gate", "table_name", "check").collect()
    assert [tuple(r) for r in bad] == [("nodes", "node_weights", "finite_weight")]


def test_gates_refuse_a_config_asking_for_other_windows(spark, test_config):
    other = copy.deepcopy(test_config)
    other.windows.q1 = 0.5
    for gate in ("nodes", "features"):
        with pytest.raises(UserError, match="chose the windows of .* windows.q1=0.8 .* asks for .* windows.q1=0.5"):
            gates.GATES[gate](_in_memory(spark, _tables(test_config)), other, RUN_DATE)


def test_missing_table_is_a_one_line_user_error(spark, test_config, tmp_path, capsys):
    rc = job_main(qjob, ["--gate", "features", "--profile", "test", "--run-date", RUN_DATE, "--output", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgoe: error: table 'windows' has no partition") and "\n" not in err
    assert "(`mgoe nodes --run-date D` writes it)" in err
    cfg = copy.deepcopy(test_config)
    cfg.output.root = str(tmp_path)
    with pytest.raises(TableNotFound):
        gates.run_gate(spark, "ingest", cfg, RUN_DATE)


@pytest.mark.parametrize("gate", ["ingest", "nodes", "features"])
def test_every_gate_passes_on_a_real_build(spark, built, gate):
    """The gates' expectations match what generate, ingest, nodes and features actually write (the session's
    test-profile build)."""
    results = gates.run_gate(spark, gate, built.config(), built.run_date)
    assert [r.line() for r in results if not r.passed] == []
    assert all(r.value > 0 for r in results if r.check == "row_count")


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_record_writes_the_stores_format_and_replaces_only_its_gate(spark, tmp_path, fmt):
    from mgoe_spark.core.storage import TableStore
    from mgoe_spark.quality.checks import CheckResult

    store = TableStore(spark, str(tmp_path / "out"), fmt)
    gates.record(store, "ingest", [CheckResult("interactions", "row_count", True, 5.0)], RUN_DATE)
    gates.record(store, "nodes", [CheckResult("centroids", "row_count", True, 4.0)], RUN_DATE)
    gates.record(store, "nodes", [CheckResult("centroids", "row_count", False, 0.0, "empty")], RUN_DATE)
    rows = sorted(tuple(r) for r in store.read(QUALITY_CHECKS, RUN_DATE).select("gate", "passed", "value").collect())
    assert rows == [("ingest", True, 5.0), ("nodes", False, 0.0)]
    assert (tmp_path / "out" / "quality_checks" / "_delta_log").is_dir() == (fmt == "delta")
