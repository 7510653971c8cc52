"""Compare two build output roots table by table: ``python -m bench.compare_tables OLD_ROOT NEW_ROOT``.

For every build table (Parquet layout ``<root>/<table>/run_date=D/``): the same columns, the same number
of rows, and after sorting by the table's key columns, integer / string columns identical and float
columns (scalars and nested arrays) equal within ``--rtol`` relative (default 1e-6, plus 1e-9 absolute
for values near 0). Prints one line per table; exit 1 on any difference. Loads whole tables with pyarrow:
for test-profile builds only.

``--exact``: every table of the roots (ingest's, windows and kmeans_stats included; run_metrics, which holds
timings, left out) must be bit-identical after sorting by its scalar columns: the check that a refactor
changed no table (``python -m bench.compare_tables --exact OLD NEW``).
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


def compare_exact(old_root: Path, new_root: Path) -> list[str]:
    """Every table but run_metrics bit-identical (same schema, rows equal after sorting by scalar columns)."""
    import pyarrow as pa

    def load(root: Path, name: str):
        table = pq.read_table(root / name)
        if "run_date" in table.column_names:  # read back as a dictionary column: compare it as strings
            i = table.column_names.index("run_date")
            table = table.set_column(i, "run_date", table["run_date"].cast(pa.string()))
        return table

    problems = []
    names = sorted(({p.name for p in old_root.iterdir()} | {p.name for p in new_root.iterdir()}) - {"run_metrics"})
    for name in names:
        if not (old_root / name).is_dir() or not (new_root / name).is_dir():
            problems.append(f"{name}: missing in {'old' if not (old_root / name).is_dir() else 'new'}")
            continue
        old, new = load(old_root, name), load(new_root, name)
        keys = [(c, "ascending") for c in old.column_names if not pa.types.is_list(old.schema.field(c).type)]
        same = old.schema == new.schema and old.num_rows == new.num_rows
        same = same and old.sort_by(keys).equals(new.sort_by(keys))
        if not same:
            problems.append(f"{name}: differs")
        print(f"{name:>18}: {old.num_rows:>7} rows, {'bit-identical' if same else 'DIFFERS'}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old_root", type=Path)
    parser.add_argument("new_root", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--exact", action="store_true", help="every table bit-identical (see the docstring)")
    args = parser.parse_args(argv)
    if args.exact:
        problems = compare_exact(args.old_root, args.new_root)
    else:
        problems = compare(args.old_root, args.new_root, args.rtol)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
