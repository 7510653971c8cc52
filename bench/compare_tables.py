"""Compare two build output roots table by table: ``python -m bench.compare_tables OLD_ROOT NEW_ROOT``.

For every build table (Parquet layout ``<root>/<table>/run_date=D/``): the same columns, the same number
of rows, and after sorting by the table's key columns, integer / string columns identical and float
columns (scalars and nested arrays) equal within ``--rtol`` relative (default 1e-6, plus 1e-9 absolute
for values near 0). Prints one line per table; exit 1 on any difference. Loads whole tables with pyarrow:
for test-profile builds only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

TABLES = {
    "pair_scores": ["user_id", "item_id"],
    "node_vectors": ["side", "node_id"],
    "node_weights": ["side", "node_id"],
    "centroids": ["side", "macro_id"],
    "assignments": ["snapshot", "side", "node_id"],
    "macro_edges": ["snapshot", "side", "node_id", "hop"],
    "recent_neighbors": ["snapshot", "side", "node_id", "task"],
    "task_lookup": ["snapshot", "user_id", "task", "macro_id"],
    "samples": None,  # no unique key: sorted by every scalar column
    "training_examples": None,
}


def _load(root: Path, table: str):
    import pandas as pd

    parts = sorted(p for p in (root / table).glob("run_date=*") if p.is_dir())
    frames = [pq.read_table(p).to_pandas() for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else None


def _flat(value) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.concatenate([_flat(v) for v in value]) if len(value) else np.array([])
    if isinstance(value, (list, tuple)):
        return np.concatenate([_flat(v) for v in value]) if value else np.array([])
    if isinstance(value, dict):
        return np.concatenate([_flat(v) for v in value.values()])
    return np.atleast_1d(np.asarray(value))


def _scalar_cols(df) -> list[str]:
    return [c for c in df.columns if df[c].map(lambda v: np.isscalar(v) or v is None).all()]


def compare(old_root: Path, new_root: Path, rtol: float = 1e-6) -> list[str]:
    problems = []
    for table, key in TABLES.items():
        old, new = _load(old_root, table), _load(new_root, table)
        if old is None or new is None:
            problems.append(f"{table}: missing in {'old' if old is None else 'new'}")
            continue
        if sorted(old.columns) != sorted(new.columns) or len(old) != len(new):
            problems.append(f"{table}: columns/rows {list(old.columns)}/{len(old)} vs {list(new.columns)}/{len(new)}")
            continue
        new = new[list(old.columns)]
        keys = key or _scalar_cols(old)
        old = old.sort_values(keys, kind="stable").reset_index(drop=True)
        new = new.sort_values(keys, kind="stable").reset_index(drop=True)
        bad = []
        for col in old.columns:
            a = np.concatenate([_flat(v) for v in old[col]]) if len(old) else np.array([])
            b = np.concatenate([_flat(v) for v in new[col]]) if len(new) else np.array([])
            if a.shape != b.shape:
                bad.append(f"{col} (shape)")
            elif a.dtype.kind == "f" or b.dtype.kind == "f":
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                if not np.allclose(a64, b64, rtol=rtol, atol=1e-9, equal_nan=True):
                    bad.append(f"{col} (max abs diff {np.nanmax(np.abs(a64 - b64)):.3g})")
            elif not np.array_equal(a, b):
                bad.append(col)
        if bad:
            problems.append(f"{table}: differs in {', '.join(bad)}")
        print(f"{table:>18}: {len(old):>7} rows, {'DIFFERS ' + ', '.join(bad) if bad else 'same'}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old_root", type=Path)
    parser.add_argument("new_root", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    problems = compare(args.old_root, args.new_root, args.rtol)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
