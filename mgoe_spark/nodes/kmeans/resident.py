"""The opt-in resident engine (``kmeans.engine: resident``): the vectors leave Spark once and stay in the
Python workers; per iteration only centroids and sums move, over a socket between the driver and each task.

It is opt-in because it opens a channel beside Spark's: the default engine (``jobs``) uses Spark's own
channels only and so inherits ``spark.authenticate`` and Spark's network encryption. This channel is
hardened instead (issue 26):

- the driver listens on its own address (``spark.driver.host``, resolved), never on all interfaces;
- every message is a frame of numbers (:mod:`~mgoe_spark.nodes.kmeans.frames`): typed arrays, never a
  pickle, so a peer can send numbers and nothing else;
- every frame is authenticated (HMAC-SHA256 with a random per-fit key that reaches the tasks inside the task
  closure, over Spark's channel, and never crosses the socket; a per-connection nonce and sequence numbers
  stop replay and reordering). A connection whose first frame is not authentic is dropped;
- every connect, send and receive, on both sides, times out after ``exchange_timeout`` seconds
  (``kmeans.exchange_timeout``), and so does the wait for the job's end;
- when the engine gives up (a task failed, timed out, went away or sent a bad frame), it cancels its Spark job
  (a job group of its own) and the fit falls back to the jobs engine, which records why.

The data is not encrypted on this socket: centroids, sums and the init sample (bounded, ``k x r`` sized
things plus ``init_samples_per_center * k`` rows) cross it in clear. Use the default engine where that matters.

How a fit runs: one ``mapInArrow`` job for the whole fit, with one task per task slot (the nodes are coalesced
to the slot count when they have more partitions: narrow, no shuffle). Each of its P tasks connects back to the
driver, packs its rows' Arrow batches into numpy blocks once
(:func:`~mgoe_spark.nodes.kmeans.blocks.pack_batches`), and answers the driver's commands (statistics, init
sample, one step for given centroids) until told to stop. All P tasks must run at once: the driver first
checks that the cluster has P slots (and no dynamic allocation / speculation, see
:func:`~mgoe_spark.nodes.kmeans.engines.resident_blocker`) and waits at most ``exchange_timeout`` seconds
for all of them to connect. Per iteration the driver sends the k x r centroids to every task and receives
P x k (r + 2) int64 sums, one inertia per block and P x k re-seed candidates (k x r). At the end the driver
sends ``emit``: each task outputs its final-pass assignments ``(node_id, macro_id, distance)`` as one Arrow
IPC payload per block, which Spark caches (MEMORY_AND_DISK, 16 bytes a node), so the caller gets the
assignments without a second pass over the vectors. (If that cache were lost, recomputing it would rerun a
task whose driver is gone: it fails with a clear error instead of a wrong answer.)

Memory: each task holds its rows (4 n r + 24 n bytes for n nodes) for the fit; the driver holds k x r
sized arrays and P sockets.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from mgoe_spark.nodes.kmeans.blocks import (
    ASSIGN_SCHEMA,
    STAT_KEYS,
    PartialSums,
    assignment_batch,
    ipc_payload,
    merge_stats,
    pack_batches,
    partial_sums,
    sample_rows,
    unpacked,
)
from mgoe_spark.nodes.kmeans.frames import KEY_BYTES, NONCE_BYTES, Channel, FrameError, recv_exact

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("mgoe.kmeans")

# frame kinds: task -> driver, then driver -> task
HELLO, STATS, SUMS, SAMPLE, ERROR = 1, 2, 3, 4, 5
STEP, SAMPLE_CMD, EMIT, STOP = 11, 12, 13, 14
HANDSHAKE_BYTES = 64
"""Largest first frame (the hello: two int64) a driver reads from a new connection."""
_FLOAT_STATS = ("wsum", "max_w", "max_x")


class EngineUnavailable(RuntimeError):
    """The resident engine cannot run (or stopped) here; the message says why. The fit falls back."""


# ---- messages: numbers only --------------------------------------------------------------------------------


def stats_arrays(stats: dict[str, float]) -> list[np.ndarray]:
    """Input statistics as (int64 counts and ids, float64 sums and maxima), in :data:`STAT_KEYS` order."""
    ints = [int(stats[key]) for key in STAT_KEYS if key not in _FLOAT_STATS]
    return [np.array(ints, np.int64), np.array([float(stats[key]) for key in _FLOAT_STATS], np.float64)]


def stats_from(arrays: list[np.ndarray]) -> dict[str, float]:
    ints, floats = arrays
    names = [key for key in STAT_KEYS if key not in _FLOAT_STATS]
    if ints.shape != (len(names),) or floats.shape != (len(_FLOAT_STATS),):
        raise FrameError("statistics frame has the wrong layout")
    return {**dict(zip(names, ints.tolist(), strict=True)), **dict(zip(_FLOAT_STATS, floats.tolist(), strict=True))}


def _error_text(arrays: list[np.ndarray]) -> str:
    text = bytes(arrays[0]).decode("utf-8", "replace").strip() if arrays else ""
    return text.splitlines()[-1] if text else "unknown error"


def _tune(sock: socket.socket) -> None:
    """Keep-alive (notice a dead peer) and no Nagle delay (each message is one small request / reply)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def driver_address(spark: SparkSession) -> str:
    """The IPv4 address executors reach the driver at (``spark.driver.host``, resolved)."""
    host = spark.conf.get("spark.driver.host", None) or socket.gethostname()
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise EngineUnavailable(f"cannot resolve the driver address {host!r} ({exc})") from exc


# ---- worker side ------------------------------------------------------------------------------------------

PACKED_SCHEMA = "payload binary"
"""The resident job's rows: one Arrow IPC stream of :data:`ASSIGN_SCHEMA` per block. Spark caches a few large
binary values instead of building its columnar cache of n rows (measured: less JVM work at emit time); the
rows come out of :func:`~mgoe_spark.nodes.kmeans.blocks.unpacked` when read."""


def _packed(batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array([ipc_payload(batch)], pa.binary())], names=["payload"])


def serve(chan: Channel, blocks: list, seed: int, threads: int) -> list:
    """Answer the driver's commands on ``chan`` until ``stop`` (returns []) or ``emit`` (returns the task's
    packed assignment batches, macro ids renumbered). Errors of the task's own work go to the driver as one
    line; channel errors (EOF, timeout, a bad frame) propagate."""
    labels: list[tuple[np.ndarray, ...]] = []  # the last full pass's assignments
    while True:
        kind, args = chan.recv((STEP, SAMPLE_CMD, EMIT, STOP))
        try:
            if kind == STEP:
                centroids, (iteration, fraction), scales = args
                keep = [] if fraction >= 1.0 else None
                sums = partial_sums(
                    blocks, centroids, int(iteration), float(fraction), threads, tuple(scales.tolist()), keep
                )
                chan.send(SUMS, list(sums))
                labels = keep if keep is not None else labels
            elif kind == SAMPLE_CMD:
                chan.send(SAMPLE, list(sample_rows(blocks, seed, float(args[0][0]))))
            elif kind == EMIT:  # the fit is done: output the assignments, with macro ids renumbered
                (new_id,) = args
                return [_packed(assignment_batch(ids, new_id[lab], d)) for ids, lab, d in labels]
            else:
                return []
        except (OSError, EOFError, FrameError):
            raise
        except Exception:  # report to the driver (which falls back) instead of failing the job
            chan.send(ERROR, [np.frombuffer(traceback.format_exc(limit=4).encode(), np.uint8)])
            return []


def make_task(
    host: str,
    port: int,
    key: bytes,
    tasks: int,
    r: int | None,
    seed: int,
    block_rows: int,
    threads: int,
    timeout: float,
):
    """The ``mapInArrow`` function of the resident job: connect, pack the task's rows, then :func:`serve`."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import faiss  # noqa: F401  (imported here, not in the first step: iteration timings stay clean)
        import scipy.sparse  # noqa: F401
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        try:  # a failed connect fails the task loudly (the driver falls back, or is gone)
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise RuntimeError(
                f"k-means resident task {pid} cannot reach its driver ({exc}): it only runs during its fit "
                "(a lost cache of its assignments cannot be recomputed; refit)"
            ) from exc
        out: list = []
        try:
            _tune(sock)
            sock.settimeout(timeout)
            chan = Channel(sock, key, recv_exact(sock, NONCE_BYTES), "task", timeout)
            chan.send(HELLO, [np.array([pid, tasks], np.int64)])
            blocks, stats = pack_batches(batches, r, seed, block_rows)
            chan.send(STATS, stats_arrays(stats))
            out = serve(chan, blocks, seed, threads)
        except (EOFError, OSError, FrameError):
            pass  # the driver is gone, timed out or is not ours: it has its answer or gave up
        finally:
            sock.close()
        yield from out

    return run


# ---- driver side ------------------------------------------------------------------------------------------


class ResidentEngine:
    """Driver end of the resident engine; use as a context manager. See the module docstring.

    ``nodes``: the input, with ``tasks`` partitions (at most the task slots); ``timeout``: seconds for every
    connect, receive and the job's end (``kmeans.exchange_timeout``).
    """

    name = "resident"

    def __init__(
        self, nodes: DataFrame, r: int | None, seed: int, block_rows: int, threads: int, tasks: int, timeout: float
    ) -> None:
        from pyspark import InheritableThread, StorageLevel

        spark = nodes.sparkSession
        self._sc = spark.sparkContext
        self._timeout = timeout
        self._group = f"mgoe-kmeans-resident-{secrets.token_hex(8)}"
        self._key = secrets.token_bytes(KEY_BYTES)
        self._chans: list[Channel] = []
        self.assignments: DataFrame | None = None
        self.emitted: DataFrame | None = None
        """The cache :meth:`emit`'s assignments are read from (the caller unpersists it)."""
        self._error: BaseException | None = None
        host = driver_address(spark)
        try:
            self._server = socket.create_server((host, 0), family=socket.AF_INET, backlog=128)
        except OSError as exc:
            raise EngineUnavailable(f"cannot listen on the driver address {host} ({exc})") from exc
        self._server.settimeout(0.2)
        port = self._server.getsockname()[1]
        fn = make_task(host, port, self._key, tasks, r, seed, block_rows, threads, timeout)
        self._job = nodes.mapInArrow(fn, PACKED_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
        self._thread = InheritableThread(target=self._run_job, daemon=True)
        self._thread.start()
        try:
            self._accept(tasks)
        except BaseException:
            self.close(cancel=True)
            raise

    def _run_job(self) -> None:
        try:
            self._sc.setJobGroup(self._group, "k-means resident fit", interruptOnCancel=True)
            # fills the cache with the assignments the tasks emit at the end (see emit); a noop write is one
            # stage (count() would add an aggregation stage)
            self._job.write.format("noop").mode("overwrite").save()
        except BaseException as exc:  # reported by _accept / the next exchange
            self._error = exc

    def _job_gone(self) -> str:
        if self._error is not None:
            text = str(self._error).strip()
            return f"the resident job failed: {text.splitlines()[0] if text else type(self._error).__name__}"
        return "the resident job ended before every task connected"

    def _handshake(self, conn: socket.socket) -> tuple[int, Channel]:
        """Nonce out, authentic hello in (a short timeout: a silent peer cannot hold the accept loop)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        conn.settimeout(min(self._timeout, 10.0))
        conn.sendall(nonce)
        chan = Channel(conn, self._key, nonce, "driver", min(self._timeout, 10.0))
        _, (hello,) = chan.recv((HELLO,), max_body=HANDSHAKE_BYTES)
        conn.settimeout(self._timeout)
        _tune(conn)
        return int(hello[0]), chan

    def _accept(self, tasks: int) -> None:
        by_partition: dict[int, Channel] = {}
        deadline = time.monotonic() + self._timeout
        while len(by_partition) < tasks:
            if not self._thread.is_alive():
                raise EngineUnavailable(self._job_gone())
            if time.monotonic() > deadline:
                raise EngineUnavailable(
                    f"only {len(by_partition)} of {tasks} tasks connected in {self._timeout:g} s "
                    "(kmeans.exchange_timeout; busy slots or a firewall between executors and driver?)"
                )
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            try:
                pid, chan = self._handshake(conn)
            except (OSError, EOFError, ValueError) as exc:  # not one of this fit's tasks: drop it unread
                log.warning("k-means: dropped a connection from %s that is not one of this fit's tasks (%s)", peer, exc)
                conn.close()
                continue
            if pid in by_partition or not 0 <= pid < tasks:
                conn.close()
                continue
            by_partition[pid] = chan
        self._chans = [by_partition[p] for p in sorted(by_partition)]

    def _gather(self, kind: int) -> list[list[np.ndarray]]:
        out = []
        for pid, chan in enumerate(self._chans):  # task order (the sums are exact: any order gives the same totals)
            try:
                got, arrays = chan.recv((kind, ERROR))
            except TimeoutError as exc:
                why = f"task {pid} did not answer in {self._timeout:g} s (kmeans.exchange_timeout)"
                raise EngineUnavailable(why) from exc
            except (OSError, EOFError) as exc:
                raise EngineUnavailable(f"task {pid} went away ({exc}); {self._job_gone()}") from exc
            except FrameError as exc:
                raise EngineUnavailable(f"task {pid} sent a bad frame: {exc}") from exc
            if got == ERROR:
                raise EngineUnavailable(f"a task failed: {_error_text(arrays)}")
            out.append(arrays)
        return out

    def _broadcast(self, kind: int, arrays: list[np.ndarray]) -> None:
        for pid, chan in enumerate(self._chans):
            try:
                chan.send(kind, arrays)
            except OSError as exc:
                raise EngineUnavailable(f"task {pid} went away ({exc})") from exc

    # ---- the engine interface (see mgoe_spark.nodes.kmeans.engines) ----

    @property
    def partitions(self) -> int:
        return len(self._chans)

    def stats(self) -> dict[str, float]:
        parts = [stats_from(a) for a in self._gather(STATS)]  # each task sends them once it has packed its rows
        out = parts[0]
        for s in parts[1:]:
            out = merge_stats(out, s)
        return out

    def sample(self, prob: float) -> list[tuple[np.ndarray, ...]]:
        self._broadcast(SAMPLE_CMD, [np.array([prob], np.float64)])
        return [tuple(a) for a in self._gather(SAMPLE)]

    def step_parts(
        self, centroids: np.ndarray, iteration: int, fraction: float, scales: tuple[int, int]
    ) -> list[PartialSums]:
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        self._broadcast(STEP, [c, np.array([iteration, fraction], np.float64), np.array(scales, np.int64)])
        return [tuple(a) for a in self._gather(SUMS)]

    def emit(self, new_id: np.ndarray) -> DataFrame:
        """End the fit: every task outputs its final-pass assignments (label ``l`` becomes macro ``new_id[l] +
        1``) into the job's cached result, which is returned: ``(node_id, macro_id, distance)``, n rows."""
        self._broadcast(EMIT, [np.asarray(new_id, dtype=np.int64)])
        self._close_channels()
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            raise EngineUnavailable(f"the resident job did not end within {self._timeout:g} s after emit")
        if self._error is not None:
            raise EngineUnavailable(self._job_gone())
        self.emitted = self._job
        self.assignments = self._job.mapInArrow(unpacked, ASSIGN_SCHEMA)
        return self.assignments

    def _close_channels(self) -> None:
        for chan in self._chans:
            chan.sock.close()
        self._chans = []

    def close(self, cancel: bool = False) -> None:
        """Stop the tasks (``stop``, or cancel the job group when the exchange broke or ``cancel``), free the
        socket, wait (bounded) for the job thread, drop the cache unless ``emit`` produced assignments."""
        if not cancel:
            for chan in self._chans:
                try:
                    chan.send(STOP)
                except OSError:
                    cancel = True
        self._close_channels()
        self._server.close()
        if not cancel:
            self._thread.join(min(self._timeout, 30.0))  # the tasks end on stop
        if self._thread.is_alive():  # a broken exchange, or tasks that did not stop: cancel the job
            self._sc.cancelJobGroup(self._group)
            self._thread.join(min(self._timeout, 30.0))
        if self.assignments is None:  # stopped before emit: nothing worth keeping in the cache
            self._job.unpersist()

    def __enter__(self) -> ResidentEngine:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(cancel=exc_type is not None)
