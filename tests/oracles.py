"""Small exact numpy/scipy oracles shared by the tests (never used by the pipeline itself)."""

from __future__ import annotations

import numpy as np
from scipy.special import comb


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie 1985), from the contingency table.

    1 for identical partitions (up to relabeling), about 0 for independent ones.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("labelings must be 1-d and of equal length")
    n = a.size
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    sum_cells = comb(table, 2).sum()
    sum_rows = comb(table.sum(axis=1), 2).sum()
    sum_cols = comb(table.sum(axis=0), 2).sum()
    expected = sum_rows * sum_cols / comb(n, 2)
    max_index = (sum_rows + sum_cols) / 2
    if max_index == expected:  # both partitions trivial (all one cluster or all singletons)
        return 1.0
    return float((sum_cells - expected) / (max_index - expected))


def kmeans(x: np.ndarray, k: int, seed: int = 0, restarts: int = 10, iters: int = 100) -> np.ndarray:
    """Plain Lloyd k-means with k-means++ init and restarts (best inertia wins); returns labels.

    Deterministic for a seed. For test-sized data only (dense n x k distances).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1 / len(x))
            centers.append(x[rng.choice(len(x), p=p)])
        c = np.array(centers)
        for _ in range(iters):
            labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def dense_matrix(rows, row_ids, col_ids) -> np.ndarray:
    """Dense matrix from ``(row_id, col_id, value)`` triples, indexed by the sorted id lists given."""
    r = {v: i for i, v in enumerate(row_ids)}
    c = {v: i for i, v in enumerate(col_ids)}
    out = np.zeros((len(row_ids), len(col_ids)))
    for ri, ci, v in rows:
        out[r[ri], c[ci]] += v
    return out


def lower_quantile(values, q: float) -> float:
    """The smallest v with at least ceil(q * n) values <= v: Spark's exact (relativeError 0) quantile."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method="inverted_cdf"))
