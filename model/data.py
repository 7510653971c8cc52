"""Streaming reader of the ``training_examples`` table (SPEC 8) for the PyTorch trainer.

The table lives at ``<root>/training_examples/run_date=YYYY-MM-DD/*.parquet`` (what :mod:`mgoe_spark.core.storage`
writes) or is a Delta table at ``<root>/training_examples`` partitioned by ``run_date`` (the Delta log is
read with :mod:`deltalake`, never by globbing the directory). Nothing here loads a whole table:

- :func:`read_meta` gets the sizes the model needs (numbers of users / items / macro nodes / tasks, hops,
  neighbor length) from Parquet footers and one row group: O(files + row groups) footer reads.
- :class:`ExampleStream` is an :class:`~torch.utils.data.IterableDataset` over (file, row group) fragments.
  Fragments are split across DataLoader workers (``fragment_index % num_workers``), visited in a seeded
  order per epoch, and each row group is decoded column-wise (nested lists are flattened to fixed-width numpy
  matrices without Python loops) into a shuffle buffer that emits ready batches. Memory: one row group plus
  the shuffle buffer per worker. Work: O(rows) per epoch.

A batch is a ``dict[str, Tensor]`` (``B`` rows, ``T`` tasks, ``L`` neighbors, ``K_U`` / ``K_I`` macro nodes,
``H`` hops)::

    user_id, item_id     int64   (B,)
    user_macro, item_macro int64 (B,)
    labels               float32 (B, T)
    lookup               float32 (B, T)         T^t[u, c_I(i)] (Eq 22)
    user_edges           float32 (B, sum_h K_h) user hop 1 (K_I), hop 2 (K_U), ... concatenated
    item_edges           float32 (B, sum_h K_h) item hop 1 (K_U), hop 2 (K_I), ... concatenated
    user_recent          int64   (B, T, L)      recent items per task, 0-padded
    item_recent          int64   (B, T, L)      recent users per task, 0-padded
    cold_start           bool    (B,)
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mgoe_spark.core import manifest
from mgoe_spark.core.errors import TRAINER_DATA_HINT, UserError, one_line
from mgoe_spark.core.names import SPLITS
from mgoe_spark.core.uris import ArrowFiles, delta_uri, open_uri
from schemas import TRAINING_EXAMPLES, VOCAB_ITEMS, VOCAB_USERS, partition_path, table_path

FEATURE_COLUMNS = [c for c in TRAINING_EXAMPLES.column_names if c != "split"]


class DataError(UserError, ValueError):
    """The training-example table is missing, empty or does not match the contract (one-line message)."""

    hint = TRAINER_DATA_HINT

    def user_message(self) -> str:
        text = one_line(self)
        return text if "--examples-root" in text else f"{text}; {self.hint}"


# --------------------------------------------------------------------------------------------------------
# Locating the files of one run date
# --------------------------------------------------------------------------------------------------------


STORAGE_OPTIONS: dict[str, str] = {}
"""Object-store settings of this process's reads (``output.storage_options``; :mod:`mgoe_spark.core.uris`)."""


def configure_storage(options: dict[str, str] | None) -> None:
    """Read tables with ``options`` (``output.storage_options``) from now on, in this process and the
    DataLoader workers it forks."""
    STORAGE_OPTIONS.clear()
    STORAGE_OPTIONS.update(options or {})


def _fs_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    return open_uri(uri, STORAGE_OPTIONS)


def _delta_table(table: str, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(delta_uri(table), version=version, storage_options=dict(STORAGE_OPTIONS) or None)


def is_delta(table_uri: str) -> bool:
    fs, path = _fs_and_path(table_uri)
    return fs.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory


def available_run_dates(root: str, name: str = TRAINING_EXAMPLES.name) -> list[str]:
    """Sorted run dates the table has a readable version of (the run date's manifest names it, or it was
    written before manifests; :mod:`mgoe_spark.core.manifest`): Parquet partitions or Delta partition values."""
    table, files = table_path(root, name), ArrowFiles(STORAGE_OPTIONS)
    if is_delta(table):
        dates = sorted({dict(p)["run_date"] for p in _delta_table(table).partitions()})
        return [d for d in dates if manifest.delta_version(files, root, name, d)[0]]
    return manifest.parquet_run_dates(files, root, name)


def resolve_run_date(root: str, run_date: str | None) -> str:
    """``run_date`` itself if the table has it, the latest one if ``None``; DataError otherwise."""
    dates = available_run_dates(root)
    if not dates:
        raise DataError(f"no training_examples table under {root!r} (expected {table_path(root, 'training_examples')})")
    if run_date is None:
        return dates[-1]
    if run_date not in dates:
        raise DataError(f"training_examples under {root!r} has no run date {run_date}; it has {', '.join(dates)}")
    return run_date


def partition_files(root: str, run_date: str, name: str = TRAINING_EXAMPLES.name) -> tuple[pafs.FileSystem, list[str]]:
    """The data files of one run date's published version, sorted: the version its manifest names (Parquet:
    the partition, or the kept previous one while a newer write is being published; Delta: the files of the
    log version the manifest names). Cost: a few small reads, then one listing."""
    table, files = table_path(root, name), ArrowFiles(STORAGE_OPTIONS)
    if is_delta(table):
        readable, version = manifest.delta_version(files, root, name, run_date)
        uris = _delta_table(table, version).file_uris(file_pruning_predicate=[("run_date", "=", run_date)])
        if not readable or not uris:
            return _fs_and_path(table)[0], []
        fs = _fs_and_path(uris[0])[0]
        return fs, sorted(_fs_and_path(u)[1] for u in uris)
    _, directory = manifest.resolve(files, root, name, run_date)
    fs, path = _fs_and_path(directory or partition_path(root, name, run_date))
    if directory is None or fs.get_file_info(path).type != pafs.FileType.Directory:
        return fs, []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    files = [
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(".parquet")
        and not posixpath.basename(i.path).startswith(("_", "."))
    ]
    return fs, sorted(files)


# --------------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableMeta:
    """Sizes the models are built from. Embedding tables have ``num_users`` / ``num_items`` rows (id 0 is
    padding), macro tables ``k_user`` / ``k_item`` rows (macro ids 1..K are stored at rows 0..K-1)."""

    num_users: int
    num_items: int
    k_user: int
    k_item: int
    hops: int
    num_tasks: int
    recent_len: int
    tasks: tuple[str, ...] = ()

    def hop_widths(self, side: str) -> list[int]:
        """Macro-node count of each hop: the user side alternates K_I, K_U, ...; the item side K_U, K_I, ..."""
        first, second = (self.k_item, self.k_user) if side == "user" else (self.k_user, self.k_item)
        return [first if h % 2 == 0 else second for h in range(self.hops)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> TableMeta:
        data = json.loads(text)
        data["tasks"] = tuple(data.get("tasks", ()))
        return TableMeta(**data)


def _column_max(fs: pafs.FileSystem, files: list[str], leaf: str) -> int | None:
    """Max of a leaf column from the Parquet footers (None if any row group lacks statistics)."""
    best = 0
    for f in files:
        md = pq.ParquetFile(f, filesystem=fs).metadata
        idx = [md.schema.column(j).path for j in range(md.num_columns)]
        if leaf not in idx:
            return None
        j = idx.index(leaf)
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(j).statistics
            if md.row_group(g).num_rows == 0:
                continue
            if st is None or not st.has_min_max:
                return None
            best = max(best, int(st.max))
    return best


def _vocab_size(root: str, run_date: str, schema) -> int | None:
    try:
        fs, files = partition_files(root, run_date, schema.name)
    except Exception:  # noqa: BLE001 - vocab tables are optional extras
        return None
    if not files:
        return None
    m = _column_max(fs, files, "id")
    return None if m is None else m + 1


def read_meta(root: str, run_date: str | None = None, tasks: list[str] | None = None) -> TableMeta:
    """Sizes from the vocab tables (if present) or the footers' id statistics, and list lengths of one row.

    Cost: one footer per file, one row group decoded. Falls back to one streaming pass over the id columns
    when a writer left no statistics.
    """
    run_date = resolve_run_date(root, run_date)
    fs, files = partition_files(root, run_date)
    if not files:
        raise DataError(f"training_examples run date {run_date} under {root!r} has no data files")
    maxes = {}
    for key, leaf in (
        ("user_id", "user_id"),
        ("item_id", "item_id"),
        ("recent_users", "item_recent.list.element.list.element"),
        ("recent_items", "user_recent.list.element.list.element"),
    ):
        maxes[key] = _column_max(fs, files, leaf)
    if any(v is None for v in maxes.values()):
        maxes = {k: 0 for k in maxes}
        for f in files:
            pf = pq.ParquetFile(f, filesystem=fs)
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=["user_id", "item_id", "user_recent", "item_recent"])
                for key, col in (("user_id", "user_id"), ("item_id", "item_id")):
                    maxes[key] = max(maxes[key], int(pc.max(t[col]).as_py() or 0))
                for key, col in (("recent_users", "item_recent"), ("recent_items", "user_recent")):
                    flat = pc.list_flatten(pc.list_flatten(t[col]))
                    maxes[key] = max(maxes[key], int(pc.max(flat).as_py() or 0) if len(flat) else 0)
    num_users = max(maxes["user_id"], maxes["recent_users"]) + 1
    num_items = max(maxes["item_id"], maxes["recent_items"]) + 1
    num_users = max(num_users, _vocab_size(root, run_date, VOCAB_USERS) or 0)
    num_items = max(num_items, _vocab_size(root, run_date, VOCAB_ITEMS) or 0)

    # List lengths: the widest row of the first non-empty row group (cold rows may carry empty lists).
    shape = None
    for f in files:
        pf = pq.ParquetFile(f, filesystem=fs)
        for g in range(pf.num_row_groups):
            if pf.metadata.row_group(g).num_rows:
                shape = pf.read_row_group(g, columns=["labels", "user_edges", "item_edges", "user_recent"])
                break
        if shape is not None:
            break
    if shape is None:
        raise DataError(f"training_examples run date {run_date} under {root!r} is empty")
    num_tasks = int(pc.max(pc.list_value_length(shape["labels"])).as_py())
    ue = shape["user_edges"].combine_chunks()
    ie = shape["item_edges"].combine_chunks()
    hops = int(pc.max(pc.list_value_length(ue)).as_py() or 0)
    if hops < 1:
        raise DataError("training_examples: user_edges has no hops in the first row group")
    k_item = _hop_width(ue, 0)
    k_user = _hop_width(ue, 1) if hops > 1 else _hop_width(ie, 0)
    recent_len = int(pc.max(pc.list_value_length(pc.list_flatten(shape["user_recent"]))).as_py() or 1)
    if tasks is not None and len(tasks) != num_tasks:
        raise DataError(f"training_examples has {num_tasks} labels per row but tasks.order names {len(tasks)}")
    return TableMeta(
        num_users=num_users,
        num_items=num_items,
        k_user=k_user,
        k_item=k_item,
        hops=hops,
        num_tasks=num_tasks,
        recent_len=recent_len,
        tasks=tuple(tasks or (f"task{t}" for t in range(num_tasks))),
    )


def _hop_width(edges: pa.ListArray, hop: int) -> int:
    outer = pc.list_value_length(edges).fill_null(0).to_numpy(zero_copy_only=False)
    keep = outer > hop
    if not keep.any():
        raise DataError(f"training_examples: no row has macro edges for hop {hop + 1}")
    starts = np.concatenate([[0], np.cumsum(outer)[:-1]])
    inner_len = pc.list_value_length(edges.flatten()).fill_null(0).to_numpy(zero_copy_only=False)
    return int(inner_len[starts[keep] + hop].max())


# --------------------------------------------------------------------------------------------------------
# Decoding nested lists into fixed-width numpy matrices
# --------------------------------------------------------------------------------------------------------


def nested_to_matrix(arr: pa.Array | pa.ChunkedArray, widths: list[int], dtype) -> np.ndarray:
    """``list<list<x>>`` (rows x len(widths) lists) -> ``(rows, sum(widths))``, zero-padded / truncated.

    Fast path (every row has ``len(widths)`` lists of exactly those lengths): a reshape of the flat values.
    Otherwise (e.g. cold-start rows with empty lists) a vectorized scatter. O(values), no Python loop.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    total = int(sum(widths))
    outer = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = arr.flatten()
    inner_len = pc.list_value_length(inner).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = inner.flatten().to_numpy(zero_copy_only=False)
    if (outer == len(widths)).all() and (inner_len.reshape(n, len(widths)) == np.asarray(widths)).all():
        return values.astype(dtype, copy=False).reshape(n, total)
    out = np.zeros((n, total), dtype=dtype)
    row_of_list = np.repeat(np.arange(n), outer)
    hop_of_list = np.arange(len(inner_len)) - np.repeat(np.cumsum(outer) - outer, outer)
    wid = np.asarray(widths + [0], dtype=np.int64)
    col0 = np.concatenate([[0], np.cumsum(widths)])
    hop_c = np.minimum(hop_of_list, len(widths))
    k = np.arange(len(values)) - np.repeat(np.cumsum(inner_len) - inner_len, inner_len)
    lst = np.repeat(np.arange(len(inner_len)), inner_len)
    ok = k < wid[hop_c[lst]]
    out[row_of_list[lst[ok]], col0[hop_c[lst[ok]]] + k[ok]] = values[ok]
    return out


def list_to_matrix(arr: pa.Array | pa.ChunkedArray, width: int, dtype) -> np.ndarray:
    """``list<x>`` -> ``(rows, width)``, zero-padded / truncated."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    lens = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if (lens == width).all():
        return values.astype(dtype, copy=False).reshape(n, width)
    out = np.zeros((n, width), dtype=dtype)
    rows = np.repeat(np.arange(n), lens)
    k = np.arange(len(values)) - np.repeat(np.cumsum(lens) - lens, lens)
    ok = k < width
    out[rows[ok], k[ok]] = values[ok]
    return out


def decode(table: pa.Table, meta: TableMeta) -> dict[str, np.ndarray]:
    """One decoded row group (numpy arrays with the batch layout of the module docstring)."""
    T, L = meta.num_tasks, meta.recent_len
    n = table.num_rows
    uid = table["user_id"].to_numpy().astype(np.int64, copy=False)
    iid = table["item_id"].to_numpy().astype(np.int64, copy=False)
    # Ids outside the embedding tables (unseen at training time) fall back to padding.
    uid = np.where((uid >= 0) & (uid < meta.num_users), uid, 0)
    iid = np.where((iid >= 0) & (iid < meta.num_items), iid, 0)
    um = table["user_macro"].to_numpy().astype(np.int64)
    im = table["item_macro"].to_numpy().astype(np.int64)
    um = np.where((um >= 0) & (um <= meta.k_user), um, 0)
    im = np.where((im >= 0) & (im <= meta.k_item), im, 0)
    ur = nested_to_matrix(table["user_recent"], [L] * T, np.int64)
    ir = nested_to_matrix(table["item_recent"], [L] * T, np.int64)
    ur = np.where(ur < meta.num_items, ur, 0).reshape(n, T, L)
    ir = np.where(ir < meta.num_users, ir, 0).reshape(n, T, L)
    return {
        "user_id": uid,
        "item_id": iid,
        "user_macro": um,
        "item_macro": im,
        "labels": list_to_matrix(table["labels"], T, np.float32),
        "lookup": list_to_matrix(table["lookup"], T, np.float32),
        "user_edges": nested_to_matrix(table["user_edges"], meta.hop_widths("user"), np.float32),
        "item_edges": nested_to_matrix(table["item_edges"], meta.hop_widths("item"), np.float32),
        "user_recent": ur,
        "item_recent": ir,
        "cold_start": table["cold_start"].to_numpy(zero_copy_only=False).astype(bool),
    }


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy -> torch without a copy where possible (read-only Arrow buffers are copied once)."""
    out = {}
    for k, v in arrays.items():
        if not (v.flags.writeable and v.flags.c_contiguous):
            v = np.array(v, order="C")
        out[k] = torch.from_numpy(v)
    return out


# --------------------------------------------------------------------------------------------------------
# The streaming dataset
# --------------------------------------------------------------------------------------------------------


class ExampleStream(IterableDataset):
    """Batches of one split of one run date, streamed by row group. Use with ``DataLoader(batch_size=None)``.

    Rows are stored sorted by (split, user_id, item_id) in large row groups, so a shuffle must mix row
    groups, not just rows inside one. Per epoch (seeded by ``(seed, epoch)``, identical on every rank):

    1. the row groups holding rows of ``split`` (found from footers: ``split`` column statistics, plus one
       ``split``-column read for the rare row group that straddles two splits) are permuted; other splits'
       row groups are never decoded;
    2. rank ``r`` of ``world`` data-parallel processes takes every ``world``-th of them, and a DataLoader
       worker every ``workers``-th of those;
    3. they are decoded ``row_groups_per_window`` at a time into a window, plus up to ``shuffle_buffer``
       rows carried over from the previous window (a random subset); a batch is a uniform draw without
       replacement from the whole window: an index-based shuffle (one permutation of row numbers, one
       gather per batch; no copy of the pool per row group).

    With ``drop_last`` (default: when shuffling, i.e. training) every batch has exactly ``batch_size`` rows:
    the epoch's last < batch_size rows are dropped (different ones each epoch), so a batch-norm statistic
    is never taken over a handful of rows (a shard smaller than one batch still yields its rows as one batch
    if it has at least 2). Without it the last batch is smaller (evaluation scores every row).

    Memory: ``row_groups_per_window`` decoded row groups + the carried rows per worker. Work: O(rows of the
    split) per epoch.

    Args:
        root: table root (``<root>/training_examples``), local path or URI (``file://``, ``s3://``...).
        run_date: partition to read.
        split: ``train`` / ``valid`` / ``test`` (or ``None`` for all rows).
        meta: sizes (from :func:`read_meta`).
        batch_size: rows per emitted batch.
        shuffle: seeded random row-group order and the windowed shuffle above; else table order.
        shuffle_buffer: rows carried from one window into the next (shuffle only).
        seed: base seed; the order depends on (seed, epoch, rank, worker) only, so a run is reproducible.
        max_rows: stop after this many rows per epoch and worker (benchmarks, smoke tests).
        row_groups_per_window: row groups interleaved per window (``train.shuffle_row_groups``).
        drop_last: drop the epoch's incomplete last batch (default: ``shuffle``).
        rank, world: this process's data-parallel rank and the number of processes.
    """

    def __init__(
        self,
        root: str,
        run_date: str,
        split: str | None,
        meta: TableMeta,
        batch_size: int = 1024,
        shuffle: bool = False,
        shuffle_buffer: int = 16_384,
        seed: int = 0,
        max_rows: int | None = None,
        row_groups_per_window: int = 4,
        drop_last: bool | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        super().__init__()
        if split is not None and split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 <= rank < world:
            raise DataError(f"rank must be in 0..{world - 1}, got {rank}")
        self.root, self.run_date, self.split, self.meta = root, run_date, split, meta
        self.batch_size, self.shuffle, self.shuffle_buffer = batch_size, shuffle, shuffle_buffer
        self.seed, self.max_rows, self.epoch = seed, max_rows, 0
        self.window = max(1, row_groups_per_window) if shuffle else 1
        self.drop_last = shuffle if drop_last is None else drop_last
        self.rank, self.world = rank, world
        self.fs, self.files = partition_files(root, run_date)
        if not self.files:
            raise DataError(f"training_examples run date {run_date} under {root!r} has no data files")
        # (file, row group, rows of the split, whether the row group also holds other splits' rows)
        self.fragments: list[tuple[int, int, int, bool]] = []
        for fi, f in enumerate(self.files):
            pf = pq.ParquetFile(f, filesystem=self.fs)
            for g in range(pf.metadata.num_row_groups):
                rows, mixed = self._split_rows(pf, g)
                if rows:
                    self.fragments.append((fi, g, rows, mixed))

    def _split_rows(self, pf: pq.ParquetFile, g: int) -> tuple[int, bool]:
        """(rows of ``self.split`` in row group ``g``, whether it also has other rows): statistics first."""
        n = pf.metadata.row_group(g).num_rows
        if self.split is None or n == 0:
            return n, False
        md = pf.metadata.row_group(g)
        names = [md.column(j).path_in_schema for j in range(md.num_columns)]
        st = md.column(names.index("split")).statistics if "split" in names else None
        if st is not None and st.has_min_max:
            lo, hi = (v.decode() if isinstance(v, bytes) else v for v in (st.min, st.max))
            if lo == hi:
                return (n, False) if lo == self.split else (0, False)
            if not lo <= self.split <= hi:
                return 0, False
        col = pf.read_row_group(g, columns=["split"])["split"]
        rows = int(pc.sum(pc.equal(col, self.split)).as_py() or 0)
        return rows, rows < n

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call before iterating each epoch)."""
        self.epoch = epoch

    def _shard(self, worker: int, workers: int, rank: int | None = None) -> list[int]:
        """Fragment indices this (rank, worker) reads this epoch, in reading order."""
        n = len(self.fragments)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        rank = self.rank if rank is None else rank
        return [int(j) for j in order[rank :: self.world][worker::workers]]

    def batches_per_epoch(self, workers: int = 0, rank: int | None = None) -> int:
        """Batches this rank emits in the current epoch with ``workers`` DataLoader workers (from footers)."""
        total = 0
        for w in range(max(1, workers)):
            rows = sum(self.fragments[j][2] for j in self._shard(w, max(1, workers), rank))
            if self.max_rows is not None:
                rows = min(rows, math.ceil(self.max_rows / self.batch_size) * self.batch_size)
            if self.drop_last:
                total += rows // self.batch_size if rows >= self.batch_size else int(rows >= 2)
            else:
                total += math.ceil(rows / self.batch_size)
        return total

    def common_batches_per_epoch(self, workers: int = 0) -> int:
        """The fewest batches any rank emits this epoch: the steps every rank can take in lockstep."""
        return min(self.batches_per_epoch(workers, r) for r in range(self.world))

    def _decoded(self, shard: list[int]) -> Iterator[dict[str, np.ndarray]]:
        handles: dict[int, pq.ParquetFile] = {}
        for j in shard:
            fi, g, _, mixed = self.fragments[j]
            if fi not in handles:
                handles = {fi: pq.ParquetFile(self.files[fi], filesystem=self.fs)}
            t = handles[fi].read_row_group(g, columns=TRAINING_EXAMPLES.column_names)
            if mixed:
                t = t.filter(pc.equal(t["split"], self.split))
            if t.num_rows:
                yield decode(t, self.meta)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = self._shard(worker, workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        bs = self.batch_size
        keep = self.shuffle_buffer if self.shuffle else 0
        carry: dict[str, np.ndarray] | None = None
        emitted = 0
        decoded = self._decoded(shard)
        done = False
        while not done:
            parts = [carry] if carry is not None else []
            for _ in range(self.window):
                chunk = next(decoded, None)
                if chunk is None:
                    done = True
                    break
                parts.append(chunk)
            if not parts:
                break
            window = _Window(parts)
            order = rng.permutation(window.rows) if self.shuffle else None
            last = done  # nothing left to read: flush the window
            n_out = window.rows if last else max(0, window.rows - max(keep, 0))
            n_out = (n_out // bs) * bs if (not last or self.drop_last) else n_out
            if last and self.drop_last and emitted == 0 and n_out == 0 and window.rows >= 2:
                n_out = window.rows  # a shard smaller than one batch: one small batch rather than none
            for s in range(0, n_out, bs):
                if self.max_rows is not None and emitted >= self.max_rows:
                    return
                rows = order[s : s + bs] if order is not None else np.arange(s, min(s + bs, n_out))
                yield to_tensors(window.take(rows))
                emitted += len(rows)
            rest = order[n_out:] if order is not None else np.arange(n_out, window.rows)
            carry = window.take(rest) if len(rest) and not last else None

    def num_rows_estimate(self) -> int:
        """Rows of the split in the partition (from footers), for progress bars."""
        return sum(f[2] for f in self.fragments)


class _Window:
    """Decoded row groups viewed as one table: ``take(rows)`` gathers rows by window-wide row number."""

    def __init__(self, parts: list[dict[str, np.ndarray]]) -> None:
        self.parts = parts
        sizes = [len(p["user_id"]) for p in parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.rows = int(self.offsets[-1])

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """One copy of the selected rows (grouped by source row group; order inside a batch is irrelevant)."""
        if len(self.parts) == 1:
            p = self.parts[0]
            if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and bool((np.diff(rows) == 1).all()):
                return {k: v[rows[0] : rows[-1] + 1] for k, v in p.items()}  # a contiguous slice: a view
            return {k: v[rows] for k, v in p.items()}
        rows = np.sort(rows)
        bounds = np.searchsorted(rows, self.offsets)
        out = {k: np.empty((len(rows), *v.shape[1:]), v.dtype) for k, v in self.parts[0].items()}
        for k, p in enumerate(self.parts):
            a, b = bounds[k], bounds[k + 1]
            if a == b:
                continue
            local = rows[a:b] - self.offsets[k]
            for key, v in p.items():
                np.take(v, local, axis=0, out=out[key][a:b])
        return out


def make_loader(stream: ExampleStream, workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over ready-made batches (``batch_size=None``); ``workers`` > 0 shards row groups."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None
    )


def steps_estimate(rows: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / batch_size))
