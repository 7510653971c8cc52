"""The k-means engines and the choice between them.

An engine holds the packed nodes for one fit and answers :func:`~mgoe_spark.nodes.kmeans.loop.run_fit`'s
questions: ``stats()`` (input statistics, once), ``sample(prob)`` (init sample rows) and
``step_parts(centroids, iteration, fraction, scales)`` (one :data:`~mgoe_spark.nodes.kmeans.blocks.PartialSums` per
task). Both engines run the same worker code on the same blocks (cut per input partition), and the sums are
exact fixed-point integers, so for the same input DataFrame and seed they give bit-identical fits, whatever
the number of task slots.

- ``jobs`` (:class:`JobsEngine`, the default, ``auto``): the packed blocks are cached as an RDD (one pass) and
  every iteration is one Spark job over that cache: each pass unpickles the blocks again (O(n r) memcpy) and
  pays Spark's per-job cost. Spark's own channels only (``spark.authenticate``, network encryption and task
  retry apply); works on any cluster (dynamic allocation, speculation, busy slots).
- ``resident`` (:class:`~mgoe_spark.nodes.kmeans.resident.ResidentEngine`, opt-in): one Spark job per fit
  whose tasks all run at once; the vectors leave Spark once and stay in the Python workers; per iteration only
  centroids and sums move, over an authenticated socket of its own (see that module for its safeguards).

Why no barrier engine (``BarrierTaskContext.allGather`` for the sums, all on Spark's channels)? Spark 4.2's
``BarrierTaskContext.runBarrier`` polls its RPC future with ``Thread.sleep(1000)``: every ``allGather``
costs at least 1 s (measured: 12 rounds of 30 KB on local[2] took 11 s), so a fit of 10 iterations cannot
take less than ~12 s, slower than the jobs engine (bench/results/kmeans_engines_*).

:func:`resident_blocker` says why the resident engine cannot run here (``None`` when it can).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mgoe_spark.nodes.kmeans.blocks import (
    Block,
    PartialSums,
    empty_stats,
    merge_stats,
    pack_batches,
    partial_sums,
    sample_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession


def task_slots(spark: SparkSession) -> int | None:
    """How many tasks the cluster can run at once (what Spark's own barrier slot check uses), or None."""
    try:
        sc = spark.sparkContext._jsc.sc()
        return int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # py4j API missing (e.g. Spark Connect): let the caller fall back
        return None


def resident_blocker(spark: SparkSession) -> str | None:
    """Why the resident engine cannot run on this session, or None if it can."""
    if str(spark.conf.get("spark.dynamicAllocation.enabled", "false")).lower() == "true":
        return "dynamic allocation is on (the resident job needs a fixed set of executors)"
    if str(spark.conf.get("spark.speculation", "false")).lower() == "true":
        return "speculation is on (a duplicate task of the resident job would hold a slot for the whole fit)"
    slots = task_slots(spark)
    if slots is None:
        return "the number of task slots is unknown (no JVM SparkContext)"
    if slots < 1:
        return "no task slots are registered"
    return None


def _make_pack_fn(r: int | None, seed: int, block_rows: int):
    """mapInArrow function: a partition's batches -> one pickled ``(block, stats)`` row per block."""

    def pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        blocks, stats = pack_batches(batches, r, seed, block_rows)
        for i, block in enumerate(blocks):
            payload = pickle.dumps((block, stats if i == 0 else empty_stats()), protocol=pickle.HIGHEST_PROTOCOL)
            yield pa.RecordBatch.from_arrays([pa.array([payload], pa.binary())], names=["payload"])

    return pack


class JobsEngine:
    """One Spark job per iteration over an RDD of cached numpy blocks. Use as a context manager."""

    name = "jobs"

    def __init__(self, nodes: DataFrame, r: int | None, seed: int, block_rows: int, threads: int) -> None:
        from pyspark import StorageLevel

        packed = nodes.mapInArrow(_make_pack_fn(r, seed, block_rows), "payload binary")
        self._blocks = packed.rdd.map(lambda row: pickle.loads(row[0])).persist(StorageLevel.MEMORY_AND_DISK)
        self._seed = seed
        self._threads = threads

    @property
    def partitions(self) -> int:
        return self._blocks.getNumPartitions()

    def stats(self) -> dict[str, float]:
        return self._blocks.map(lambda b: b[1]).fold(empty_stats(), merge_stats)

    def sample(self, prob: float) -> list[tuple[np.ndarray, ...]]:
        seed = self._seed
        return self._blocks.mapPartitions(lambda it: [sample_rows((b for b, _ in it), seed, prob)]).collect()

    def step_parts(
        self, centroids: np.ndarray, iteration: int, fraction: float, scales: tuple[int, int]
    ) -> list[PartialSums]:
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        threads = self._threads

        def step(it: Iterator[tuple[Block, dict]]) -> list[PartialSums]:
            return [partial_sums((b for b, _ in it), c, iteration, fraction, threads, scales)]

        return self._blocks.mapPartitions(step).collect()

    def close(self) -> None:
        self._blocks.unpersist()

    def __enter__(self) -> JobsEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
