"""The example configs in configs/ load and validate, and the generic one reads the log it documents."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mgoe_spark.config import load_config
from mgoe_spark.ingest import parse as ing

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def test_the_example_configs_are_there():
    names = {p.name for p in CONFIGS}
    assert {"taobao_userbehavior.yaml", "tenrec_qb_video.yaml", "generic_events.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.input.format in ("taobao", "tenrec", "generic_csv", "generic_parquet")
    assert load_config(path, profile="test").input == cfg.input  # a profile changes sizes, not the input


def test_generic_config_reads_the_log_it_documents(spark, tmp_path):
    from mgoe_spark.ingest.run import load_records

    cfg = load_config(CONFIG_DIR / "generic_events.yaml", profile="test")
    log = tmp_path / "events.csv"
    log.write_text(
        "visitor,product,category,event,event_time\n"
        "v-1001,p-77,shoes,view,2024-03-01 09:15:02\n"
        "v-1001,p-77,shoes,add_to_cart,2024-03-01 09:16:40\n"
        "v-1002,p-12,,purchase,2024-03-01 10:01:00\n"
        'v-1003,"p-9, red",hats,favorite,2024-03-02 00:00:00\n'
        "v-1003,p-9,hats,remove_from_cart,2024-03-02 00:00:01\n"
        "v-1004,p-9,hats,view,2024-03-02\n"
    )
    valid, rejected = ing.split(load_records(spark, cfg, str(log)))
    rows = sorted(tuple(r) for r in valid.select("user_raw", "item_raw", "task", "ts", "category").collect())
    assert rows == [
        ("v-1001", "p-77", "cart", utc("2024-03-01 09:16:40"), "shoes"),
        ("v-1001", "p-77", "click", utc("2024-03-01 09:15:02"), "shoes"),
        ("v-1002", "p-12", "buy", utc("2024-03-01 10:01:00"), None),
        ("v-1003", "p-9, red", "fav", utc("2024-03-02 00:00:00"), "hats"),
    ]
    assert sorted(tuple(r) for r in rejected.select("code", "reason").collect()) == [
        ("bad_timestamp", "timestamp '2024-03-02' does not match date_format 'yyyy-MM-dd HH:mm:ss'"),
        ("unknown_behavior", "unknown behavior 'remove_from_cart'"),
    ]


@pytest.mark.parametrize(
    ("name", "tasks"),
    [("taobao_fav_cart_buy", {"fav", "cart", "buy"}), ("retailrocket_view_cart_buy", {"click", "cart", "buy"})],
)
def test_the_real_log_configs_read_their_logs_without_a_reject(spark, tmp_path, name, tasks):
    """The configs of the real logs in ../shared/data (issue 27) parse every one of the first 3,000 lines
    (header skipped) into its tasks, ids and unix-second times; skipped where ../shared is absent."""
    from mgoe_spark.ingest.run import load_records
    from tests.support import SHARED

    source = SHARED / "data" / name / "events.csv"
    if not source.is_file():
        pytest.skip(f"{source} is not here")
    with source.open() as f:
        head = [next(f) for _ in range(3001)]
    log = tmp_path / "events.csv"
    log.write_text("".join(head))
    valid, rejected = ing.split(load_records(spark, load_config(CONFIG_DIR / f"{name}.yaml", profile="test"), str(log)))
    assert rejected.count() == 0
    first = head[1].strip().split(",")
    got = valid.orderBy("ts").select("user_raw", "item_raw", "ts").collect()
    assert valid.count() == 3000 and {r.task for r in valid.select("task").distinct().collect()} <= tasks
    assert (first[0], first[1], int(first[3])) in {(r.user_raw, r.item_raw, r.ts) for r in got}
