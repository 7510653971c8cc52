"""Synthetic generator: determinism, funnel, planted structure, CSV format, job output."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from mgoe_spark.config import ConfigError, load_config
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.rand import uniform
from mgoe_spark.core.storage import read_table
from mgoe_spark.generate.events import (
    EVENT_COLUMNS,
    IdScramble,
    conversion_factors,
    generate_events,
    ground_truth,
    preferred_item_groups,
    start_timestamp,
    zipf_rank,
)
from mgoe_spark.generate.run import GENERATED_MARKER, run_generate
from schemas import GROUND_TRUTH_ITEMS, GROUND_TRUTH_USERS

BEHAVIOR_TASK = {"pv": "click", "fav": "fav", "cart": "cart", "buy": "buy"}


def _cfg(*overrides: str):
    return load_config(profile="test", overrides=list(overrides))


def _events(spark, cfg) -> pd.DataFrame:
    return generate_events(spark, cfg).toPandas()


@pytest.fixture(scope="module")
def log(spark, test_config):
    """The test-profile log joined with the planted groups (20k clicks: small enough to analyse in pandas)."""
    events = _events(spark, test_config)
    users, items = (df.toPandas() for df in ground_truth(spark, test_config))
    events["task"] = events["behavior"].map(BEHAVIOR_TASK)
    events["ug"] = events["user_id"].astype(str).map(users.set_index("raw_id")["group"])
    events["ig"] = events["item_id"].astype(str).map(items.set_index("raw_id")["group"])
    return events


def _sorted_rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, df[list(EVENT_COLUMNS)].itertuples(index=False)))


def test_same_seed_same_rows_whatever_the_partitioning_other_seed_differs(spark, log):
    repartitioned = _events(spark, _cfg("generator.partitions=3"))
    assert _sorted_rows(repartitioned) == _sorted_rows(log)
    other = _events(spark, _cfg("seed=7"))
    assert _sorted_rows(other) != _sorted_rows(log)


def test_sizes_ids_and_timestamps(log, test_config):
    g = test_config.generator
    counts = log["task"].value_counts()
    assert counts["click"] == g.events  # exactly the configured clicks
    assert log[["ug", "ig"]].notna().all().all()  # every raw id is in the ground truth
    assert 0.9 * g.users <= log["user_id"].nunique() <= g.users
    assert 0.9 * g.items <= log["item_id"].nunique() <= g.items
    start = start_timestamp(test_config)
    assert start == 1511568000  # 2017-11-25 00:00 UTC
    assert log["ts"].min() >= start and log["ts"].max() < start + g.days * 86_400
    # Clicks fill the window uniformly: each day gets ~1/days of them.
    per_day = np.bincount((log.loc[log.task == "click", "ts"] - start) // 86_400, minlength=g.days)
    assert per_day.min() > 0.8 * g.events / g.days


def test_funnel_is_click_then_fav_cart_then_buy(log):
    counts = log["task"].value_counts()
    assert counts["click"] > 5 * max(counts["fav"], counts["cart"])
    assert counts["cart"] > counts["buy"] > 0 and counts["fav"] > 0
    # Later tasks lie mostly, but not only (hidden clicks), on clicked pairs.
    clicked = set(zip(*log.loc[log.task == "click", ["user_id", "item_id"]].T.values, strict=True))
    later = log[log.task != "click"]
    on_clicked = np.mean([pair in clicked for pair in zip(later.user_id, later.item_id, strict=True)])
    assert 0.9 < on_clicked < 1.0


def _follows(events: pd.DataFrame, child: str, parent: str) -> bool:
    """Every ``child`` event can be matched to a distinct, strictly earlier ``parent`` event on its pair:
    per pair, the i-th child (by time) is later than the i-th parent."""
    key = ["user_id", "item_id"]
    c = events[events.task == child].sort_values("ts").assign(i=lambda d: d.groupby(key).cumcount())
    p = events[events.task == parent].sort_values("ts").assign(i=lambda d: d.groupby(key).cumcount())
    m = c.merge(p, on=[*key, "i"], how="left", suffixes=("", "_parent"))
    return bool(m["ts_parent"].notna().all() and (m["ts"] > m["ts_parent"]).all())


def test_every_conversion_follows_its_parent_on_the_same_pair(spark):
    events = _events(spark, _cfg("generator.hidden_click_fraction=0", "generator.events=5000"))
    events["task"] = events["behavior"].map(BEHAVIOR_TASK)
    assert _follows(events, "fav", "click") and _follows(events, "cart", "click")
    assert _follows(events, "buy", "cart")
    assert not _follows(events, "click", "buy")  # the check can fail


def test_zipf_rank_matches_the_midpoint_power_law(spark):
    n, s, rows = 40, 1.1, 60_000
    ranks = (
        spark.range(rows)
        .select(zipf_rank(uniform(3, "z", "id"), n, s).alias("r"))
        .groupBy("r")
        .count()
        .toPandas()
        .set_index("r")["count"]
        .reindex(range(1, n + 1), fill_value=0)
        .to_numpy()
    )
    # Oracle: mass of the density x^-s on [r - 1/2, r + 1/2), normalised over [1/2, n + 1/2).
    edges = np.arange(n + 1) + 0.5
    cdf = edges ** (1 - s)
    expected = (cdf[:-1] - cdf[1:]) / (cdf[0] - cdf[-1]) * rows
    chi2 = ((ranks - expected) ** 2 / expected).sum()
    assert chi2 < 80  # chi-square with 39 dof: p ~ 1e-4 at 80
    exact_zipf = np.arange(1, n + 1) ** -s
    assert np.allclose(ranks / rows, exact_zipf / exact_zipf.sum(), atol=0.03)  # close to discrete Zipf


def test_item_popularity_is_heavy_tailed(log, test_config):
    clicks = log.loc[log.task == "click", "item_id"].value_counts().to_numpy()
    top = max(1, test_config.generator.items // 100)
    share = clicks[:top].sum() / clicks.sum()
    assert share > 0.10  # 1% of items hold > 10x their uniform share


def test_groups_drive_who_clicks_what(log, test_config):
    g = test_config.generator
    pref = preferred_item_groups(test_config)
    assert pref.shape == (g.user_groups, g.preferred_groups)
    assert all(len(set(row)) == g.preferred_groups for row in pref)
    clicks = log[log.task == "click"]
    in_pref = [ig in pref[ug] for ug, ig in zip(clicks.ug, clicks.ig, strict=True)]
    expected = g.affinity + (1 - g.affinity) * g.preferred_groups / g.item_groups
    assert abs(np.mean(in_pref) - expected) < 0.03
    # Users are spread evenly over groups and every group is active.
    assert np.bincount(clicks.ug, minlength=g.user_groups).min() > 0.15 * len(clicks)


def test_conversion_rate_depends_on_the_group_pair(spark, log, test_config):
    """Per (user group, item group): fav rate among clicks. Over-dispersion against one pooled binomial
    rate is far above 1, and the observed rates follow the planted factors."""
    per_pair = log.groupby(["ug", "ig"])["task"].value_counts().unstack(fill_value=0)
    n, k = per_pair["click"].to_numpy(float), per_pair["fav"].to_numpy(float)
    pooled = k.sum() / n.sum()
    dispersion = ((k - n * pooled) ** 2 / (n * pooled * (1 - pooled))).sum() / (len(n) - 1)
    assert dispersion > 5  # ~1 if the rate did not depend on the pair
    planted = conversion_factors(spark, test_config).filter(F.col("task") == "fav").toPandas()
    planted = planted.set_index(["user_group", "item_group"])["rate"].reindex(per_pair.index)
    corr = np.corrcoef(np.log(planted.to_numpy()), np.log((k + 1) / (n + 1)))[0, 1]
    assert corr > 0.8


def test_conversion_factors_are_log_uniform_with_mean_one(spark):
    cfg = _cfg("generator.user_groups=30", "generator.item_groups=30", "generator.conversion_spread=3")
    f = conversion_factors(spark, cfg).toPandas()
    assert len(f) == 3 * 30 * 30 and set(f.task) == {"fav", "cart", "buy"}
    m = (3 - 1 / 3) / (2 * np.log(3))
    assert f.factor.between(1 / (3 * m), 3 / m).all()
    assert abs(f.factor.mean() - 1) < 0.05


def test_later_tasks_have_partly_their_own_affinity(spark):
    cfg = _cfg("generator.user_groups=5", "generator.item_groups=6", "generator.preferred_groups=2")
    f = conversion_factors(spark, cfg).toPandas()
    a = f.pivot_table(index=["task", "user_group"], columns="item_group", values="affinity")
    assert np.allclose(a.mean(axis=1), 1.0)  # mean 1 over item groups: funnel_rates stay the mean rates
    norm = (2 * 4.0 + 6 - 2) / 6
    assert set(np.round(np.unique(a.to_numpy()), 6)) == {round(1 / norm, 6), round(4.0 / norm, 6)}
    assert ((a.to_numpy() > 1).sum(axis=1) == 2).all()  # 2 own preferred item groups per task and user group
    boosted = {(t, c): set(np.flatnonzero(a.loc[(t, c)].to_numpy() > 1)) for t, c in a.index}
    clicks = {c: set(row) for c, row in enumerate(preferred_item_groups(cfg))}
    assert any(groups != clicks[c] for (_, c), groups in boosted.items())  # not simply the click's groups
    assert len({frozenset(v) for (t, _), v in boosted.items() if t == "fav"}) > 1  # drawn per user group
    rates = f.assign(expected=f.factor * f.affinity * f.base_rate)
    assert np.allclose(rates.rate, rates.expected)
    off = conversion_factors(spark, _cfg("generator.task_affinity=1")).toPandas()
    assert np.allclose(off.affinity, 1.0)


def test_one_and_two_task_logs(spark):
    one = _events(spark, _cfg("tasks.order=[click]", "input.behavior_map={pv: click}", "generator.events=500"))
    assert set(one.behavior) == {"pv"} and len(one) == 500
    two = _cfg(
        "tasks.order=[click, buy]",
        "input.behavior_map={pv: click, buy: buy}",
        "generator.funnel_rates=[0.2]",
        "generator.events=2000",
    )
    events = _events(spark, two)
    assert set(events.behavior) == {"pv", "buy"}
    assert 0.1 < (events.behavior == "buy").mean() < 0.3


def test_bad_config_is_one_clear_error(spark, tmp_path):
    with pytest.raises(ConfigError, match="generator.funnel_parents"):
        _cfg("generator.funnel_parents=[0, 2, 1]")
    with pytest.raises(ConfigError, match="generator.preferred_groups"):
        _cfg("generator.preferred_groups=9")
    with pytest.raises(ConfigError, match="generator.start' must be a date"):
        _cfg("generator.start=yesterday")
    cfg = _cfg("input.behavior_map={pv: click, fav: fav, cart: cart}")  # buy has no raw behavior
    with pytest.raises(UserError, match="task 'buy' has no raw behavior"):
        run_generate(spark, cfg, str(tmp_path / "raw"), "2026-11-23")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_id_scramble_is_a_bijection(n, seed):
    s = IdScramble.make(n, np.random.default_rng(seed))
    ids = s.apply(np.arange(n))
    assert len(set(ids)) == n and min(ids) >= 1 and max(ids) <= s.p


def test_job_writes_taobao_csv_and_ground_truth_atomically(spark, tmp_path):
    cfg = _cfg("generator.events=3000")
    cfg.output.root = str(tmp_path / "out")
    raw = tmp_path / "out" / "raw" / "2026-11-23"
    summary = run_generate(spark, cfg, str(raw), "2026-11-23")
    rows = [r for f in sorted(raw.glob("part-*.csv")) for r in csv.reader(f.open())]
    assert rows and all(len(r) == 5 for r in rows)
    assert all(r[0].isdigit() and r[1].isdigit() and r[2].isdigit() and r[4].isdigit() for r in rows)
    assert {r[3] for r in rows} == set(BEHAVIOR_TASK)
    m = summary.metrics
    assert m["events"] == len(rows) and m["events_click"] == 3000
    assert sum(m[f"events_{t}"] for t in cfg.tasks.order) == len(rows)
    assert sum(r[3] == "buy" for r in rows) == m["events_buy"]
    users = read_table(spark, GROUND_TRUTH_USERS, cfg.output.root, "2026-11-23")
    items = read_table(spark, GROUND_TRUTH_ITEMS, cfg.output.root, "2026-11-23")
    assert users.count() == cfg.generator.users and items.count() == cfg.generator.items
    assert users.agg(F.max("group")).first()[0] == cfg.generator.user_groups - 1
    # A re-run replaces the log as a whole and leaves no staging directory behind.
    cfg.generator.events = 1000
    run_generate(spark, cfg, str(raw), "2026-11-23")
    again = [r for f in raw.glob("part-*.csv") for r in csv.reader(f.open())]
    assert sum(r[3] == "pv" for r in again) == 1000
    assert sorted(p.name for p in Path(raw).parent.iterdir()) == ["2026-11-23"]


def test_out_refuses_a_non_empty_directory_generate_did_not_write(spark, tmp_path, capsys):
    from jobs.cli import main

    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_text("precious")
    args = ["generate", "--out", str(out), "--profile", "test", "--set", "generator.events=500"]
    args += ["--output", str(tmp_path / "root"), "--run-date", "2026-11-23"]
    capsys.readouterr()
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("mgoe: error: --out ") and "pass --overwrite" in err[0], err
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]  # nothing deleted
    assert not (tmp_path / "root" / "ground_truth_users").exists()  # nothing written either
    # told to: replaced, and marked as generate's own; a re-run replaces its own log without being told
    assert main([*args, "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert GENERATED_MARKER in names and "holiday.jpg" not in names and any(n.startswith("part-") for n in names)
    assert main(args) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:2], str(empty), *args[3:]]) == 0
    assert (empty / GENERATED_MARKER).is_file()
