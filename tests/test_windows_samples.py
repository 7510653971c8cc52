"""Time windows (quantile and date cutoffs) and samples (labels, exposures, negatives, cold start)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest

from mgoe_spark.config import load_config, with_overrides
from mgoe_spark.features.samples import build_samples
from mgoe_spark.windows.cutoffs import Windows, compute_windows, parse_instant

SCHEMA = "user_id long, item_id long, task string, ts long, category string"
TASKS = ["click", "fav", "cart", "buy"]


def cfg(*overrides: str):
    """The test profile in the ``pairs`` space with observed pairs only (no default negatives) unless an
    override adds them (these tests check the pairs protocol: labels per pair, negatives, splits)."""
    return load_config(
        profile="test", overrides=["samples.space=pairs", "samples.negatives_per_positive=0", *overrides]
    )


def test_quantile_cutoffs_split_the_events_by_rank(spark):
    ts = [(u % 7 + 1, u % 5 + 1, "click", (u * 37) % 401, None) for u in range(400)]
    df = spark.createDataFrame(ts, SCHEMA)
    w = compute_windows(df, cfg("windows.quantile_rel_error=0").windows)
    values = sorted(r[3] for r in ts)
    below = [sum(v <= c for v in values) / len(values) for c in (w.train_cutoff, w.test_cutoff)]
    assert abs(below[0] - 0.8) <= 0.01 and abs(below[1] - 0.9) <= 0.01
    assert w.cutoff("train") == w.train_cutoff and w.cutoff("test") == w.test_cutoff


def test_date_cutoffs_are_inclusive_days_and_errors_name_the_key():
    c = cfg("windows.mode=dates", "windows.train_cutoff=2017-11-30", "windows.test_cutoff=2017-12-02T12:00:00")
    w = compute_windows(None, c.windows)  # no Spark work in dates mode
    day_end = int(dt.datetime(2017, 12, 1, tzinfo=dt.UTC).timestamp()) - 1
    assert w.train_cutoff == day_end
    assert w.test_cutoff == int(dt.datetime(2017, 12, 2, 12, tzinfo=dt.UTC).timestamp())
    assert parse_instant("2017-11-30", "k") == day_end
    with pytest.raises(ValueError, match="windows.train_cutoff 'yesterday' is not a date"):
        compute_windows(
            None, cfg("windows.mode=dates", "windows.train_cutoff=yesterday", "windows.test_cutoff=2017-12-02").windows
        )
    with pytest.raises(ValueError, match="must be before the test cutoff"):
        Windows(10, 10)


def label_oracle(rows, w: Windows, tasks, exposure=None):
    """(user, item, window) -> (first ts, labels)."""
    keys = {}
    labels = defaultdict(lambda: [0.0] * len(tasks))
    for u, i, t, ts, _ in rows:
        if ts <= w.train_cutoff:
            continue
        win = "test" if ts > w.test_cutoff else "train"
        key = (u, i, win)
        if (exposure is None and t in tasks) or t == exposure:
            keys[key] = min(ts, keys.get(key, ts))
        if t in tasks:
            labels[key][tasks.index(t)] = 1.0
    return {k: (ts, labels[k]) for k, ts in keys.items()}


LOG = [
    # feature window (ts <= 10)
    (1, 1, "click", 1, None),
    (1, 2, "click", 5, None),
    (2, 1, "click", 3, None),
    (3, 3, "click", 9, None),
    # train window (10, 20]
    (1, 1, "click", 12, None),
    (1, 1, "buy", 15, None),
    (1, 3, "click", 11, None),
    (1, 3, "cart", 13, None),
    (2, 4, "click", 16, None),  # item 4 first seen here: cold for train rows, not for test rows
    (4, 1, "fav", 18, None),  # user 4 is new: cold
    # test window (> 20)
    (2, 4, "click", 22, None),
    (2, 4, "fav", 23, None),
    (3, 3, "click", 25, None),
    (1, 1, "click", 21, None),
    (5, 5, "click", 30, None),  # new user and item
]
WIN = Windows(10, 20)


def test_observed_samples_labels_splits_and_cold_start(spark):
    df = spark.createDataFrame(LOG, SCHEMA)
    c = cfg("windows.validation_fraction=0")
    got = {(r.user_id, r.item_id, r.split): r for r in build_samples(df, WIN, c).collect()}
    expected = label_oracle(LOG, WIN, TASKS)
    assert {(u, i, "test" if w == "test" else "train") for u, i, w in expected} == set(got)
    for (u, i, w), (ts, labels) in expected.items():
        row = got[(u, i, w)]
        assert row.ts == ts and list(row.labels) == labels
    cold = {k for k, r in got.items() if r.cold_start}
    assert cold == {(2, 4, "train"), (4, 1, "train"), (5, 5, "test")}
    dropped = build_samples(df, WIN, cfg("windows.validation_fraction=0", "samples.cold_start=drop")).collect()
    assert {(r.user_id, r.item_id, r.split) for r in dropped} == set(got) - cold


EVENT_LOG = [
    (1, 1, "click", 5, None),  # feature window: not a sample
    (1, 1, "click", 12, None),
    (1, 1, "click", 12, None),  # an exact duplicate: counted once
    (1, 1, "click", 14, None),  # a second click of the same pair: its own row
    (1, 1, "buy", 15, None),
    (2, 3, "exposure", 13, None),  # not a task of tasks.order: not a sample
    (2, 3, "fav", 16, None),  # user 2 and item 3 are new: cold
    (1, 1, "cart", 25, None),  # test window
]


def test_events_space_is_one_row_per_event_with_one_hot_labels(spark):
    c = load_config(profile="test", overrides=["windows.validation_fraction=0", "tasks.exposure=null"])
    assert c.samples.resolve(c.tasks.exposure) == "events"  # the default for logs without exposures
    df = spark.createDataFrame(EVENT_LOG, SCHEMA)
    got = sorted(
        (r.user_id, r.item_id, r.split, r.ts, list(r.labels), r.cold_start) for r in build_samples(df, WIN, c).collect()
    )
    assert got == [
        (1, 1, "test", 25, [0.0, 0.0, 1.0, 0.0], False),
        (1, 1, "train", 12, [1.0, 0.0, 0.0, 0.0], False),
        (1, 1, "train", 14, [1.0, 0.0, 0.0, 0.0], False),
        (1, 1, "train", 15, [0.0, 0.0, 0.0, 1.0], False),
        (2, 3, "train", 16, [0.0, 1.0, 0.0, 0.0], True),
    ]
    # the same log in the pairs space: one row per (pair, window), multi-hot
    pairs = build_samples(df, WIN, cfg("windows.validation_fraction=0")).collect()
    assert sorted((r.user_id, r.item_id, r.split, list(r.labels)) for r in pairs) == [
        (1, 1, "test", [0.0, 0.0, 1.0, 0.0]),
        (1, 1, "train", [1.0, 0.0, 0.0, 1.0]),
        (2, 3, "train", [0.0, 1.0, 0.0, 0.0]),
    ]


def test_events_of_a_pair_share_their_split(spark):
    rows = [(u, i, t, 11 + k, None) for u in range(1, 31) for i in (1, 2) for k, t in enumerate(TASKS)]
    c = load_config(profile="test", overrides=["windows.validation_fraction=0.5"])
    per_pair = defaultdict(set)
    for r in build_samples(spark.createDataFrame(rows, SCHEMA), WIN, c).collect():
        per_pair[(r.user_id, r.item_id)].add(r.split)
    assert len(per_pair) == 60 and all(len(s) == 1 for s in per_pair.values())
    assert {s for v in per_pair.values() for s in v} == {"train", "valid"}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["samples.space=exposures"], "samples.space' is 'exposures' but the log has no exposure pseudo-task"),
        (["samples.negatives_per_positive=3"], "samples.negatives_per_positive' applies to samples.space=pairs only"),
        (["samples.negatives_per_user=2"], "samples.negatives_per_user' must be 0 in samples.space=events"),
        (
            ["tasks.exposure=exposure", "samples.negatives_per_positive=1"],
            "applies to samples.space=pairs only (the space is 'exposures')",
        ),
        (["samples.space=rows"], "samples.space' must be one of 'auto', 'events', 'exposures', 'pairs'"),
    ],
)
def test_sample_space_combinations_are_checked(overrides, needle):
    from mgoe_spark.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert needle in str(err.value)
    # the same keys are fine where they apply
    assert load_config(overrides=["samples.space=pairs", "samples.negatives_per_user=2"]).samples.space == "pairs"


def test_validation_split_is_seeded_and_by_user(spark):
    rows = [(u, i, "click", 15, None) for u in range(1, 41) for i in range(1, 6)]
    rows += [(u, 1, "click", 1, None) for u in range(1, 41)]
    df = spark.createDataFrame(rows, SCHEMA)
    c = cfg("windows.validation_fraction=0.3", "windows.validation_by=user")
    a = {(r.user_id, r.item_id): r.split for r in build_samples(df, WIN, c).collect()}
    per_user = defaultdict(set)
    for (u, _), s in a.items():
        per_user[u].add(s)
    assert all(len(s) == 1 for s in per_user.values())  # whole users held out
    n_valid = sum(s == {"valid"} for s in per_user.values())
    assert 3 <= n_valid <= 22  # ~30% of 40 users
    b = {(r.user_id, r.item_id): r.split for r in build_samples(df, WIN, c).collect()}
    assert a == b


def test_exposures_are_the_sample_space(spark):
    log = [
        (1, 1, "click", 2, None),
        (1, 1, "exposure", 12, None),
        (1, 1, "click", 12, None),
        (1, 2, "exposure", 13, None),  # unclicked exposure: all-zero labels
        (1, 3, "click", 14, None),  # task event without exposure: not a sample
        (2, 2, "exposure", 22, None),
        (2, 2, "like", 23, None),
    ]
    df = spark.createDataFrame(log, SCHEMA)
    c = cfg(
        "samples.space=auto",  # exposures: automatic with tasks.exposure
        "tasks.order=[click, like]",
        "tasks.exposure=exposure",
        "input.behavior_map={pv: click}",
        "windows.validation_fraction=0",
    )
    got = {(r.user_id, r.item_id, r.split): list(r.labels) for r in build_samples(df, WIN, c).collect()}
    assert got == {(1, 1, "train"): [1.0, 0.0], (1, 2, "train"): [0.0, 0.0], (2, 2, "test"): [0.0, 1.0]}
    expected = label_oracle(log, WIN, ["click", "like"], exposure="exposure")
    assert {(u, i, w): lab for (u, i, w), (_, lab) in expected.items()} == got


def test_negative_sampling_is_seeded_and_avoids_observed_pairs(spark):
    df = spark.createDataFrame(LOG, SCHEMA)
    c = cfg("samples.negatives_per_user=3", "windows.validation_fraction=0")
    first = build_samples(df, WIN, c, n_items=6).collect()
    again = build_samples(df, WIN, c, n_items=6).collect()
    assert sorted(map(tuple, first)) == sorted(map(tuple, again))
    observed = {(u, i, "test" if w == "test" else "train") for u, i, w in label_oracle(LOG, WIN, TASKS)}
    negatives = [r for r in first if (r.user_id, r.item_id, r.split) not in observed]
    assert len(first) == len(observed) + len(negatives)
    per_user = defaultdict(list)
    for r in negatives:
        assert list(r.labels) == [0.0] * 4 and 1 <= r.item_id <= 6
        per_user[(r.user_id, r.split)].append(r.item_id)
    users = {(u, w) for u, _, w in observed}
    assert set(per_user) == users
    for key, items in per_user.items():
        assert len(items) == len(set(items)) <= 3
        # fewer than 3 only if the user's unobserved items ran out or the 14 draws collided
        assert len(items) == 3 or len(items) == 6 - sum(1 for u, _, w in observed if (u, w) == key)


def _negatives(rows, observed):
    per_window = defaultdict(list)
    for r in rows:
        if (r.user_id, r.item_id, r.split) not in observed:
            assert list(r.labels) == [0.0] * 4
            per_window[(r.user_id, r.split)].append(r.item_id)
    return per_window


def test_default_negatives_are_n_per_positive_pair_and_skip_exposure_logs(spark):
    # 4 users x 30 observed pairs in the train window, 300 items: plenty of room for 3 per positive
    log = [(u, (u * 31 + k * 7) % 300 + 1, "click", 12, None) for u in range(1, 5) for k in range(30)]
    log += [(u, 1, "click", 1, None) for u in range(1, 5)]
    df = spark.createDataFrame(log, SCHEMA)
    c = load_config(profile="test", overrides=["samples.space=pairs", "windows.validation_fraction=0"])
    assert c.samples.per_positive("pairs") == 7  # the pairs space's default: click rate near 1/8
    c = with_overrides(c, ["samples.negatives_per_positive=3"])
    rows = build_samples(df, WIN, c, n_items=300).collect()
    observed = {(u, i, "test" if w == "test" else "train") for u, i, w in label_oracle(log, WIN, TASKS)}
    per_window = _negatives(rows, observed)
    assert {k: len(set(v)) for k, v in per_window.items()} == {(u, "train"): 90 for u in range(1, 5)}
    assert all(len(v) == len(set(v)) for v in per_window.values())
    click_rate = sum(r.labels[0] for r in rows) / len(rows)
    assert click_rate == pytest.approx(1 / 4)
    exposed = [(1, 2, "exposure", 12, None), (1, 2, "click", 12, None), (1, 3, "exposure", 13, None)]
    ce = load_config(profile="test", overrides=["tasks.exposure=exposure", "windows.validation_fraction=0"])
    assert ce.samples.resolve(ce.tasks.exposure) == "exposures" and ce.samples.per_positive("exposures") == 0
    got = build_samples(spark.createDataFrame(exposed, SCHEMA), WIN, ce, n_items=300).collect()
    assert sorted((r.user_id, r.item_id) for r in got) == [(1, 2), (1, 3)]  # exposures only


def test_popularity_negatives_follow_item_popularity(spark):
    # item 1 is in 60 of the 80 sample-window pairs of other users; user 99 must mostly draw item 1
    log = [(u, 1, "click", 12, None) for u in range(1, 61)]
    log += [(u, 100 + u, "click", 12, None) for u in range(61, 81)]
    log += [(99, 500 + k, "click", 12, None) for k in range(20)]
    df = spark.createDataFrame(log, SCHEMA)
    base = ["windows.validation_fraction=0", "samples.negatives_per_positive=1"]
    pop = build_samples(df, WIN, cfg(*base, "samples.negative_sampling=popularity")).collect()
    observed = {(u, i, "test" if w == "test" else "train") for u, i, w in label_oracle(log, WIN, TASKS)}
    negs = _negatives(pop, observed)
    assert 1 in negs[(99, "train")]  # the hot item is drawn (distinct per user, so at most once)
    pool_items = {i for _, i, *_ in log}
    assert all(i in pool_items for v in negs.values() for i in v)  # only items seen in the window
    # users 61..80 each draw 1 negative: ~75% of draws land on item 1 (binomial, 20 users)
    hot = sum(negs[(u, "train")] == [1] for u in range(61, 81))
    assert hot >= 10
    uni = _negatives(build_samples(df, WIN, cfg(*base), n_items=600).collect(), observed)
    assert sum(negs_u == [1] for negs_u in (uni[(u, "train")] for u in range(61, 81))) <= 3


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("samples.negatives_per_positive=-2", "samples.negatives_per_positive' must be >= 0"),
        ("samples.negative_sampling=hot", "samples.negative_sampling' must be one of 'uniform', 'popularity'"),
        ("samples.negatives_per_user=-1", "samples.negatives_per_user' must be >= 0"),
        ("windows.validation_by=item", "windows.validation_by' must be one of 'row', 'user'"),
        ("windows.quantile_rel_error=0.5", "windows.quantile_rel_error' must be in [0, 0.1)"),
        ("samples.cold_start=maybe", "samples.cold_start' must be one of 'keep', 'drop'"),
    ],
)
def test_stage2_config_errors_name_the_key(override, needle):
    from mgoe_spark.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert needle in str(err.value)
