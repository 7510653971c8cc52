"""Ingestion: exact counts on the real Taobao slice, every reject reason, duplicates, Tenrec file order,
generic CSV / Parquet layouts, dense and stable vocabularies, and the `mgoe ingest` command end to end."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from mgoe_spark.config import load_config
from mgoe_spark.core.storage import partition_path
from mgoe_spark.ingest import parse as ing
from mgoe_spark.ingest.run import run_ingest
from schemas import INTERACTIONS, REJECTS, RUN_METRICS, VOCAB_ITEMS, VOCAB_USERS


def cfg_with(*overrides: str):
    return load_config(profile="test", overrides=list(overrides))


def lines_of(spark, path):
    return ing.text_lines(spark.read.text(str(path)))


def read_arrow(root, schema, run_date) -> pd.DataFrame:
    """A written partition, read with the contract's pyarrow schema (as the trainer does)."""
    table = pq.read_table(partition_path(str(root), schema, run_date), schema=schema.arrow(with_partition=False))
    assert table.schema.equals(schema.arrow(with_partition=False))
    return table.to_pandas()


def rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.select(*cols).collect())


# ---- the real slice --------------------------------------------------------------------------------------


def test_taobao_slice_ingests_exactly(spark, taobao_slice, tmp_path):
    cfg = cfg_with(f"output.root={tmp_path}")
    m = run_ingest(spark, cfg, str(taobao_slice), "2017-11-26").metrics
    assert m["rejects"] == 0 and m["duplicates"] == 0 and m["header_lines"] == 0
    assert m["lines_in"] == m["rows_in"] == m["rows_out"] == 110_300
    assert (m["task.click"], m["task.fav"], m["task.cart"], m["task.buy"]) == (98_361, 3_383, 6_063, 2_493)
    assert (m["users"], m["items"]) == (66_454, 84_793)
    assert (m["vocab_users"], m["vocab_items"], m["new_users"]) == (66_454, 84_793, 66_454)

    raw = pd.read_csv(taobao_slice, header=None, names=list(ing.TAOBAO_COLUMNS), dtype=str)
    users = read_arrow(tmp_path, VOCAB_USERS, "2017-11-26")
    items = read_arrow(tmp_path, VOCAB_ITEMS, "2017-11-26")
    for vocab, column in ((users, "user_id"), (items, "item_id")):
        assert sorted(vocab["id"]) == list(range(1, len(vocab) + 1))  # dense 1..N, 0 unused
        assert set(vocab["raw_id"]) == set(raw[column])
        # first run: ids follow numeric order of the raw ids (deterministic)
        assert (vocab.sort_values("id")["raw_id"].astype(np.int64).diff().dropna() > 0).all()
    inter = read_arrow(tmp_path, INTERACTIONS, "2017-11-26")
    back = inter.merge(users.rename(columns={"raw_id": "u", "id": "user_id"}), on="user_id").merge(
        items.rename(columns={"raw_id": "i", "id": "item_id"}), on="item_id"
    )
    expected = raw.assign(task=raw["behavior_type"].map(cfg.input.behavior_map), ts=raw["timestamp"].astype(np.int64))
    key = ["u", "i", "task", "ts", "category"]
    got = back[key].sort_values(key).reset_index(drop=True)
    want = expected.rename(columns={"user_id": "u", "item_id": "i", "category_id": "category"})[key]
    pd.testing.assert_frame_equal(got, want.sort_values(key).reset_index(drop=True), check_dtype=False)


# ---- rejects and duplicates ------------------------------------------------------------------------------

BROKEN_TAOBAO = [
    ("1,10,100,pv,1511658000", None, None),
    ("2,20,200,fav,1511658001", None, None),
    ("3,30,300,pv", "field_count", "expected 5 fields, got 4"),
    ("4,40,400,pv,1511658000,extra", "field_count", "expected 5 fields, got 6"),
    ("", "empty_line", "empty line"),
    ("5,,500,pv,1511658000", "empty_field", "empty field 'item_id'"),
    ("6,60,,pv,1511658000", "empty_field", "empty field 'category_id'"),
    ("x6,60,600,pv,1511658000", "bad_id", "user_id 'x6' is not a non-negative integer"),
    ("7,-70,700,pv,1511658000", "bad_id", "item_id '-70' is not a non-negative integer"),
    ("7,70,700,pv,soon", "bad_timestamp", "timestamp 'soon' is not an integer"),
    ("7,70,700,pv,99999999999999999999", "bad_timestamp", "timestamp '99999999999999999999' is not an integer"),
    ("8,80,800,xyz,1511658000", "unknown_behavior", "unknown behavior 'xyz'"),
    (" 1 , 10 ,100, pv ,1511658000", None, None),  # spaces are trimmed: an exact duplicate of line 1
    ("1,10,100,buy,1511658000", None, None),  # same pair and time, other task: not a duplicate
    ("2,20,200,fav,1511658001", None, None),  # duplicate of line 2
]


def test_broken_taobao_lines_are_rejected_with_reason_and_raw_line(spark, tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(line for line, _, _ in BROKEN_TAOBAO) + "\n")
    valid, rejected = ing.read_taobao(lines_of(spark, path), cfg_with())
    got = rows(rejected, "raw", "code", "reason")
    assert got == sorted((line, code, reason) for line, code, reason in BROKEN_TAOBAO if code)
    assert {r["source"] for r in rejected.select("source").collect()} == {f"file:{path.resolve()}"}

    n_ok = sum(code is None for _, code, _ in BROKEN_TAOBAO)
    assert valid.count() == n_ok
    deduped = ing.deduplicate(valid)
    got = rows(deduped, "user_raw", "item_raw", "task", "ts", "copies")
    assert got == [
        ("1", "10", "buy", 1511658000, 1),
        ("1", "10", "click", 1511658000, 2),
        ("2", "20", "fav", 1511658001, 2),
    ]
    # accounting: every line is rejected, kept, or a counted duplicate
    duplicates = sum(c for *_, c in got) - len(got)
    assert len(BROKEN_TAOBAO) == rejected.count() + len(got) + duplicates


def test_unknown_behavior_follows_the_configured_map(spark, tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("1,10,100,pv,5\n1,10,100,fav,6\n")
    cfg = cfg_with("input.behavior_map={pv: click}")
    valid, rejected = ing.read_taobao(lines_of(spark, path), cfg)
    assert rows(valid, "task", "ts") == [("click", 5)]
    assert rows(rejected, "reason") == [("unknown behavior 'fav'",)]


# ---- Tenrec ---------------------------------------------------------------------------------------------

TENREC_HEADER = ",".join(ing.TENREC_COLUMNS)


def test_tenrec_exposures_flags_and_file_order(spark, tmp_path):
    d = tmp_path / "tenrec"
    d.mkdir()
    (d / "a.csv").write_text(
        f"{TENREC_HEADER}\n"
        "1,10,1,0,1,0,5,3,1,2\n"  # exposure + click + like
        "2,10,0,0,0,0,5,0,1,2\n"  # exposure only
        "1,11,1,1,0,1,,2,1,2\n"  # exposure + click + follow + share (no category)
        "1,12,2,0,0,0,6,0,1,2\n"  # bad flag
    )
    (d / "b.csv").write_text(f"{TENREC_HEADER}\n1,10,1,0,0,0,5,1,1,2\n1,10,0,0,0\n")
    cfg = load_config("configs/tenrec_qb_video.yaml", profile="test")
    parsed = ing.parse_tenrec(lines_of(spark, d), cfg)
    assert parsed.where("header").count() == 2
    valid, rejected = ing.split(parsed)
    assert rows(rejected, "code", "reason") == [
        ("bad_flag", "bad 0/1 value '2' in column 'click'"),
        ("field_count", "expected 10 fields, got 5"),
    ]
    ev = valid.toPandas()
    # one ordinal per line, in file order (a.csv then b.csv; headers and rejects take ordinals too)
    by_line = ev.groupby("ts").agg(user=("user_raw", "first"), item=("item_raw", "first"), tasks=("task", set))
    assert list(by_line.index) == [1, 2, 3, 6]
    assert list(by_line["item"]) == ["10", "10", "11", "10"]
    assert list(by_line["tasks"]) == [
        {"exposure", "click", "like"},
        {"exposure"},
        {"exposure", "click", "follow", "share"},
        {"exposure", "click"},
    ]
    assert ev.loc[ev["ts"] == 3, "category"].isna().all() and (ev.loc[ev["ts"] == 1, "category"] == "5").all()
    # the exposure repeated later is a new event, not a duplicate
    assert ing.deduplicate(valid).count() == len(ev) == 10


def test_file_order_ordinal_is_file_position_across_many_splits(spark, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    rng = np.random.default_rng(0)
    expected = []
    for f in range(7):  # big files (several splits each) and tiny ones (several files per task)
        n = int(rng.integers(40, 90)) if f % 2 == 0 else int(rng.integers(1, 4))
        lines = [f"{f}-{i}-" + "x" * int(rng.integers(0, 30)) for i in range(n)]
        (d / f"part{f}.txt").write_text("\n".join(lines) + "\n")
        expected += lines
    old = {k: spark.conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    spark.conf.set("spark.sql.files.maxPartitionBytes", "200")  # many splits per file, several per task
    spark.conf.set("spark.sql.files.openCostInBytes", "10")
    try:
        lines = lines_of(spark, d)
        n_splits = lines.select("source", "block_start").distinct().count()
        assert n_splits > 10 and lines.rdd.getNumPartitions() < n_splits  # some task reads several splits
        got = ing.file_order_ordinal(lines).select("ordinal", "raw").toPandas()
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)
    got = got.sort_values("ordinal")
    assert list(got["ordinal"]) == list(range(len(expected)))
    assert list(got["raw"]) == expected


# ---- generic layouts ------------------------------------------------------------------------------------


def test_generic_csv_behavior_column_dates_and_quotes(spark, tmp_path):
    path = tmp_path / "g.csv"
    path.write_text(
        "\ufeffuid;iid;cat;action;day\n"  # with a byte order mark, as spreadsheet exports write it
        '"u1";i1;"c;1";view;2024-01-02\n'
        'u2;"i ""2""";c2;purchase;2024-02-29\n'
        "u3;i3;;view;2024-13-45\n"
        "u4;i4;c4;like;2024-01-02\n"
        "uid;iid;cat;action;day\n"  # a second header (files concatenated) is skipped, not rejected
    )
    cfg = cfg_with(
        "input.format=generic_csv",
        "input.csv_delimiter=;",
        "input.user_column=uid",
        "input.item_column=iid",
        "input.category_column=cat",
        "input.behavior_column=action",
        "input.behavior_map={view: click, purchase: buy}",
        "input.timestamp_column=day",
        "input.timestamp_unit=date",
        "input.numeric_ids=false",
    )
    parsed = ing.parse_generic_csv(lines_of(spark, path), cfg, ["uid", "iid", "cat", "action", "day"])
    assert parsed.where("header").count() == 2
    valid, rejected = ing.split(parsed)
    day = lambda s: int(dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp())  # noqa: E731
    assert rows(valid, "user_raw", "item_raw", "task", "ts", "category") == [
        ("u1", "i1", "click", day("2024-01-02"), "c;1"),
        ("u2", 'i "2"', "buy", day("2024-02-29"), "c2"),
    ]
    assert rows(rejected, "code", "reason") == [
        ("bad_timestamp", "timestamp '2024-13-45' does not match date_format 'yyyy-MM-dd'"),
        ("unknown_behavior", "unknown behavior 'like'"),
    ]


def test_generic_csv_task_columns_without_header_epoch_millis(spark, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "1,10,1700000000999,1,0\n1,11,1700000001000,1,1\n2,10,1700000002000,0,0\n3,10,17e11,1,0\n3,1,5,yes,0\n"
    )
    cfg = cfg_with(
        "input.format=generic_csv",
        "input.csv_header=false",
        "input.csv_columns=[u, i, t, clk, purchased]",
        "input.user_column=u",
        "input.item_column=i",
        "input.timestamp_column=t",
        "input.timestamp_unit=epoch_millis",
        "input.behavior_column=null",
        "input.task_columns={click: clk, buy: purchased}",
    )
    parsed = ing.parse_generic_csv(lines_of(spark, path), cfg, cfg.input.csv_columns)
    valid, rejected = ing.split(parsed)
    assert rows(valid, "user_raw", "item_raw", "task", "ts") == [
        ("1", "10", "click", 1_700_000_000),
        ("1", "11", "buy", 1_700_000_001),
        ("1", "11", "click", 1_700_000_001),
    ]
    # the all-zero row is accepted and yields no event; the counts say so
    assert parsed.where("code is null").count() == 3
    assert rows(rejected, "code", "reason") == [
        ("bad_flag", "bad 0/1 value 'yes' in column 'clk'"),
        ("bad_timestamp", "timestamp '17e11' is not an integer"),
    ]


def test_generic_parquet_with_timestamp_type_and_nulls(spark, tmp_path):
    ts = [dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC), dt.datetime(2024, 5, 2, tzinfo=dt.UTC), None]
    table = pa.table(
        {
            "user": pa.array([7, None, 9], pa.int64()),
            "item": pa.array(["42", "43", "44"]),
            "when": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "kind": pa.array(["buy", "pv", "pv"]),
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    cfg = cfg_with(
        "input.format=generic_parquet",
        "input.user_column=user",
        "input.item_column=item",
        "input.timestamp_column=when",
        "input.behavior_column=kind",
    )
    records = ing.parquet_records(spark.read.parquet(str(tmp_path / "p.parquet")))
    valid, rejected = ing.read_generic_parquet(records, cfg)
    assert rows(valid, "user_raw", "item_raw", "task", "ts") == [("7", "42", "buy", int(ts[0].timestamp()))]
    got = rows(rejected, "code", "reason", "raw")
    assert [(c, r) for c, r, _ in got] == [("empty_field", "empty field 'user'"), ("empty_field", "empty field 'when'")]
    assert json.loads(got[0][2]) == {"item": "43", "when": "2024-05-02T00:00:00.000Z", "kind": "pv"}


def test_missing_column_is_a_clear_error(spark, tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['user_id', 'item_id', 'behavior', 'timestamp'\]"):
        ing.parse_generic_csv(lines_of(spark, path), cfg_with("input.format=generic_csv"), ["a", "b"])


# ---- vocabularies ---------------------------------------------------------------------------------------


def test_vocab_is_dense_numeric_ordered_and_stable(spark):
    raw = spark.createDataFrame([(x,) for x in ["10", "9", "100", "9", "a"]], "raw_id string").repartition(3)
    first = dict(rows(ing.build_vocab(raw), "raw_id", "id"))
    assert first == {"9": 1, "a": 2, "10": 3, "100": 4}  # (length, string) order: numeric for integers

    existing = spark.createDataFrame([("10", 1), ("9", 2)], "raw_id string, id long")
    again = spark.createDataFrame([(x,) for x in ["9", "11", "5"]], "raw_id string")
    second = ing.build_vocab(again, existing)
    assert dict(rows(second, "raw_id", "id")) == {"10": 1, "9": 2, "5": 3, "11": 4}
    # a re-run over ids the vocabulary already has changes nothing
    assert rows(ing.build_vocab(again, second), "raw_id", "id") == rows(second, "raw_id", "id")


def test_vocab_large_against_numpy_oracle(spark):
    rng = np.random.default_rng(7)
    old_ids = rng.choice(10_000, 300, replace=False)
    new_ids = rng.choice(10_000, 900)  # overlaps the old ones, with repeats
    existing = spark.createDataFrame([(str(x), i + 1) for i, x in enumerate(old_ids)], "raw_id string, id long")
    raw = spark.createDataFrame([(str(x),) for x in new_ids], "raw_id string").repartition(4)
    got = dict(rows(ing.build_vocab(raw, existing), "raw_id", "id"))
    want = {str(x): i + 1 for i, x in enumerate(old_ids)}
    for x in sorted(set(new_ids) - set(old_ids)):
        want[str(x)] = len(want) + 1
    assert got == want
    assert sorted(got.values()) == list(range(1, len(got) + 1))


# ---- the command ----------------------------------------------------------------------------------------


@pytest.fixture()
def cli_main(monkeypatch):
    """jobs.cli.main, with subcommands whose modules are not on this branch yet left out."""
    from jobs import cli

    present = {k: v for k, v in cli.SUBCOMMANDS.items() if importlib.util.find_spec(v) is not None}
    monkeypatch.setattr(cli, "SUBCOMMANDS", present)
    return cli.main


def test_cli_ingest_two_days_keeps_ids_and_writes_contract_tables(cli_main, spark, tmp_path, capsys):
    root = tmp_path / "out"
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    day1.write_text("100,7,1,pv,10\n200,7,1,buy,11\n100,8,2,pv,12\n100,8,2,pv,12\n300,9,3,oops,13\n")
    day2.write_text("300,9,3,pv,20\n100,5,2,cart,21\n400,7,1,fav,22\n")
    base = ["ingest", "--profile", "test", "--output", str(root)]

    assert cli_main([*base, "--input", str(day1), "--run-date", "2026-01-01"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[ingest] lines_in=5 ")
    for part in ("rows_in=5", "rows_out=3", "rejects=1", "rejects.unknown_behavior=1", "duplicates=1", "users=2"):
        assert part in line.split()
    assert cli_main([*base, "--input", str(day2), "--run-date", "2026-01-02"]) == 0
    capsys.readouterr()

    u1 = dict(read_arrow(root, VOCAB_USERS, "2026-01-01")[["raw_id", "id"]].values)
    u2 = dict(read_arrow(root, VOCAB_USERS, "2026-01-02")[["raw_id", "id"]].values)
    i1 = dict(read_arrow(root, VOCAB_ITEMS, "2026-01-01")[["raw_id", "id"]].values)
    i2 = dict(read_arrow(root, VOCAB_ITEMS, "2026-01-02")[["raw_id", "id"]].values)
    assert u1 == {"100": 1, "200": 2}
    assert u2 == {"100": 1, "200": 2, "300": 3, "400": 4}  # old ids kept, new ones appended in order
    assert i1 == {"7": 1, "8": 2} and i2 == {"7": 1, "8": 2, "5": 3, "9": 4}

    inter = read_arrow(root, INTERACTIONS, "2026-01-02").sort_values("ts")
    assert inter[["user_id", "item_id", "task", "ts", "category"]].values.tolist() == [
        [3, 4, "click", 20, "3"],
        [1, 3, "cart", 21, "2"],
        [4, 1, "fav", 22, "1"],
    ]
    rej = read_arrow(root, REJECTS, "2026-01-01")
    assert rej[["raw", "reason", "code"]].values.tolist() == [
        ["300,9,3,oops,13", "unknown behavior 'oops'", "unknown_behavior"]
    ]
    assert read_arrow(root, REJECTS, "2026-01-02").empty
    metrics = read_arrow(root, RUN_METRICS, "2026-01-02").set_index("metric")["value"]
    assert (metrics["rows_out"], metrics["new_users"], metrics["vocab_users"], metrics["task.fav"]) == (3, 2, 4, 1)


def test_cli_backfill_of_an_earlier_date_keeps_the_later_dates_ids(cli_main, tmp_path, capsys):
    # D2 is ingested first, then the earlier D1 (a backfill), then D3, then D2 again: one numbering throughout.
    d1, d2, d3 = "2026-01-01", "2026-01-02", "2026-01-03"
    logs = {
        d1: "100,7,1,pv,10\n200,8,1,buy,11\n",
        d2: "300,9,3,pv,20\n100,7,2,cart,21\n400,5,1,fav,22\n",
        d3: "200,6,1,pv,30\n500,9,1,pv,31\n",
    }
    root = tmp_path / "out"

    def ingest(date):
        (tmp_path / f"{date}.csv").write_text(logs[date])
        args = ["ingest", "--profile", "test", "--output", str(root), "--input", str(tmp_path / f"{date}.csv")]
        assert cli_main([*args, "--run-date", date]) == 0
        return capsys.readouterr().out.split()

    def vocab(schema, date, *cols):
        return {r[0]: tuple(r[1:]) for r in read_arrow(root, schema, date)[["raw_id", "id", *cols]].values.tolist()}

    def interactions(date):
        return read_arrow(root, INTERACTIONS, date).sort_values("ts")[["user_id", "item_id", "ts"]].values.tolist()

    ingest(d2)
    users2, items2, events2 = vocab(VOCAB_USERS, d2), vocab(VOCAB_ITEMS, d2), interactions(d2)
    assert users2 == {"100": (1,), "300": (2,), "400": (3,)}
    out = ingest(d1)
    assert vocab(VOCAB_USERS, d1) == {**users2, "200": (4,)}  # D2's ids kept, the new one appended
    assert "new_users=1" in out  # 100 is known, 200 is new
    assert vocab(VOCAB_ITEMS, d1) == {**items2, "8": (4,)}
    assert items2 == {"5": (1,), "7": (2,), "9": (3,)}
    assert interactions(d1) == [[1, 2, 10], [4, 4, 11]]
    assert vocab(VOCAB_USERS, d2) == users2  # D2's own tables untouched
    ingest(d3)  # builds on D1's vocabulary (the largest: it holds D2's too)
    assert vocab(VOCAB_USERS, d3, "first_run_date") == {
        "100": (1, d2),
        "300": (2, d2),
        "400": (3, d2),
        "200": (4, d1),
        "500": (5, d3),
    }
    assert interactions(d3) == [[4, 5, 30], [5, 3, 31]]
    assert "new_users=0" in ingest(d2)  # a re-run: the whole vocabulary so far, the same ids for its events
    assert vocab(VOCAB_USERS, d2, "first_run_date") == vocab(VOCAB_USERS, d3, "first_run_date")
    assert interactions(d2) == events2


def test_vocabulary_written_before_first_run_date_is_extended(spark, tmp_path):
    # A vocabulary partition of an older release (raw_id, id only): its rows get their partition's date.
    part = tmp_path / "out" / VOCAB_USERS.name / "run_date=2026-01-01"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"raw_id": ["9", "100"], "id": pa.array([1, 2], pa.int64())}), part / "part-0.parquet")
    log = tmp_path / "d2.csv"
    log.write_text("100,7,1,pv,20\n5,7,1,pv,21\n")
    run_ingest(spark, cfg_with(f"output.root={tmp_path / 'out'}"), str(log), "2026-01-02")
    got = read_arrow(tmp_path / "out", VOCAB_USERS, "2026-01-02")[["raw_id", "id", "first_run_date"]]
    assert sorted(got.values.tolist()) == [["100", 2, "2026-01-01"], ["5", 3, "2026-01-02"], ["9", 1, "2026-01-01"]]


def test_cli_input_errors_are_one_line(cli_main, tmp_path, capsys):
    base = ["ingest", "--profile", "test", "--output", str(tmp_path / "out")]
    assert cli_main([*base, "--input", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgoe: error: input path") and "does not exist" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert cli_main([*base, "--input", str(empty)]) == 2
    assert "has no rows" in capsys.readouterr().err
    assert cli_main(base) == 2
    assert "no input given" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    assert cli_main([*base, "--input", str(bad)]) == 2
    assert "no valid events" in capsys.readouterr().err


def test_cli_wrong_format_fails_fast_and_writes_nothing(cli_main, tmp_path, capsys):
    # A Tenrec export (ten columns) ingested with the Taobao config: every record would be a reject.
    log = tmp_path / "tenrec.csv"
    log.write_text(
        ",".join(ing.TENREC_COLUMNS) + "\n" + "".join(f"{u},{u % 50},1,0,0,0,3,1,1,20\n" for u in range(3000))
    )
    root = tmp_path / "out"
    args = ["ingest", "--profile", "test", "--output", str(root), "--input", str(log), "--run-date", "2026-01-01"]
    capsys.readouterr()
    assert cli_main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert "does not look like input.format=taobao: 1,000 of its first 1,000 records rejected" in err[0]
    assert "mostly field_count (e.g. expected 5 fields, got 10)" in err[0] and "input.check_rows=0" in err[0]
    assert [p for p in root.rglob("*")] == []  # no table, no rejects, no run metrics
    # a sample under quality.max_reject_fraction passes the guard: the same file from line 2 on, with the
    # Taobao columns, and 40 bad lines among the first 1,000 (4%)
    good = tmp_path / "taobao.csv"
    good.write_text("".join(f"{u},{u % 50},1,{'pv' if u % 25 else 'zz'},{u}\n" for u in range(3000)))
    assert cli_main([*args[:-4], "--input", str(good), "--run-date", "2026-01-01"]) == 0
    assert "rejects=120" in capsys.readouterr().out.split()


# ---- properties against Python oracles -------------------------------------------------------------------

TOKENS = ["1", "42", " 7 ", "", "x", "-3", "pv", "fav", "buy", "zzz", "1511658000", "99999999999999999999", "0"]


def taobao_oracle(line: str, behavior_map: dict[str, str]) -> tuple[str | None, str | None]:
    """(code, task) for one Taobao line, straight from the format's definition."""
    if line.strip(" ") == "":
        return "empty_line", None
    f = [x.strip(" ") for x in line.split(",")]
    if len(f) != 5:
        return "field_count", None
    if "" in f:
        return "empty_field", None
    if not all(re.fullmatch("[0-9]+", x) for x in f[:2]):
        return "bad_id", None
    if not re.fullmatch("-?[0-9]+", f[4]) or not -(2**63) <= int(f[4]) < 2**63:
        return "bad_timestamp", None
    if f[3] not in behavior_map:
        return "unknown_behavior", None
    return None, behavior_map[f[3]]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=7).map(",".join), min_size=1, max_size=40))
def test_taobao_parser_matches_oracle(spark, lines):
    cfg = cfg_with()
    df = spark.createDataFrame([("mem", 0, x) for x in lines], "source string, block_start long, raw string")
    parsed = ing.parse_taobao(df, cfg)
    got = sorted((r["raw"], r["code"], tuple(r["tasks"])) for r in parsed.collect())
    want = []
    for x in lines:
        code, task = taobao_oracle(x, cfg.input.behavior_map)
        want.append((x, code, (task,) if task else ()))
    assert got == sorted(want)


FIELD = st.text(alphabet='ab,"', max_size=6)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(FIELD, min_size=2, max_size=5), min_size=1, max_size=20))
def test_quoted_csv_split_matches_python_csv(spark, records):
    lines = []
    for fields in records:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(fields)
        lines.append(buf.getvalue())
    df = spark.createDataFrame([(i, x) for i, x in enumerate(lines)], "i long, raw string")
    out = df.select("i", ing._split_fields(F.col("raw"), ",", quoted=True).alias("f")).collect()
    assert sorted((r["i"], list(r["f"])) for r in out) == [(i, f) for i, f in enumerate(records)]


QUOTED_TEXT = st.text(alphabet='a ,;"\u001f\u001e\u00e9', max_size=8)


def csv_line(fields: list[str], quote_all: list[bool], delimiter: str) -> str:
    """A CSV line: a field is quoted when asked or when it must be (a quote, the delimiter, an edge space)."""
    out = []
    for f, q in zip(fields, quote_all, strict=True):
        must = '"' in f or delimiter in f or f != f.strip(" ")
        out.append('"' + f.replace('"', '""') + '"' if q or must else f)
    return delimiter.join(out)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([",", ";", "\u001f"]),
    st.lists(st.lists(st.tuples(QUOTED_TEXT, st.booleans()), min_size=2, max_size=6), min_size=1, max_size=20),
)
def test_quoted_split_with_spaces_markers_and_other_delimiters_matches_python_csv(spark, delimiter, records):
    # Quoted fields keep their inner spaces, the split's own marker characters are data like any other.
    lines = [csv_line([f for f, _ in r], [q for _, q in r], delimiter) for r in records]
    df = spark.createDataFrame(list(enumerate(lines)), "i long, raw string")
    out = df.select("i", ing._split_fields(F.col("raw"), delimiter, quoted=True).alias("f")).collect()
    want = [(i, next(csv.reader([x], delimiter=delimiter))) for i, x in enumerate(lines)]
    assert sorted((r["i"], list(r["f"])) for r in out) == want


def test_quoted_split_of_a_long_line_is_exact(spark):
    # 150k characters, 30k fields (a third quoted, with the delimiter and doubled quotes inside): the old
    # look-ahead regex recursed once per quote pair after each delimiter (StackOverflowError, which killed the
    # local JVM) and scanned the rest of the line from every delimiter (quadratic); the split is now linear.
    fields = [f'q"{k},' if k % 3 == 0 else f"p{k % 97}" for k in range(30_000)]
    line = csv_line(fields, [False] * len(fields), ",")
    assert len(line) > 150_000
    df = spark.createDataFrame([(line,)], "raw string")
    got = df.select(ing._split_fields(F.col("raw"), ",", quoted=True).alias("f")).first()["f"]
    assert got == fields


def test_quoted_split_counts_quote_parity_from_the_line_start(spark):
    # An unbalanced quote opens a quoted run up to the end of the line (the field keeps its stray quote).
    lines = ['a,"b,c', 'a",b,c', '"a,b",c"']
    df = spark.createDataFrame(list(enumerate(lines)), "i long, raw string")
    out = df.select("i", ing._split_fields(F.col("raw"), ",", quoted=True).alias("f")).collect()
    assert [list(r["f"]) for r in sorted(out)] == [["a", '"b,c'], ['a",b,c'], ["a,b", 'c"']]


# ---- config checks (no Spark) ----------------------------------------------------------------------------


def test_config_checks_for_the_input_formats():
    from mgoe_spark.config import ConfigError

    # Tenrec reads 0/1 columns: the Taobao behavior_map is not needed, but every task needs a column.
    cfg = load_config("configs/tenrec_qb_video.yaml")
    assert ing.tenrec_layout(cfg).task_columns == {
        "click": "click",
        "like": "like",
        "share": "share",
        "follow": "follow",
    }
    with pytest.raises(ConfigError, match="task 'fav' has no Tenrec column"):
        load_config(overrides=["input.format=tenrec"])
    renamed = load_config(
        "configs/tenrec_qb_video.yaml", overrides=["tasks.order=[click, fav]", "input.task_columns={fav: like}"]
    )
    assert ing.tenrec_layout(renamed).task_columns == {"click": "click", "fav": "like"}
    with pytest.raises(ConfigError, match="input.csv_columns"):
        load_config(overrides=["input.format=generic_csv", "input.csv_header=false"])
    with pytest.raises(ConfigError, match="input.behavior_map.pv"):
        load_config(overrides=["input.behavior_map={pv: view}"])
    assert load_config("configs/taobao_userbehavior.yaml").input.behavior_map["pv"] == "click"


def test_csv_columns_come_from_the_first_file_header(spark, tmp_path):
    from mgoe_spark.ingest.run import csv_columns

    d = tmp_path / "g"
    d.mkdir()
    (d / "b.csv").write_text("z;y\n1;2\n")
    (d / "a.csv").write_text('\ufeffuid;"item id";ts\n1;2;3\n')
    cfg = cfg_with("input.format=generic_csv", "input.csv_delimiter=;")
    assert csv_columns(spark, cfg, spark.read.text(str(d))) == ["uid", "item id", "ts"]
    no_header = cfg_with("input.format=generic_csv", "input.csv_header=false", "input.csv_columns=[p, q]")
    assert csv_columns(spark, no_header, spark.read.text(str(d))) == ["p", "q"]
