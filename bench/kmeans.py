"""Benchmark: Spark + FAISS weighted k-means vs Spark MLlib KMeans vs single-process FAISS (issue 3 item 6).

    python -m bench.kmeans --json PATH [--points 1000000 --dim 32 --k 64 --iters 10 --master local[2]]

All methods get the same data (a planted Gaussian mixture with weights 0.5 / 1 / 2) and the same initial
centroids (weighted k-means++ on a seeded sample, computed once, not timed), run exactly ``--iters``
iterations (tolerance 0) and end with an assignment of every point:

- ours: :class:`mgoe_spark.kmeans.WeightedKMeans` in mini-batch and in full mode (barrier engine; full mode
  also with the one-job-per-iteration engine), from the cached nodes DataFrame: fit (block cache,
  iterations, final pass) + ``assign(df)`` materialised with the noop sink;
- MLlib: ``org.apache.spark.mllib.clustering.KMeans`` with ``setInitialModel`` and ``runWithWeight`` (the
  code path under ``pyspark.ml.clustering.KMeans(weightCol=...)``, whose Python API has no initial-model
  parameter), from a cached JVM RDD of (vector, weight), + ``model.predict`` over all points; optionally
  also ``pyspark.ml.clustering.KMeans(weightCol=...)`` with its own k-means|| init (``--ml-api``);
- FAISS single: ``faiss.Kmeans`` on the in-memory float32 array with the weights and the same init, all
  points used (no subsampling) + one ``search`` of all points.

Inertia is the weighted inertia over all points of each method's final centroids, computed the same way
for all (FAISS exact search, float64 sum). Ratios use the better of our two modes (lower time among those
whose inertia is within 1% of MLlib's; else the lower inertia).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def make_data(n: int, dim: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Planted mixture: 2k Gaussian groups (so k-means has real work), unit noise; weights in {0.5, 1, 2}."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, (2 * k, dim)).astype(np.float32)
    labels = rng.integers(0, 2 * k, n)
    x = centers[labels] + rng.normal(0.0, 1.0, (n, dim)).astype(np.float32)
    w = rng.choice(np.array([0.5, 1.0, 2.0]), size=n)
    return np.ascontiguousarray(x, dtype=np.float32), w


def weighted_inertia(x: np.ndarray, w: np.ndarray, centroids: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d, _ = index.search(x, 1)
    return float((w * np.maximum(d[:, 0].astype(np.float64), 0.0)).sum())


def nodes_frame(spark, x: np.ndarray, w: np.ndarray, partitions: int):
    import pyarrow as pa

    n, dim = x.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    vectors = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()))
    table = pa.table({"node_id": pa.array(np.arange(1, n + 1, dtype=np.int64)), "vector": vectors, "weight": w})
    return spark.createDataFrame(table).repartition(partitions)


def run_ours(df, init, x, w, mode: str, engine: str, iters: int, batch_fraction: float) -> dict:
    from mgoe_spark.kmeans import WeightedKMeans

    km = WeightedKMeans(
        init.shape[0], mode=mode, engine=engine, max_iter=iters, tol=0.0, batch_fraction=batch_fraction, seed=1
    )
    t0 = time.perf_counter()
    km.fit(df, init_centroids=init)
    t1 = time.perf_counter()
    km.assign(df).write.format("noop").mode("overwrite").save()
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "seconds_fit": t1 - t0,
        "seconds_assign": t2 - t1,
        "phases": km.timings,
        "seconds_per_iteration": km.timings["iterations"] / max(km.n_iter, 1),
        "iterations": km.n_iter,
        "inertia": weighted_inertia(x, w, km.centroids),
        "inertia_reported": km.inertia,
        "reseeded": km.reseeded_total,
    }


def mllib_rdd(spark, df):
    """A cached JVM RDD[(mllib Vector, java.lang.Double)] built without Python rows: vectors via
    ``DatasetUtils.columnToOldVector``, weights pickled from Python, zipped (same partitions and order)."""
    from pyspark.mllib.common import _to_java_object_rdd

    jvm = spark.sparkContext._jvm
    cached = df.select("vector", "weight").persist()
    cached.count()
    vecs = jvm.org.apache.spark.ml.util.DatasetUtils.columnToOldVector(cached._jdf, "vector")
    weights = _to_java_object_rdd(cached.rdd.map(lambda row: float(row[1])))
    pairs = vecs.toJavaRDD().zip(weights).rdd().cache()
    pairs.count()
    return pairs, vecs.cache(), cached


def run_mllib_same_init(spark, pairs, vecs, init: np.ndarray, iters: int, seed: int, x, w) -> dict:
    jvm = spark.sparkContext._jvm
    gateway = spark.sparkContext._gateway
    centers = gateway.new_array(jvm.org.apache.spark.mllib.linalg.Vector, init.shape[0])
    for i, c in enumerate(init):
        values = gateway.new_array(gateway.jvm.double, len(c))
        for j, v in enumerate(c):
            values[j] = float(v)
        centers[i] = jvm.org.apache.spark.mllib.linalg.Vectors.dense(values)
    initial = jvm.org.apache.spark.mllib.clustering.KMeansModel(centers)
    algo = (
        jvm.org.apache.spark.mllib.clustering.KMeans()
        .setK(init.shape[0])
        .setMaxIterations(iters)
        .setEpsilon(0.0)
        .setSeed(seed)
        .setInitialModel(initial)
    )
    t0 = time.perf_counter()
    model = algo.runWithWeight(pairs, False, jvm.scala.Option.empty())
    t1 = time.perf_counter()
    model.predict(vecs).count()
    t2 = time.perf_counter()
    found = np.array([list(c.toArray()) for c in model.clusterCenters()])
    inertia = weighted_inertia(x, w, found)
    return {"seconds": t2 - t0, "seconds_fit": t1 - t0, "seconds_assign": t2 - t1, "inertia": inertia}


def run_ml_api(df, k: int, iters: int, seed: int, x, w) -> dict:
    from pyspark.ml.clustering import KMeans

    km = KMeans(k=k, maxIter=iters, tol=0.0, seed=seed, featuresCol="features", weightCol="weight")
    from pyspark.ml.functions import array_to_vector

    data = df.select(array_to_vector("vector").alias("features"), "weight").cache()
    data.count()
    t0 = time.perf_counter()
    model = km.fit(data)
    model.transform(data).write.format("noop").mode("overwrite").save()
    t1 = time.perf_counter()
    data.unpersist()
    found = np.array([np.asarray(c) for c in model.clusterCenters()])
    return {"seconds": t1 - t0, "inertia": weighted_inertia(x, w, found), "init": "k-means|| (its own)"}


def run_faiss_single(x, w, init, iters: int) -> dict:
    import faiss

    k, dim = init.shape
    t0 = time.perf_counter()
    km = faiss.Kmeans(dim, k, niter=iters, max_points_per_centroid=x.shape[0], seed=1, verbose=False)
    km.train(x, weights=w.astype(np.float32), init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    km.index.search(x, 1)
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "inertia": weighted_inertia(x, w, km.centroids), "threads": faiss.omp_get_max_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", required=True, metavar="PATH")
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--batch-fraction", type=float, default=0.2)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-mllib", action="store_true")
    p.add_argument(
        "--variants",
        default="minibatch/barrier,full/barrier,full/jobs",
        help="our runs as mode/engine pairs (mode: minibatch|full, engine: barrier|jobs)",
    )
    p.add_argument("--ml-api", action="store_true", help="also time pyspark.ml KMeans with its own init")
    p.add_argument("--driver-memory", default="6g")
    args = p.parse_args(argv)

    from mgoe_spark.config import SparkSettings
    from mgoe_spark.kmeans import kmeans_plusplus
    from mgoe_spark.session import get_spark

    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": args.driver_memory,
        "spark.sql.shuffle.partitions": str(args.partitions),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    }
    spark = get_spark(SparkSettings(master=args.master, conf=conf), app_name="bench-kmeans")
    x, w = make_data(args.points, args.dim, args.k, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    sample = rng.choice(args.points, size=min(args.points, 256 * args.k), replace=False)
    init = kmeans_plusplus(x[sample], w[sample], args.k, seed=args.seed)

    df = nodes_frame(spark, x, w, args.partitions).persist()
    df.count()
    result: dict = {
        "points": args.points,
        "dim": args.dim,
        "k": args.k,
        "iters": args.iters,
        "master": args.master,
        "partitions": args.partitions,
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg()[0],
    }
    # warm up Python workers, FAISS and the JIT on a small slice so the first timed variant is not penalised
    small = nodes_frame(spark, x[: 20 * args.k], w[: 20 * args.k], args.partitions)
    run_ours(small, init, x[: 20 * args.k], w[: 20 * args.k], "full", "barrier", 1, 1.0)
    modes = {}
    for mode, engine in [tuple(v.split("/")) for v in args.variants.split(",")]:
        name = f"{mode}/{engine}"
        modes[name] = run_ours(df, init, x, w, mode, engine, args.iters, args.batch_fraction)
        print(f"ours {name}: {modes[name]['seconds']:.2f}s inertia {modes[name]['inertia']:.6g}", flush=True)
    result["ours"] = modes
    faiss_single = run_faiss_single(x, w, init, args.iters)
    print(f"faiss single: {faiss_single['seconds']:.2f}s inertia {faiss_single['inertia']:.6g}", flush=True)
    result["faiss_single"] = faiss_single
    mllib = None
    if not args.skip_mllib:
        pairs, vecs, cached = mllib_rdd(spark, df)
        mllib = run_mllib_same_init(spark, pairs, vecs, init, args.iters, args.seed, x, w)
        print(f"mllib: {mllib['seconds']:.2f}s inertia {mllib['inertia']:.6g}", flush=True)
        pairs.unpersist(False)
        vecs.unpersist(False)
        cached.unpersist()
        result["mllib"] = mllib
        if args.ml_api:
            result["mllib_ml_api"] = run_ml_api(df, args.k, args.iters, args.seed, x, w)
            print(f"mllib ml api: {result['mllib_ml_api']['seconds']:.2f}s", flush=True)

    ref = mllib["inertia"] if mllib else faiss_single["inertia"]
    good = [m for m in modes if modes[m]["inertia"] <= 1.01 * ref]
    best = min(good, key=lambda m: modes[m]["seconds"]) if good else min(modes, key=lambda m: modes[m]["inertia"])
    ours = modes[best]
    result.update(
        best_mode=best,
        seconds_ours=ours["seconds"],
        inertia_ours=ours["inertia"],
        seconds_faiss_single=faiss_single["seconds"],
        inertia_faiss_single=faiss_single["inertia"],
        seconds_mllib=mllib["seconds"] if mllib else None,
        inertia_mllib=mllib["inertia"] if mllib else None,
        speedup_vs_mllib=mllib["seconds"] / ours["seconds"] if mllib else None,
        inertia_vs_mllib=ours["inertia"] / mllib["inertia"] - 1 if mllib else None,
        slowdown_vs_faiss_single=ours["seconds"] / faiss_single["seconds"],
        assign_rows_per_s=args.points / ours["seconds_assign"],
        load_avg_end=os.getloadavg()[0],
    )
    rows = [(f"ours {m}", modes[m]["seconds"], modes[m]["inertia"]) for m in modes]
    rows.append(("faiss single", faiss_single["seconds"], faiss_single["inertia"]))
    if mllib:
        rows.append(("mllib (same init)", mllib["seconds"], mllib["inertia"]))
    if "mllib_ml_api" in result:
        rows.append(("mllib ml api (own init)", result["mllib_ml_api"]["seconds"], result["mllib_ml_api"]["inertia"]))
    print(f"\n{'method':<26}{'seconds':>10}{'weighted inertia':>20}")
    for name, sec, inertia in rows:
        print(f"{name:<26}{sec:>10.2f}{inertia:>20.6g}")
    for key in ("speedup_vs_mllib", "inertia_vs_mllib", "slowdown_vs_faiss_single", "assign_rows_per_s"):
        if result[key] is not None:
            print(f"{key}: {result[key]:.4g}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
