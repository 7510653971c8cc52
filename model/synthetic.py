"""A small synthetic ``training_examples`` table with planted structure (tests, benchmarks, smoke runs).

It stands in for the Spark pipeline's output and computes every feature the way SPEC 4 defines it, on a
tiny dense problem with numpy / scipy:

- users and items belong to planted groups; the probability of a click and of each later funnel task
  depends on (user group, item group, task) times a per-user and a per-item propensity. Later tasks have
  partly their own affinity: each user group converts ``task_affinity`` times more (mean-1 normalised) on
  one item group of its own per task, drawn independently of the click's favourite groups, so what is
  bought is not simply what is clicked most (``task_affinity = 1``: every task follows the click);
- a feature window of exposures gives the merging score ``s = rho`` (beta = 1), the macro nodes (the
  planted group, with a fraction ``assign_noise`` of nodes put in a random macro node as an imperfect
  clustering would), the macro edges E1_U = S C_I, E2_U = S S^T C_U, E1_I = S^T C_U, E2_I = S^T S C_I
  (Eq 10), the last ``L`` neighbors per task, newest first (Eq 18), and the lookup T^t[u, c_I(i)] (Eq 22);
- a later sample window of exposures (clicked or not) gives the rows and their labels; rows are split into
  train / valid / test at random.

This is O(U * I) memory: for tables of a few thousand nodes only. It is not a stand-in for quality
claims about the pipeline; those are made on pipeline tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from schemas import TRAINING_EXAMPLES


@dataclass
class SyntheticSpec:
    users: int = 300
    items: int = 200
    user_groups: int = 4
    item_groups: int = 4
    tasks: tuple[str, ...] = ("click", "fav", "cart", "buy")
    feature_exposures_per_user: int = 30
    sample_exposures_per_user: int = 20
    recent_len: int = 5
    hops: int = 2
    assign_noise: float = 0.1
    funnel_rates: tuple[float, ...] = (0.25, 0.35, 0.45)
    conversion_spread: float = 3.0
    task_affinity: float = 4.0
    """Conversion multiplier of a later task on its own preferred item group (1 = none)."""
    split_fractions: tuple[float, float] = (0.7, 0.15)
    """train and valid fractions; the rest is test."""
    seed: int = 0


def _funnel(rng, p_click, conv, n):
    """Labels (n, T) for exposures with click prob ``p_click`` (n,) and per-task conversions ``conv`` (n, T-1)."""
    T = conv.shape[1] + 1
    labels = np.zeros((n, T), dtype=np.float32)
    labels[:, 0] = rng.random(n) < p_click
    for t in range(1, T):
        # fav and cart follow a click; later tasks (buy) follow the previous one (cart).
        parent = labels[:, 0] if t < 3 else labels[:, t - 1]
        labels[:, t] = parent * (rng.random(n) < conv[:, t - 1])
    return labels


def flat_list_array(mat: np.ndarray) -> pa.ListArray:
    """(n, w) matrix -> list<x> array of n lists of length w (no Python loop)."""
    n, w = mat.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * w), pa.array(mat.ravel()))


def nested_array(blocks: list[np.ndarray]) -> pa.ListArray:
    """Blocks (n, w_h), h = 1..H -> list<list<x>>: row r is [block_1[r], ..., block_H[r]] (no Python loop)."""
    n, widths = blocks[0].shape[0], [b.shape[1] for b in blocks]
    values = np.concatenate(blocks, axis=1).ravel()
    inner = np.concatenate([[0], np.cumsum(np.tile(widths, n))]).astype(np.int32)
    outer = (np.arange(n + 1) * len(blocks)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(outer), pa.ListArray.from_arrays(pa.array(inner), pa.array(values)))


@dataclass
class _Planted:
    """The planted structure: node groups (index 0 is the padding id), group affinities and propensities."""

    ug: np.ndarray
    """(U+1,) user groups."""
    ig: np.ndarray
    """(I+1,) item groups."""
    click: np.ndarray
    """(A, B) click probability of user group a on item group b."""
    conv: np.ndarray
    """(A, B, T-1) conversion probability of each later task, given its parent task."""
    u_prop: np.ndarray
    i_prop: np.ndarray


def _planted(rng: np.random.Generator, spec: SyntheticSpec) -> _Planted:
    """Groups, affinities and propensities (draws: user groups, item groups, conversion spread, one preferred
    item group per (user group, later task), user then item propensities).

    click[a, b] = 0.6 on item group a mod B, 0.3 on a+1 mod B, 0.05 elsewhere; conv = clip(rate_t * spread
    * own, 0, 0.95) with spread = conversion_spread^u, u ~ U(-1, 1), and own = ``task_affinity`` on the
    preferred group (normalised to mean 1 over item groups); propensities exp(N(0, 0.5)).
    """
    U, I, T = spec.users, spec.items, len(spec.tasks)  # noqa: E741 (paper notation)
    ug = rng.integers(0, spec.user_groups, U + 1)
    ig = rng.integers(0, spec.item_groups, I + 1)
    # Affinity: each user group likes one or two item groups a lot, the others little.
    click = np.full((spec.user_groups, spec.item_groups), 0.05)
    for a in range(spec.user_groups):
        click[a, a % spec.item_groups] = 0.6
        click[a, (a + 1) % spec.item_groups] = 0.3
    spread = np.exp(rng.uniform(-1, 1, (spec.user_groups, spec.item_groups, T - 1)) * np.log(spec.conversion_spread))
    own = np.ones((spec.user_groups, spec.item_groups, T - 1))
    for t in range(T - 1):
        own[np.arange(spec.user_groups), rng.integers(0, spec.item_groups, spec.user_groups), t] = spec.task_affinity
    own /= own.mean(axis=1, keepdims=True)
    conv = np.clip(np.asarray(spec.funnel_rates[: T - 1]) * spread * own, 0, 0.95)
    u_prop = np.exp(rng.normal(0, 0.5, U + 1))
    i_prop = np.exp(rng.normal(0, 0.5, I + 1))
    return _Planted(ug, ig, click, conv, u_prop, i_prop)


def _exposures(rng: np.random.Generator, planted: _Planted, users: int, items: int, per_user: int):
    """``per_user`` exposures of every user to uniform random items: (users, items, labels (n, T), times in
    [0, 1)), with click probability clip(click[g_u, g_i] * prop_u * prop_i, 0, 0.95) and the funnel below it.
    Draws: items, the funnel's labels, times. O(n T)."""
    p = planted
    u = np.repeat(np.arange(1, users + 1), per_user)
    i = rng.integers(1, items + 1, len(u))
    prob = np.clip(p.click[p.ug[u], p.ig[i]] * p.u_prop[u] * p.i_prop[i], 0, 0.95)
    lab = _funnel(rng, prob, p.conv[p.ug[u], p.ig[i]], len(u))
    ts = rng.random(len(u))
    return u, i, lab, ts


def _merging_scores(fu, fi, flab, users: int, items: int, T: int) -> sp.csr_matrix:
    """S (U+1, I+1): s = rho = sum_t 2^t y_t of the positive feature exposures (beta = 1), a repeated pair
    capped at 2^T - 1 (a valid code, not a sum). O(nnz)."""
    rho = (flab * (2 ** np.arange(T))).sum(axis=1)
    S = sp.coo_matrix((rho, (fu, fi)), shape=(users + 1, items + 1)).tocsr()
    S.data = np.minimum(S.data, 2**T - 1)  # repeated pairs: keep a valid code, not a sum
    return S


def _macro_nodes(rng: np.random.Generator, spec: SyntheticSpec, S: sp.csr_matrix, planted: _Planted):
    """(u_macro, i_macro, seen_u, seen_i): macro id = planted group + 1, a fraction ``assign_noise`` of the
    nodes in a uniform random macro node instead (draws: user noise, item noise, user macros, item macros);
    0 for a node without a non-zero in S (seen_* False). O(U + I + nnz)."""
    U, I = spec.users, spec.items  # noqa: E741 (paper notation)
    noisy_u = rng.random(U + 1) < spec.assign_noise
    noisy_i = rng.random(I + 1) < spec.assign_noise
    u_macro = np.where(noisy_u, rng.integers(0, spec.user_groups, U + 1), planted.ug) + 1
    i_macro = np.where(noisy_i, rng.integers(0, spec.item_groups, I + 1), planted.ig) + 1
    seen_u = np.asarray(S.getnnz(axis=1) > 0)
    seen_i = np.asarray(S.getnnz(axis=0) > 0)
    u_macro = np.where(seen_u, u_macro, 0)
    i_macro = np.where(seen_i, i_macro, 0)
    return u_macro, i_macro, seen_u, seen_i


def _macro_edges(spec: SyntheticSpec, S: sp.csr_matrix, u_macro, i_macro, seen_u, seen_i):
    """Dense float32 hop matrices (user_hops, item_hops), H of each (Eq 10): E1_U = S C_I, E2_U = S S^T C_U,
    E1_I = S^T C_U, E2_I = S^T S C_I, hop k+2 = S S^T hop k (users; S^T S for items), with C the one-hot
    macro assignment of the seen nodes. Sparse products pushed through the middle node (paths never
    enumerated); O((U + I) K) memory per hop."""
    U, I = spec.users, spec.items  # noqa: E741 (paper notation)
    CU = sp.csr_matrix((np.ones(U + 1), (np.arange(U + 1), np.maximum(u_macro - 1, 0))), (U + 1, spec.user_groups))
    CU = sp.diags(seen_u.astype(float)) @ CU
    CI = sp.csr_matrix((np.ones(I + 1), (np.arange(I + 1), np.maximum(i_macro - 1, 0))), (I + 1, spec.item_groups))
    CI = sp.diags(seen_i.astype(float)) @ CI
    user_hops = [S @ CI, S @ (S.T @ CU)]
    item_hops = [S.T @ CU, S.T @ (S @ CI)]
    for h in range(2, spec.hops):  # hop k+2 = S S^T hop k: push through the middle node, never enumerate paths
        user_hops.append(S @ (S.T @ user_hops[h - 2]))
        item_hops.append(S.T @ (S @ item_hops[h - 2]))
    user_hops = [np.asarray(sp.csr_matrix(h).todense(), dtype=np.float32) for h in user_hops[: spec.hops]]
    item_hops = [np.asarray(sp.csr_matrix(h).todense(), dtype=np.float32) for h in item_hops[: spec.hops]]
    return user_hops, item_hops


def _recent_neighbors(spec: SyntheticSpec, fu, fi, flab, fts):
    """(user_recent (U+1, T, L), item_recent (I+1, T, L)): per node and task the last L partners of its
    positive feature exposures, newest first (Eq 18), 0-padded. One sort per task and side: O(n log n T)."""
    U, I, T, L = spec.users, spec.items, len(spec.tasks), spec.recent_len  # noqa: E741 (paper notation)
    user_recent = np.zeros((U + 1, T, L), dtype=np.int64)
    item_recent = np.zeros((I + 1, T, L), dtype=np.int64)
    for t in range(T):
        m = flab[:, t] > 0
        for node, other, out in ((fu[m], fi[m], user_recent), (fi[m], fu[m], item_recent)):
            order = np.lexsort((-fts[m], node))  # by node, newest first
            nd, ot = node[order], other[order]
            rank = np.arange(len(nd)) - np.searchsorted(nd, nd)
            keep = rank < L
            out[nd[keep], t, rank[keep]] = ot[keep]
    return user_recent, item_recent


def _task_lookup(spec: SyntheticSpec, fu, fi, flab, i_macro) -> np.ndarray:
    """T^t[u, m] (U+1, T, K_I+1) (Eq 22): the share of user u's task-t positives on items of macro node m
    (column 0, unseen items, zeroed). O(n T + U T K_I)."""
    U, T = spec.users, len(spec.tasks)
    counts = np.zeros((U + 1, T, spec.item_groups + 1), dtype=np.float64)
    np.add.at(counts, (fu[:, None], np.arange(T)[None, :], i_macro[fi][:, None]), flab)
    counts[:, :, 0] = 0
    return counts / np.maximum(1.0, counts.sum(axis=2, keepdims=True))


def generate_examples(spec: SyntheticSpec) -> pa.Table:
    """The synthetic table (without ``run_date``), rows in user order like a pipeline partition."""
    rng = np.random.default_rng(spec.seed)
    U, I, T = spec.users, spec.items, len(spec.tasks)  # noqa: E741 (paper notation)
    planted = _planted(rng, spec)

    # ---- feature window ------------------------------------------------------------------------------
    fu, fi, flab, fts = _exposures(rng, planted, U, I, spec.feature_exposures_per_user)
    pos = flab.max(axis=1) > 0
    fu, fi, flab, fts = fu[pos], fi[pos], flab[pos], fts[pos]
    S = _merging_scores(fu, fi, flab, U, I, T)
    u_macro, i_macro, seen_u, seen_i = _macro_nodes(rng, spec, S, planted)
    user_hops, item_hops = _macro_edges(spec, S, u_macro, i_macro, seen_u, seen_i)
    user_recent, item_recent = _recent_neighbors(spec, fu, fi, flab, fts)
    lookup_tab = _task_lookup(spec, fu, fi, flab, i_macro)

    # ---- sample window -------------------------------------------------------------------------------
    su, si, slab, _ = _exposures(rng, planted, U, I, spec.sample_exposures_per_user)
    r = rng.random(len(su))
    train_f, valid_f = spec.split_fractions
    split = np.where(r < train_f, "train", np.where(r < train_f + valid_f, "valid", "test"))
    cold = ~(seen_u[su] & seen_i[si])

    n = len(su)
    cols = {
        "user_id": pa.array(su, pa.int64()),
        "item_id": pa.array(si, pa.int64()),
        "split": pa.array(split, pa.string()),
        "labels": flat_list_array(slab),
        "user_macro": pa.array(u_macro[su], pa.int32()),
        "item_macro": pa.array(i_macro[si], pa.int32()),
        "user_edges": nested_array([h[su] for h in user_hops]),
        "item_edges": nested_array([h[si] for h in item_hops]),
        "user_recent": nested_array([user_recent[su, t] for t in range(T)]),
        "item_recent": nested_array([item_recent[si, t] for t in range(T)]),
        "lookup": flat_list_array(lookup_tab[su, :, i_macro[si]].astype(np.float32)),
        "cold_start": pa.array(cold, pa.bool_()),
    }
    assert all(len(c) == n for c in cols.values())
    return pa.table(cols).cast(TRAINING_EXAMPLES.arrow(with_partition=False))


def write_examples(
    table: pa.Table, root: str, run_date: str, *, row_group_rows: int = 1024, files: int = 2, fmt: str = "parquet"
) -> str:
    """Write ``table`` as the ``run_date`` partition of ``<root>/training_examples`` (Parquet or Delta)."""
    base = os.path.join(root, TRAINING_EXAMPLES.name)
    if fmt == "delta":
        from deltalake import write_deltalake

        t = table.append_column("run_date", pa.array([run_date] * table.num_rows, pa.string()))
        write_deltalake(base, t, partition_by=["run_date"], mode="append")
        return base
    out = os.path.join(base, f"run_date={run_date}")
    os.makedirs(out, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for k in range(files):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        pq.write_table(part, os.path.join(out, f"part-{k:05d}.parquet"), row_group_size=row_group_rows)
    return out
