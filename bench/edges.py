"""Macro-edge engines compared: sparse JVM aggregation vs dense K-arrays summed in numpy.

    python -m bench.edges --pairs 500000 --ks 20,256 [--methods sparse,dense] [--json PATH]

The ``method`` values of :func:`mgoe_spark.features.edges.macro_edges`:

- ``sparse``: S joined with the integer macro ids, ``groupBy(node, macro).sum`` with map-side combine,
  hop h from the sparse hop h-1 rows, dense arrays built once at the end (all in the JVM).
- ``dense``: S joined with dense K-float vectors of the other side (one-hot at hop 1), shuffled by node
  (nnz x (4K + 24) bytes, no map-side combine) and folded in numpy per Arrow batch.
- ``hybrid``: hop 1 sparse (one join row per pair), hops >= 2 dense.

S is synthetic: ``--pairs`` pairs over users (pairs / 25) and items (users / 2) with Zipf-like item
popularity, random assignments. Each run is forced with the ``noop`` sink (no I/O timed), 2 hops, the two
methods alternating in one process, best of ``--repeat``; the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def frames(spark, pairs: int, k: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n_users = max(100, pairs // 25)
    n_items = max(50, n_users // 2)
    users = rng.integers(1, n_users + 1, size=pairs)
    items = np.minimum(rng.zipf(1.3, size=pairs), n_items)
    items = (items * 2654435761 % n_items) + 1  # popular items spread over the id range
    scores = rng.integers(1, 16, size=pairs).astype(float)
    import pandas as pd

    ps = pd.DataFrame({"user_id": users, "item_id": items, "score": scores}).drop_duplicates(["user_id", "item_id"])
    asg = pd.concat(
        [
            pd.DataFrame(
                {"side": "user", "node_id": np.arange(1, n_users + 1), "macro_id": rng.integers(1, k + 1, n_users)}
            ),
            pd.DataFrame(
                {"side": "item", "node_id": np.arange(1, n_items + 1), "macro_id": rng.integers(1, k + 1, n_items)}
            ),
        ]
    )
    ps_df = spark.createDataFrame(ps).repartition(8).cache()
    asg_df = spark.createDataFrame(asg).repartition(4).cache()
    return ps_df, asg_df, len(ps)


def time_methods(spark, pairs: int, ks: list[int], methods: list[str], repeat: int = 1) -> list[dict]:
    from mgoe_spark.features.edges import macro_edges

    out = []
    for k in ks:
        ps, asg, nnz = frames(spark, pairs, k)
        ps.count(), asg.count()
        for method in methods:
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                macro_edges(ps, asg, k, k, hops=2, method=method).write.format("noop").mode("overwrite").save()
                best = min(best, time.perf_counter() - t)
            row = {"k": k, "method": method, "pairs": nnz, "seconds": round(best, 2), "load": os.getloadavg()[0]}
            print(json.dumps(row), flush=True)
            out.append(row)
        ps.unpersist(), asg.unpersist()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=500_000)
    parser.add_argument("--ks", default="20,256")
    parser.add_argument("--methods", default="hybrid,sparse,dense")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark

    cfg = load_config(
        overrides=["spark.master=local[2]", "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '8'}"]
    )
    spark = get_spark(cfg.spark, app_name="bench-edges")
    rows = time_methods(spark, args.pairs, [int(k) for k in args.ks.split(",")], args.methods.split(","), args.repeat)
    spark.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
