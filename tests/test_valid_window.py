"""``windows.validation=window`` (SPEC 3): a validation window with a feature snapshot of its own.

Train rows in (c1, cv] read features at c1, valid rows in (cv, c2] read features at cv, test rows after c2
read features at c2. Checked here: the cutoffs and shares, the split and snapshot of every row, the
recorded settings (``split`` keeps what older tables recorded), the windows row round trip, the quality
gate's window check, and a leak trap through the stage's one wiring (``build_features``): an event in a
sample window changes the features of exactly the snapshots whose cutoff it precedes.
"""

from __future__ import annotations

import json

import pytest
from pyspark.sql import Row

from mgoe_spark.config import load_config
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.storage import conform
from mgoe_spark.features.build import FittedNodes, build_features
from mgoe_spark.quality.gates import outside_window
from mgoe_spark.windows import table as windows_table
from mgoe_spark.windows.cutoffs import (
    Windows,
    check_nonempty,
    compute_windows,
    feature_events,
    measure,
    sample_events,
    settings_json,
    snapshot_cutoff,
    snapshot_of_split,
    split_column,
)
from schemas import TRAINING_EXAMPLES
from tests.test_examples_features import K_I, K_U, L, modulo_fit, new_nodes_to_macro_one, random_log, simple_pair_scores

SCHEMA = "user_id long, item_id long, task string, ts long, category string"
WINDOW = ["windows.validation=window", "windows.validation_fraction=0.5", "windows.quantile_rel_error=0"]


def cfg(*overrides: str):
    return load_config(profile="test", overrides=list(overrides))


def test_quantile_cutoffs_shares_and_the_split_of_every_row(spark):
    # ts 1..200, one event each: q1 = 0.8 -> 160, qv = 0.9 - 0.5 * 0.1 = 0.85 -> 170, q2 = 0.9 -> 180
    df = spark.createDataFrame([(t % 7, t % 11, "click", t, None) for t in range(1, 201)], SCHEMA)
    c = cfg(*WINDOW)
    w = measure(df, compute_windows(df, c.windows))
    assert (w.train_cutoff, w.valid_cutoff, w.test_cutoff) == (160, 170, 180)
    assert w.snapshots == ("train", "valid", "test")
    assert (w.feature_share, w.train_share, w.valid_share, w.test_share) == pytest.approx((0.8, 0.1, 0.05, 0.1))
    assert "train samples <= " in w.summary() and "valid samples <= " in w.summary()
    rows = (
        sample_events(df, w)
        .withColumn("split", split_column("window", c.windows, 7))
        .withColumn("snapshot", snapshot_of_split("split", w.snapshots))
        .withColumn("cutoff", snapshot_cutoff("snapshot", w))
        .collect()
    )
    want = {t: ("train", 160) if t <= 170 else ("valid", 170) if t <= 180 else ("test", 180) for t in range(161, 201)}
    got = {r.ts: (r.split, r.cutoff) for r in rows}
    assert got == want
    assert all(r.snapshot == r.split for r in rows)
    # the default form: valid rows are carved by hash from the train window and read the train snapshot
    split = measure(df, compute_windows(df, cfg("windows.quantile_rel_error=0").windows))
    assert split.valid_cutoff is None and split.snapshots == ("train", "test")
    carved = sample_events(df, split).withColumn("split", split_column("window", cfg(*WINDOW[1:]).windows, 7))
    carved = carved.withColumn("snapshot", snapshot_of_split("split", split.snapshots)).collect()
    assert {r.snapshot for r in carved if r.split == "valid"} == {"train"}
    assert all(160 < r.ts <= 180 for r in carved if r.split == "valid")


def test_dates_mode_needs_a_valid_cutoff_between_the_others():
    base = ["windows.mode=dates", "windows.train_cutoff=2017-11-30", "windows.test_cutoff=2017-12-02"]
    with pytest.raises(UserError, match="'windows.valid_cutoff' is required"):
        cfg(*base, "windows.validation=window")
    w = compute_windows(None, cfg(*base, "windows.validation=window", "windows.valid_cutoff=2017-12-01").windows)
    assert w.train_cutoff < w.valid_cutoff < w.test_cutoff and w.valid_cutoff - w.train_cutoff == 86_400
    with pytest.raises(ValueError, match="must be between the train cutoff"):
        compute_windows(None, cfg(*base, "windows.validation=window", "windows.valid_cutoff=2017-12-03").windows)
    with pytest.raises(UserError, match="must be > 0 with windows.validation=window"):
        cfg("windows.validation=window", "windows.validation_fraction=0")
    shares = {"feature_share": 0.5, "test_share": 0.25}
    check_nonempty(Windows(1, 3, valid_cutoff=2, train_share=0.25, valid_share=0.2, **shares))
    with pytest.raises(ValueError, match="^the train sample window is empty"):
        check_nonempty(Windows(1, 3, valid_cutoff=2, train_share=0.25, valid_share=0.25, **shares))
    with pytest.raises(ValueError, match="^the valid sample window is empty"):
        check_nonempty(Windows(1, 3, valid_cutoff=2, train_share=0.25, valid_share=0.0, **shares))


def test_recorded_settings_keep_the_split_form_and_name_the_window_form():
    # what every windows table written before the valid window recorded: a split config must still match it
    legacy = '{"mode": "quantile", "q1": 0.8, "q2": 0.9, "time_unit": "epoch_seconds"}'
    assert settings_json(cfg().windows, "epoch_seconds") == legacy
    window = json.loads(settings_json(cfg(*WINDOW).windows, "epoch_seconds"))
    assert window == {**json.loads(legacy), "validation": "window", "validation_fraction": 0.5}
    row = Row(
        train_cutoff=160,
        test_cutoff=180,
        time_unit="epoch_seconds",
        mode="quantile",
        settings=settings_json(cfg(*WINDOW).windows, "epoch_seconds"),
        events=200,
        feature_share=0.8,
        train_share=0.1,
        test_share=0.1,
        valid_cutoff=170,
        valid_share=0.05,
    )
    w = windows_table.from_rows([row], cfg(*WINDOW), "2026-01-01")
    assert (w.valid_cutoff, w.valid_share, w.snapshots) == (170, 0.05, ("train", "valid", "test"))
    with pytest.raises(UserError, match="windows.validation=window"):  # features asked for the other form
        windows_table.from_rows([row], cfg(), "2026-01-01")
    old = Row(**{k: v for k, v in row.asDict().items() if not k.startswith("valid_")} | {"settings": legacy})
    assert windows_table.from_rows([old], cfg(), "2026-01-01").valid_cutoff is None


def test_the_gate_checks_each_row_against_its_own_window(spark):
    w = Windows(160, 180, valid_cutoff=170)
    rows = [("train", 165, False), ("train", 175, True), ("valid", 175, False), ("valid", 165, True)]
    rows += [("test", 181, False), ("test", 150, True), ("valid", 181, True)]
    df = spark.createDataFrame([(s, t) for s, t, _ in rows], "split string, ts long")
    got = [r.bad for r in df.select(outside_window(w).alias("bad")).collect()]
    assert got == [bad for _, _, bad in rows]
    split = Windows(160, 180)  # carved valid rows may lie anywhere in the train window
    got = [r.bad for r in df.select(outside_window(split).alias("bad")).collect()]
    assert got == [False, False, False, False, False, True, True]


@pytest.mark.slow
def test_each_snapshot_sees_exactly_the_events_before_its_cutoff(spark):
    c = cfg(
        "tasks.order=[click, fav]",
        "input.behavior_map={pv: click}",
        f"kmeans.k_user={K_U}",
        f"kmeans.k_item={K_I}",
        f"neighbors.length={L}",
        "samples.space=pairs",
        "samples.negatives_per_positive=0",
        "windows.validation=window",
    )
    w = Windows(60, 80, valid_cutoff=70)
    log = random_log(3) + [(1, 2, "click", 77, None)]  # user 1 has a valid row either way
    # user 1: a new item 42 faved in the TRAIN window (60, 70] and a new item 43 faved in the VALID window
    trap = [(1, 42, "fav", 65, None), (1, 43, "fav", 75, None)]
    clean_df = spark.createDataFrame(log, SCHEMA).cache()
    trap_df = spark.createDataFrame(log + trap, SCHEMA).cache()

    def stage2(log_df):
        train_scores = simple_pair_scores(feature_events(log_df, w.train_cutoff))
        nodes = FittedNodes(train_scores, modulo_fit(train_scores), new_nodes_to_macro_one)
        return build_features(c, log_df, w, nodes, pair_scores=simple_pair_scores).persist()

    clean, trapped = stage2(clean_df), stage2(trap_df)
    rows = conform(trapped.examples, TRAINING_EXAMPLES).collect()
    assert {r.split for r in rows} == {"train", "valid", "test"}
    # item 42 is known to the valid and test snapshots, item 43 only to the test one
    assigned = trapped.tagged["assignments"]
    snaps = {i: {r.snapshot for r in assigned.where(f"side = 'item' AND node_id = {i}").collect()} for i in (42, 43)}
    assert snaps == {42: {"valid", "test"}, 43: {"test"}}
    by_key = {(r.user_id, r.item_id, r.split): r for r in rows}
    assert by_key[(1, 42, "train")].cold_start and by_key[(1, 42, "train")].item_macro == 0
    assert by_key[(1, 43, "valid")].cold_start and by_key[(1, 43, "valid")].item_macro == 0
    # user 1's recent favs per snapshot: 42 from cv on, 43 only at c2
    neighbors = trapped.tagged["recent_neighbors"].where("side = 'user' AND node_id = 1 AND task = 'fav'")
    favs = {r.snapshot: list(r.neighbors) for r in neighbors.collect()}
    assert 42 not in favs.get("train", []) and favs["valid"][0] == 42 and 43 not in favs["valid"]
    assert favs["test"][:2] == [43, 42]

    # no feature of a train row changed (both trap events are after c1); user 1's valid rows see item 42
    def features(df):
        return {(r.user_id, r.item_id, r.split): r.asDict(recursive=True) | {"labels": None} for r in df.collect()}

    before, after = features(clean.examples), features(trapped.examples)
    assert all(after[k] == v for k, v in before.items() if k[2] == "train")
    valid_1 = [k for k in before if k[0] == 1 and k[2] == "valid"]
    assert valid_1 and all(after[k]["user_recent"] != before[k]["user_recent"] for k in valid_1)
    for df in (trapped, clean, clean_df, trap_df):
        df.unpersist()


@pytest.mark.slow
def test_nodes_features_quality_and_trainer_through_the_cli(built, spark, tmp_path, capsys):
    """The window form through ``mgoe nodes`` / ``features`` / ``quality`` on a copy of the session's
    ingested root, then the trainer's reader: three snapshots in every feature table, each sample in its
    own window, every gate green, and the trainer streams the valid split."""
    import shutil

    import pyarrow.parquet as pq

    from jobs.cli import main
    from model.data import ExampleStream, read_meta
    from schemas import MACRO_EDGES, SAMPLES, WINDOWS

    root = tmp_path / "out"
    shutil.copytree(built.root, root)  # the build's split-form tables are replaced by the window form's
    sets = [f"--set={o}" for o in (*built.overrides, *WINDOW)]
    common = ["--profile", "test", "--run-date", built.run_date, "--output", str(root), *sets]
    for stage in ("nodes", "features", "quality"):
        args = [stage, *common] if stage != "quality" else [stage, "--gate", "features", *common]
        code = main(args)
        assert code == 0, (stage, capsys.readouterr().err[-3000:])
    part = f"run_date={built.run_date}"
    w = pq.read_table(root / "windows" / part, schema=WINDOWS.arrow(False)).to_pylist()[0]
    assert w["train_cutoff"] < w["valid_cutoff"] < w["test_cutoff"] and 0 < w["valid_share"] < w["train_share"]
    edges = pq.read_table(root / "macro_edges" / part, schema=MACRO_EDGES.arrow(False))
    assert set(edges.column("snapshot").to_pylist()) == {"train", "valid", "test"}
    for s in pq.read_table(root / "samples" / part, schema=SAMPLES.arrow(False)).to_pylist():
        lo, hi = {
            "train": (w["train_cutoff"], w["valid_cutoff"]),
            "valid": (w["valid_cutoff"], w["test_cutoff"]),
            "test": (w["test_cutoff"], 2**62),
        }[s["split"]]
        assert lo < s["ts"] <= hi, s
    cfg = built.config(*WINDOW)
    meta = read_meta(str(root), built.run_date, list(cfg.tasks.order))
    rows = sum(len(b["labels"]) for b in ExampleStream(str(root), built.run_date, "valid", meta, 256))
    assert rows > 0
