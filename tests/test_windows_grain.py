"""Windows on logs of any time grain: day-granular timestamps, no timestamps (Tenrec), the windows table.

The day-level case is the first real log a new user tried: a 10-day log whose events carry only the day, so
both default quantiles (0.8, 0.9) fall on the same day and, unsnapped, the train window was empty.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from mgoe_spark.config import load_config
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.storage import TableStore
from mgoe_spark.ingest.parse import TENREC_COLUMNS
from mgoe_spark.ingest.run import run_ingest
from mgoe_spark.windows import table as windows_table
from mgoe_spark.windows.cutoffs import (
    ORDER_SCALE,
    USER_EVENT_ORDER,
    WindowError,
    compute_windows,
    measure,
    user_event_order,
)
from schemas import INTERACTIONS

SCHEMA = "user_id long, item_id long, task string, ts long, category string"
DAY0 = int(dt.datetime(2019, 6, 9, tzinfo=dt.UTC).timestamp())


def day_log(spark, events_per_day: list[int]):
    days = [DAY0 + d * 86_400 for d, n in enumerate(events_per_day) for _ in range(n)]
    rows = [(e % 50 + 1, e % 30 + 1, "click", ts, None) for e, ts in enumerate(days)]
    return spark.createDataFrame(rows, SCHEMA)


def test_day_granular_log_of_ten_days_gets_nonempty_windows(spark):
    # 10 days, the last day heavy (40% of events): both quantiles fall on day 10, the last timestamp.
    per_day = [20] * 9 + [120]
    df = day_log(spark, per_day)
    w = measure(df, compute_windows(df, load_config(profile="test").windows))
    days = [DAY0 + d * 86_400 for d in range(10)]
    assert (w.train_cutoff, w.test_cutoff) == (days[7], days[8])  # snapped to the two distinct days before
    n = sum(per_day)
    assert (w.feature_share, w.train_share, w.test_share) == pytest.approx((160 / n, 20 / n, 120 / n))
    text = w.summary()
    assert "features <= 2019-06-16 (53.3% of events)" in text and "<= 2019-06-17 (6.7%)" in text
    assert "test samples after (40.0%)" in text


def test_quantiles_on_distinct_days_do_not_move(spark):
    df = day_log(spark, [10] * 10)
    w = compute_windows(df, load_config(profile="test", overrides=["windows.quantile_rel_error=0"]).windows)
    assert (w.train_cutoff, w.test_cutoff) == (DAY0 + 7 * 86_400, DAY0 + 8 * 86_400)  # 80% and 90% of 10 days


def test_two_distinct_timestamps_give_a_one_line_hint_to_use_dates(spark):
    df = day_log(spark, [30, 30])
    with pytest.raises(WindowError) as err:
        compute_windows(df, load_config(profile="test").windows)
    message = str(err.value)
    assert "\n" not in message and "--set windows.mode=dates" in message and "2019-06-09 .. 2019-06-10" in message


def test_date_windows_outside_the_log_name_the_empty_window(spark, tmp_path):
    df = day_log(spark, [10] * 5)
    settings = ["windows.mode=dates", "windows.train_cutoff=2019-06-10", "windows.test_cutoff=2019-06-30"]
    cfg = load_config(profile="test", overrides=[*settings, f"output.root={tmp_path}"])
    with pytest.raises(WindowError, match="the test sample window is empty"):
        windows_table.choose(TableStore.of(spark, cfg), df, cfg, "2026-01-01")


def tenrec_user_grouped(tmp_path, users: int = 20, per_user: int = 10):
    """A Tenrec QB-video file grouped by user (as the real files are): user u's rows all together."""
    d = tmp_path / "tenrec"
    d.mkdir()
    lines = [",".join(TENREC_COLUMNS)]
    for u in range(1, users + 1):
        for j in range(per_user):
            lines.append(f"{u},{(u * 7 + j) % 40 + 1},{j % 2},0,{int(j % 3 == 0)},0,5,1,1,2")
    (d / "part.csv").write_text("\n".join(lines) + "\n")
    return d


def test_tenrec_user_grouped_file_is_cut_in_each_users_own_order(spark, tmp_path):
    cfg = load_config("configs/tenrec_qb_video.yaml", profile="test", overrides=[f"output.root={tmp_path / 'out'}"])
    run_ingest(spark, cfg, str(tenrec_user_grouped(tmp_path)), "2026-01-01")
    store = TableStore.of(spark, cfg)
    raw = store.read(INTERACTIONS, "2026-01-01").drop("run_date")
    axis = windows_table.on_time_axis(raw, cfg)
    w = windows_table.choose(store, axis, cfg, "2026-01-01")
    assert w.time_unit == USER_EVENT_ORDER
    assert (w.train_cutoff, w.test_cutoff) == (8 * ORDER_SCALE // 10, 9 * ORDER_SCALE // 10)
    # Every user: lines 1-8 features, line 9 a train sample, line 10 a test sample (one line = several events).
    window = F.when(F.col("ts") <= w.train_cutoff, "f").when(F.col("ts") <= w.test_cutoff, "t").otherwise("x")
    lines_per_window = axis.groupBy("user_id", window.alias("w")).agg(F.countDistinct("ts").alias("lines"))
    got = {(r["user_id"], r["w"]): r["lines"] for r in lines_per_window.collect()}
    assert got == {(u, w_): n for u in range(1, 21) for w_, n in (("f", 8), ("t", 1), ("x", 1))}
    # The global file-order cut this replaces gave the last users no feature events at all.
    c1 = raw.approxQuantile("ts", [0.8], 0.0)[0]
    cold = raw.groupBy("user_id").agg(F.min("ts").alias("first")).where(F.col("first") > c1).count()
    assert cold >= 3
    # features reads the same windows back
    assert windows_table.recorded(store, cfg, "2026-01-01") == w


def test_user_event_order_keeps_one_lines_events_together(spark):
    df = spark.createDataFrame(
        [
            (1, 1, "exposure", 5, None),
            (1, 1, "click", 5, None),
            (1, 2, "exposure", 9, None),
            (2, 3, "exposure", 2, None),
        ],
        SCHEMA,
    )
    got = sorted((r["user_id"], r["task"], r["ts"]) for r in user_event_order(df).collect())
    half, full = ORDER_SCALE // 2, ORDER_SCALE
    assert got == [(1, "click", half), (1, "exposure", half), (1, "exposure", full), (2, "exposure", full)]


def test_features_refuses_a_config_asking_for_other_windows(spark, tmp_path):
    df = day_log(spark, [10] * 10)
    cfg = load_config(profile="test", overrides=[f"output.root={tmp_path}"])
    store = TableStore.of(spark, cfg)
    chosen = windows_table.choose(store, df, cfg, "2026-01-01")
    assert windows_table.recorded(store, cfg, "2026-01-01") == chosen
    other = load_config(profile="test", overrides=[f"output.root={tmp_path}", "windows.q1=0.7"])
    with pytest.raises(UserError) as err:
        windows_table.recorded(TableStore.of(spark, other), other, "2026-01-01")
    assert "windows.q1=0.8" in str(err.value) and "windows.q1=0.7" in str(err.value) and "\n" not in str(err.value)
    # the validation split does not choose cutoffs: changing it is allowed
    same = load_config(profile="test", overrides=[f"output.root={tmp_path}", "windows.validation_fraction=0.2"])
    assert windows_table.recorded(TableStore.of(spark, same), same, "2026-01-01") == chosen
