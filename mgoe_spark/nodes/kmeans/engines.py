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
    ASSIGN_SCHEMA,
    Block,
    PartialSums,
    assignment_batch,
    empty_stats,
    ipc_payload,
    label_batch,
    merge_stats,
    pack_batches,
    partial_sums,
    sample_rows,
    unpacked,
)
from mgoe_spark.nodes.kmeans.frames import decode_arrays, encode_arrays

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


def _make_arrow_pack_fn(schema: pa.Schema, r: int | None, seed: int, block_rows: int):
    """mapPartitions function: a partition's Arrow record-batch messages -> ``(block, stats)`` per block."""

    def pack(messages: Iterator[bytes]) -> Iterator[tuple[Block, dict]]:
        import pyarrow as pa

        batches = (pa.ipc.read_record_batch(pa.py_buffer(m), schema) for m in messages)
        blocks, stats = pack_batches(batches, r, seed, block_rows)
        for i, block in enumerate(blocks):
            yield block, stats if i == 0 else empty_stats()

    return pack


def packed_blocks(nodes: DataFrame, r: int | None, seed: int, block_rows: int, arrow_rdd: bool = True):
    """An RDD of ``(block, stats)``, one per numpy block of ``nodes`` (same partitions), not yet cached.

    Fast path: the DataFrame's Arrow batches as raw IPC messages (``Dataset.toArrowBatchRdd``, the JVM side of
    ``toPandas``; not in PySpark's public API) read straight into the Python workers: one JVM -> Python pass.
    Measured at 1M x 32 on local[2]: 1.7 s against 5.8 s for the public path (``mapInArrow`` packing, then
    ``DataFrame.rdd``, whose row pickling in the JVM copies the payload bytes one by one), which stays the
    fallback where the JVM method is missing (e.g. Spark Connect or another Spark version), or with
    ``arrow_rdd=False``. Both give the same blocks (tests/test_kmeans.py).
    """
    from pyspark import RDD
    from pyspark.serializers import NoOpSerializer
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        if not arrow_rdd:
            raise NotImplementedError
        jrdd = nodes._jdf.toArrowBatchRdd().toJavaRDD()
        schema = to_arrow_schema(nodes.schema)
    except Exception:  # no JVM Dataset (Spark Connect) or no such method: the public path
        packed = nodes.mapInArrow(_make_pack_fn(r, seed, block_rows), "payload binary")
        return packed.rdd.map(lambda row: pickle.loads(row[0]))
    rdd = RDD(jrdd, nodes.sparkSession.sparkContext, NoOpSerializer())
    return rdd.mapPartitions(_make_arrow_pack_fn(schema, r, seed, block_rows), preservesPartitioning=True)


def _final_fn(c: np.ndarray, threads: int, scales: tuple[int, int]):
    """mapPartitions function of the final pass: ``("sums", frame body of the PartialSums)``, then per block
    ``("labels", Arrow IPC of (node_id, 0-based label, squared distance))``: bytes only."""

    def final(it: Iterator[tuple[Block, dict]]) -> Iterator[tuple[str, bytes]]:
        keep: list[tuple[np.ndarray, ...]] = []
        sums = partial_sums((b for b, _ in it), c, 0, 1.0, threads, scales, keep)
        yield "sums", encode_arrays(list(sums))
        for ids, lab, d in keep:
            yield "labels", ipc_payload(label_batch(ids, lab, d))

    return final


def _emit_fn(new_id: np.ndarray):
    """mapInArrow function: cached label payloads -> :data:`ASSIGN_SCHEMA` rows, label l -> macro new_id[l] + 1."""

    def emit(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in unpacked(batches):
            lab = batch.column("label").to_numpy()
            ids, d = batch.column("node_id").to_numpy(), batch.column("distance").to_numpy()
            yield assignment_batch(ids, new_id[lab], d)

    return emit


class JobsEngine:
    """One Spark job per iteration over an RDD of cached numpy blocks. Use as a context manager.

    The final pass (``step_parts`` with iteration 0, :func:`~mgoe_spark.nodes.kmeans.loop.run_fit`'s last call)
    also keeps every node's label in a cached DataFrame (MEMORY_AND_DISK, ~16 bytes a node, a few binary rows
    per partition), so :meth:`emit` gives the fitted nodes' assignments without another pass over the vectors.
    """

    name = "jobs"

    def __init__(self, nodes: DataFrame, r: int | None, seed: int, block_rows: int, threads: int) -> None:
        from pyspark import StorageLevel

        self._blocks = packed_blocks(nodes, r, seed, block_rows).persist(StorageLevel.MEMORY_AND_DISK)
        self._spark = nodes.sparkSession
        self._seed = seed
        self._threads = threads
        self._final: DataFrame | None = None
        self.emitted: DataFrame | None = None
        """The cache :meth:`emit`'s assignments are read from (the caller unpersists it)."""

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
        if iteration == 0:
            return self._final_pass(c, scales)

        def step(it: Iterator[tuple[Block, dict]]) -> list[PartialSums]:
            return [partial_sums((b for b, _ in it), c, iteration, fraction, threads, scales)]

        return self._blocks.mapPartitions(step).collect()

    def _final_pass(self, c: np.ndarray, scales: tuple[int, int]) -> list[PartialSums]:
        """One job: the sums of every task, and the labels of every node cached for :meth:`emit`."""
        from pyspark import StorageLevel

        if self._final is not None:
            self._final.unpersist()
        rows = self._blocks.mapPartitions(_final_fn(c, self._threads, scales))
        self._final = self._spark.createDataFrame(rows, "kind string, payload binary")
        self._final = self._final.persist(StorageLevel.MEMORY_AND_DISK)
        sums = self._final.where("kind = 'sums'").select("payload").collect()
        return [tuple(decode_arrays(bytes(row[0]), 5)) for row in sums]

    def emit(self, new_id: np.ndarray) -> DataFrame:
        """The final pass's assignments ``(node_id, macro_id, distance)`` (label ``l`` becomes macro ``new_id[l]
        + 1``), read lazily from the cached labels (:attr:`emitted`, which :meth:`close` leaves in place)."""
        if self._final is None:
            raise RuntimeError("emit() needs the final pass (step_parts with iteration 0) first")
        self.emitted = self._final
        labels = self._final.where("kind = 'labels'").select("payload")
        return labels.mapInArrow(_emit_fn(np.asarray(new_id, dtype=np.int64)), ASSIGN_SCHEMA)

    def close(self) -> None:
        self._blocks.unpersist()
        if self._final is not None and self.emitted is None:
            self._final.unpersist()

    def __enter__(self) -> JobsEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
