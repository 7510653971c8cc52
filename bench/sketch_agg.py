"""How to sum r-vectors per key in Spark: the choice behind :mod:`mgoe_spark.sketch`.

Runs the user-side sketch Z_U = S (S^T Omega_U) on a synthetic S three ways and times each (the result is
forced with the ``noop`` sink, so no I/O is timed):

- ``columns``: one ``sum`` aggregate per component, then ``array(...)`` (what :mod:`mgoe_spark.sketch` does),
- ``explode``: explode to (key, c, value) rows, ``groupBy(key, c)``, re-pivot with a sorted ``collect_list``,
- ``collect``: ``collect_list`` of the vectors per key, reduced with ``aggregate`` + ``zip_with``.

    python -m bench.sketch_agg --pairs 300000 --dim 64 [--json PATH]

Measured numbers: see the report of the commit that adds this file (the shared dev box is too loaded for
stable timings). Why ``columns`` should win: its partial aggregate is a fixed r-double buffer per key updated
in generated code, combined map-side before the shuffle; ``explode`` multiplies the rows entering the shuffle
aggregation by r and needs a second shuffle to re-pivot; ``collect`` ships every (pair x r) vector through
the shuffle uncombined and holds a key's whole list in memory (O(deg * r) for a hot item), which also rules
it out at billion scale.
"""

from __future__ import annotations

import argparse
import json
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mgoe_spark import rand
from mgoe_spark.sketch import omega_entries, sketch_side


def synthetic_scores(spark, pairs: int, users: int, items: int, seed: int = 1) -> DataFrame:
    """A random S with Zipf-like item popularity (hot items), scores in 1..15."""
    df = spark.range(pairs).select(
        (F.floor(rand.uniform(seed, "u", "id") * users) + 1).cast("long").alias("user_id"),
        # u^3 concentrates mass on small ids: a few very hot items.
        (F.floor(F.pow(rand.uniform(seed, "i", "id"), 3) * items) + 1).cast("long").alias("item_id"),
        (F.floor(rand.uniform(seed, "s", "id") * 15) + 1).cast("double").alias("score"),
    )
    return df.groupBy("user_id", "item_id").agg(F.max("score").alias("score"))


def sketch_explode(s: DataFrame, dim: int, seed: int) -> DataFrame:
    cs = s.select("user_id", "item_id", "score", F.explode(F.sequence(F.lit(0), F.lit(dim - 1))).alias("c"))
    w = rand.normal(seed, "omega_user", F.col("user_id"), F.col("c")) * F.lit(dim**-0.5)
    y = cs.groupBy("item_id", "c").agg(F.sum(F.col("score") * w).alias("y"))
    z = (
        s.join(y, "item_id")
        .groupBy("user_id", "c")
        .agg(F.sum(F.col("score") * F.col("y")).alias("z"))
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct("c", "z"))).alias("zs"))
    )
    return z.select("user_id", F.col("zs.z").cast("array<float>").alias("vector"))


def _sum_collect(df: DataFrame, key: str, vec, dim: int, out: str) -> DataFrame:
    zero = F.array_repeat(F.lit(0.0), dim)
    return df.groupBy(key).agg(
        F.aggregate(F.collect_list(vec), zero, lambda acc, v: F.zip_with(acc, v, lambda a, b: a + b)).alias(out)
    )


def sketch_collect(s: DataFrame, dim: int, seed: int) -> DataFrame:
    omega = omega_entries(F.col("user_id"), dim, seed, "user", "gaussian")
    y = _sum_collect(s, "item_id", F.array(*[F.col("score") * w for w in omega]), dim, "y")
    joined = s.join(y, "item_id")
    z = _sum_collect(joined, "user_id", F.transform("y", lambda x: x * F.col("score")), dim, "z")
    return z.select("user_id", F.col("z").cast("array<float>").alias("vector"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300_000)
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default="columns,explode,collect")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    from mgoe_spark.config import load_config
    from mgoe_spark.session import get_spark

    spark = get_spark(load_config(profile="test").spark, app_name="bench-sketch-agg")
    s = synthetic_scores(spark, args.pairs, args.users, args.items).cache()
    nnz = s.count()
    methods = {
        "columns": lambda: sketch_side(s, "user", args.dim, 7, normalize=False).select("node_id", "vector"),
        "explode": lambda: sketch_explode(s, args.dim, 7),
        "collect": lambda: sketch_collect(s, args.dim, 7),
    }
    result: dict = {"nnz": nnz, "dim": args.dim}
    print(f"nnz={nnz} dim={args.dim}")
    for name in args.methods.split(","):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            methods[name]().write.format("noop").mode("overwrite").save()
            times.append(time.perf_counter() - t0)
        result[f"seconds_{name}"] = min(times)
        print(f"{name:8s} best {min(times):6.2f} s  (all: {', '.join(f'{t:.2f}' for t in times)})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
