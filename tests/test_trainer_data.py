"""Streaming loader (Parquet and Delta), metadata, list decoding, and the metrics (AUC / Logloss)."""

from __future__ import annotations

import math
import types

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

import model.data as data
from model.data import DataError, ExampleStream, list_to_matrix, nested_to_matrix, read_meta
from model.evaluate import auc, logloss, task_metrics
from model.synthetic import SyntheticSpec, generate_examples, write_examples

RUN = "2024-01-02"
SPEC = SyntheticSpec(users=60, items=40, feature_exposures_per_user=12, sample_exposures_per_user=8, recent_len=3)


@pytest.fixture(scope="module")
def table():
    return generate_examples(SPEC)


@pytest.fixture(scope="module")
def parquet_root(tmp_path_factory, table):
    root = str(tmp_path_factory.mktemp("examples"))
    write_examples(table, root, RUN, row_group_rows=64, files=2)
    return root


# ---- list decoding ------------------------------------------------------------------------------------


def _oracle(rows, widths):
    out = np.zeros((len(rows), sum(widths)))
    for r, lists in enumerate(rows):
        col = 0
        for h, w in enumerate(widths):
            vals = lists[h] if lists is not None and h < len(lists) and lists[h] is not None else []
            vals = vals[:w]
            out[r, col : col + len(vals)] = vals
            col += w
    return out


def test_nested_to_matrix_fast_and_ragged_paths():
    full = [[[1.0, 2.0], [3.0, 4.0, 5.0]], [[6.0, 7.0], [8.0, 9.0, 10.0]]]
    arr = pa.array(full, pa.list_(pa.list_(pa.float32())))
    np.testing.assert_array_equal(nested_to_matrix(arr, [2, 3], np.float32), _oracle(full, [2, 3]))
    ragged = [[[1.0], [2.0, 3.0, 4.0, 99.0]], [], None, [[5.0, 6.0]], [[7.0, 8.0], [9.0], [11.0]]]
    arr = pa.array(ragged, pa.list_(pa.list_(pa.float32())))
    np.testing.assert_array_equal(nested_to_matrix(arr, [2, 3], np.float32), _oracle(ragged, [2, 3]))
    sliced = arr.slice(1, 3)
    np.testing.assert_array_equal(nested_to_matrix(sliced, [2, 3], np.float32), _oracle(ragged[1:4], [2, 3]))
    flat = pa.array([[1.0, 2.0], [], [3.0, 4.0, 5.0]], pa.list_(pa.float32()))
    np.testing.assert_array_equal(list_to_matrix(flat, 2, np.float32), [[1, 2], [0, 0], [3, 4]])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.lists(st.lists(st.integers(1, 50), max_size=5), max_size=4)), min_size=1, max_size=8
    ),
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
)
def test_nested_to_matrix_matches_loop(rows, widths):
    arr = pa.array(rows, pa.list_(pa.list_(pa.int64())))
    np.testing.assert_array_equal(nested_to_matrix(arr, widths, np.int64), _oracle(rows, widths))


# ---- metadata and streaming ---------------------------------------------------------------------------


def test_read_meta(parquet_root, table):
    meta = read_meta(parquet_root, None, ["click", "fav", "cart", "buy"])
    recent_items = max(x for r in table["user_recent"].to_pylist() for lst in r for x in lst)
    assert meta.num_users == max(table["user_id"].to_pylist()) + 1
    assert meta.num_items == max(max(table["item_id"].to_pylist()), recent_items) + 1
    assert (meta.k_user, meta.k_item, meta.hops, meta.num_tasks, meta.recent_len) == (4, 4, 2, 4, 3)
    assert meta.hop_widths("user") == [meta.k_item, meta.k_user]
    with pytest.raises(DataError, match="names 2"):
        read_meta(parquet_root, RUN, ["click", "buy"])
    with pytest.raises(DataError, match="no run date 1999-01-01"):
        read_meta(parquet_root, "1999-01-01")
    with pytest.raises(DataError, match="no training_examples"):
        read_meta(parquet_root + "/nothing", None)


def _rows(batches):
    return sorted(
        (int(u), int(i), tuple(e.tolist()))
        for b in batches
        for u, i, e in zip(b["user_id"], b["item_id"], b["user_edges"], strict=True)
    )


def test_stream_yields_each_row_of_the_split_once_and_decodes_it(parquet_root, table):
    meta = read_meta(parquet_root)
    stream = ExampleStream(
        parquet_root, RUN, "valid", meta, batch_size=16, shuffle=True, shuffle_buffer=40, seed=3, drop_last=False
    )
    batches = list(stream)
    assert all(len(b["user_id"]) <= 16 for b in batches)
    rows = [r for r in table.to_pylist() if r["split"] == "valid"]
    expect = sorted((r["user_id"], r["item_id"], tuple(sum(r["user_edges"], []))) for r in rows)
    assert _rows(batches) == expect
    b = batches[0]
    assert b["user_recent"].shape[1:] == (4, 3) and b["labels"].shape[1] == 4
    # a decoded row equals the table row
    by_key = {(r["user_id"], r["item_id"]): r for r in rows}
    r = by_key[(int(b["user_id"][0]), int(b["item_id"][0]))]
    np.testing.assert_array_equal(b["user_recent"][0].numpy(), np.array(r["user_recent"]))
    np.testing.assert_allclose(b["lookup"][0].numpy(), r["lookup"])
    np.testing.assert_array_equal(b["labels"][0].numpy(), r["labels"])


def test_stream_is_seeded_and_shuffles(parquet_root):
    meta = read_meta(parquet_root)

    def order(seed, epoch):
        s = ExampleStream(
            parquet_root, RUN, "train", meta, batch_size=32, shuffle=True, shuffle_buffer=50, seed=seed, drop_last=False
        )
        s.set_epoch(epoch)
        return [int(x) for b in s for x in b["user_id"]]

    a = order(1, 0)
    assert a == order(1, 0)
    assert a != order(1, 1) and a != order(2, 0)
    assert sorted(a) == sorted(order(2, 0))
    plain = [int(x) for b in ExampleStream(parquet_root, RUN, "train", meta, batch_size=32) for x in b["user_id"]]
    assert a != plain and sorted(a) == sorted(plain)


def test_workers_partition_row_groups(parquet_root, monkeypatch):
    meta = read_meta(parquet_root)
    whole = _rows(ExampleStream(parquet_root, RUN, "train", meta, batch_size=32))
    parts = []
    for w in range(3):
        monkeypatch.setattr(data, "get_worker_info", lambda w=w: types.SimpleNamespace(id=w, num_workers=3))
        stream = ExampleStream(parquet_root, RUN, "train", meta, batch_size=32, shuffle=True, seed=5, drop_last=False)
        parts.append(_rows(stream))
    assert all(parts) and sorted(sum(parts, [])) == whole


def test_dataloader_workers_cover_the_split(parquet_root):
    meta = read_meta(parquet_root)
    whole = _rows(ExampleStream(parquet_root, RUN, "test", meta, batch_size=32))
    stream = ExampleStream(parquet_root, RUN, "test", meta, batch_size=32, shuffle=True, seed=1, drop_last=False)
    assert _rows(data.make_loader(stream, workers=2)) == whole


def test_ranks_shard_row_groups_and_agree_on_steps(parquet_root):
    meta = read_meta(parquet_root)
    whole = _rows(ExampleStream(parquet_root, RUN, "train", meta, batch_size=32))
    parts, counts = [], []
    for rank in range(2):
        s = ExampleStream(
            parquet_root, RUN, "train", meta, 16, shuffle=True, seed=2, drop_last=False, rank=rank, world=2
        )
        s.set_epoch(1)
        batches = list(s)
        parts.append(_rows(batches))
        counts.append(len(batches))
        assert s.batches_per_epoch() == len(batches)
    assert all(parts) and sorted(sum(parts, [])) == whole
    s = ExampleStream(parquet_root, RUN, "train", meta, 16, shuffle=True, seed=2, rank=1, world=2)
    s.set_epoch(1)
    assert s.common_batches_per_epoch() <= min(counts) and s.batches_per_epoch() == len(list(s))


def test_training_batches_are_full_and_remainder_dropped(parquet_root):
    meta = read_meta(parquet_root)
    s = ExampleStream(parquet_root, RUN, "train", meta, batch_size=48, shuffle=True, shuffle_buffer=20, seed=0)
    sizes = [len(b["user_id"]) for b in s]
    n = s.num_rows_estimate()
    assert set(sizes) == {48} and len(sizes) == n // 48 and n % 48
    ev = ExampleStream(parquet_root, RUN, "train", meta, batch_size=48)
    assert sum(len(b["user_id"]) for b in ev) == n  # evaluation keeps every row
    tiny = ExampleStream(parquet_root, RUN, "train", meta, batch_size=n + 5, shuffle=True)
    assert [len(b["user_id"]) for b in tiny] == [n] and tiny.batches_per_epoch() == 1  # smaller than a batch


def test_other_splits_row_groups_are_not_decoded(tmp_path, table, monkeypatch):
    order = np.lexsort((table["item_id"].to_numpy(), table["user_id"].to_numpy(), table["split"].to_numpy()))
    root = str(tmp_path)
    write_examples(table.take(order), root, RUN, row_group_rows=64, files=1)
    meta = read_meta(root)
    decoded = []
    real = data.decode
    monkeypatch.setattr(data, "decode", lambda t, m: decoded.append(t.num_rows) or real(t, m))
    s = ExampleStream(root, RUN, "valid", meta, batch_size=1000)
    got = list(s)
    n_valid = sum(1 for v in table["split"].to_pylist() if v == "valid")
    assert sum(len(b["user_id"]) for b in got) == n_valid == sum(decoded)
    groups = len(s.fragments)
    assert groups <= math.ceil(n_valid / 64) + 1 < math.ceil(table.num_rows / 64)


def _dominant_share(root, meta, window, seed=0):
    """Mean over batches of the largest share of a batch that comes from one row group (sorted table)."""
    s = ExampleStream(
        root, RUN, None, meta, batch_size=64, shuffle=True, shuffle_buffer=0, seed=seed, row_groups_per_window=window
    )
    shares = []
    for b in s:
        groups = (b["user_id"].numpy() - 1) // 256  # user_id = row number + 1: row group of each row
        shares.append(np.bincount(groups).max() / len(groups))
    return float(np.mean(shares))


def test_batches_mix_row_groups_of_a_sorted_table(tmp_path, table):
    """On a table sorted by user (as written), one row group per window puts every batch in one user range;
    interleaving 4 row groups per window brings the dominant row group's share near 1/4."""
    n = 256 * 16
    base = table.slice(0, 1)
    t = base.take(np.zeros(n, dtype=np.int64))
    t = t.set_column(t.schema.get_field_index("user_id"), "user_id", pa.array(np.arange(1, n + 1), pa.int64()))
    root = str(tmp_path)
    write_examples(t, root, RUN, row_group_rows=256, files=1)
    meta = read_meta(root)
    one, four = _dominant_share(root, meta, 1), _dominant_share(root, meta, 4)
    assert one == 1.0
    assert four < 0.45, four  # 64 uniform draws over 4 groups: expected max share ~0.33


def test_delta_table(tmp_path, table, parquet_root):
    root = str(tmp_path)
    write_examples(table, root, RUN, fmt="delta")
    write_examples(table.slice(0, 10), root, "2024-01-03", fmt="delta")
    assert data.available_run_dates(root) == [RUN, "2024-01-03"]
    meta = read_meta(root, RUN)
    assert meta == read_meta(parquet_root, RUN)
    got = _rows(ExampleStream(root, RUN, "test", meta, batch_size=50))
    assert got == _rows(ExampleStream(parquet_root, RUN, "test", meta, batch_size=50))
    assert sum(len(b["user_id"]) for b in ExampleStream(root, "2024-01-03", None, meta, 4)) == 10


# ---- metrics ------------------------------------------------------------------------------------------


def _auc_pairs(y, s):
    pos, neg = s[y > 0.5], s[y <= 0.5]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert auc(np.array([1, 0, 0]), np.array([0.2, 0.2, 0.1])) == pytest.approx(0.75)
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=60))
def test_auc_matches_brute_force_and_scipy_with_ties(pairs):
    y = np.array([p[0] for p in pairs], dtype=float)
    s = np.array([p[1] for p in pairs], dtype=float) / 6.0  # few distinct values: many ties
    if y.min() == y.max():
        assert math.isnan(auc(y, s))
        return
    got = auc(y, s)
    assert got == pytest.approx(_auc_pairs(y, s), abs=1e-12)
    u = mannwhitneyu(s[y > 0.5], s[y <= 0.5]).statistic
    assert got == pytest.approx(u / ((y > 0.5).sum() * (y <= 0.5).sum()), abs=1e-12)


def test_auc_given_first_ranks_only_the_clicked_rows():
    # rows: (click, fav, fav score). Unclicked rows score lowest, so the plain fav AUC is high; among the
    # clicked rows the fav ranking is inverted on one pair: 2 of 3 clicked (pos, neg) pairs are ordered.
    rows = [(0, 0, 0.0), (0, 0, 0.1), (1, 1, 0.9), (1, 0, 0.5), (1, 1, 0.4), (1, 0, 0.3)]
    y = np.array([[c, f] for c, f, _ in rows], dtype=float)
    p = np.array([[0.5, sc] for _, _, sc in rows])
    m = task_metrics(y, p, ["click", "fav"])
    clicked = y[:, 0] > 0.5
    assert m["auc_given_first"]["fav"] == pytest.approx(_auc_pairs(y[clicked, 1], p[clicked, 1]))
    assert m["auc_given_first"]["fav"] == pytest.approx(3 / 4)
    assert m["auc"]["fav"] == pytest.approx(7 / 8)
    assert m["auc_given_first_mean"] == pytest.approx(3 / 4) and "click" not in m["auc_given_first"]


def test_logloss_and_task_metrics():
    y = np.array([[1, 0], [0, 0], [1, 1]], dtype=float)
    p = np.array([[0.9, 0.2], [0.3, 0.1], [0.6, 1.0]])
    assert logloss(y[:, 0], p[:, 0]) == pytest.approx(-(math.log(0.9) + math.log(0.7) + math.log(0.6)) / 3)
    m = task_metrics(y, p, ["a", "b"])
    assert m["auc"]["a"] == pytest.approx(1.0) and m["auc"]["b"] == pytest.approx(1.0)
    assert m["auc_mean"] == pytest.approx(1.0)
    assert m["logloss"]["b"] == pytest.approx(-(math.log(0.8) + math.log(0.9) + math.log(1 - 1e-7)) / 3)
