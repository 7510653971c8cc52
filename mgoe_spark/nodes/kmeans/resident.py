"""The resident engine: the vectors leave Spark once per fit and stay in the Python workers.

One ``mapInArrow`` job runs for the whole fit, with one task per task slot (the nodes are coalesced to the
slot count when they have more partitions: narrow, no shuffle). Each of its P tasks packs its rows' Arrow
batches into numpy blocks once (:func:`~mgoe_spark.nodes.kmeans.blocks.pack_batches`), connects back to a socket
the driver opened for this fit, and then answers the driver's commands (statistics, init sample, one step
for given centroids) until it is told to stop. All P tasks must run at once: the driver first checks that
the cluster has P free slots (and no dynamic allocation / speculation, see
:func:`~mgoe_spark.nodes.kmeans.engines.resident_blocker`) and waits at most ``accept_timeout`` seconds for all of
them to connect; otherwise the fit falls back to the jobs engine.

Why not a barrier job (Spark's gang scheduling)? Measured at 1M x 32 on local[2]: a barrier stage forbids
``coalesce``, so more partitions than slots cost a shuffle of all vectors before the job (~1.5 s), and every
RDD derived from a barrier RDD is itself barrier, so the emitted assignments needed a second shuffle to be
usable by later stages (~1.4 s). The slot check + connect timeout gives the same all-or-nothing start here.

Per iteration the driver sends the k x r centroids to every task and receives P x k (r + 2) int64 sums, one
inertia per block and P x k re-seed candidates (k x r): no Spark job, no re-read of the vectors, no JVM
round trip.

At the end the driver sends ``emit``: each task outputs its final-pass assignments ``(node_id, macro_id,
distance)`` (macro ids already renumbered for a warm start) as one Arrow IPC payload per block, which Spark
caches (MEMORY_AND_DISK, 16 bytes a node; a few large binary rows are far cheaper to cache than n rows):
the caller gets the assignments of the fitted nodes, unpacked lazily when read, without a second pass over
the vectors. (If that cache were lost, recomputing it would rerun a task whose driver is gone:
it fails with a clear error instead of a wrong answer.)

Wire format: 8-byte big-endian length + a pickle, over TCP. A task first sends the fit's random 16-byte
token; the driver drops connections without it before unpickling anything.

Memory: each task holds its rows (4 n r + 24 n bytes for n nodes) for the fit; the driver holds k x r
sized arrays and P sockets. If anything in the job fails, :class:`EngineUnavailable` makes the fit fall
back to the jobs engine.
"""

from __future__ import annotations

import hmac
import pickle
import secrets
import socket
import struct
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from mgoe_spark.nodes.kmeans.blocks import (
    ASSIGN_SCHEMA,
    PartialSums,
    assignment_batch,
    merge_stats,
    pack_batches,
    partial_sums,
    sample_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

TOKEN_BYTES = 16
_LEN = struct.Struct(">Q")


class EngineUnavailable(RuntimeError):
    """The resident engine cannot run (or stopped) here; the message says why. The fit falls back."""


# ---- framing ----------------------------------------------------------------------------------------------


def send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        m = sock.recv_into(view[got:], n - got)
        if m == 0:
            raise EOFError("connection closed")
        got += m
    return bytes(buf)


def _tune(sock: socket.socket) -> None:
    """Keep-alive (notice a dead peer) and no Nagle delay (each message is one small request / reply)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def recv(sock: socket.socket) -> Any:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    return pickle.loads(_recv_exact(sock, n))


# ---- worker side ------------------------------------------------------------------------------------------

PACKED_SCHEMA = "payload binary"
"""The resident job's rows: one Arrow IPC stream of :data:`ASSIGN_SCHEMA` per block. Spark caches a few large
binary values instead of building its columnar cache of n rows (measured: less JVM work at emit time); the
rows come out of :func:`_unpacked` when read."""


def _packed(batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pa.RecordBatch.from_arrays([pa.array([sink.getvalue().to_pybytes()], pa.binary())], names=["payload"])


def _unpacked(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    for batch in batches:
        for payload in batch.column(0).to_pylist():
            yield from pa.ipc.open_stream(payload)


def make_task(host: str, port: int, token: bytes, tasks: int, r: int | None, seed: int, block_rows: int, threads: int):
    """The ``mapInArrow`` function of the resident job: pack the task's rows, then serve the driver."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import faiss  # noqa: F401  (imported here, not in the first step: iteration timings stay clean)
        import scipy.sparse  # noqa: F401
        from pyspark import TaskContext

        ctx = TaskContext.get()
        try:  # a failed connect fails the task loudly (the driver falls back, or is gone)
            sock = socket.create_connection((host, port), timeout=120)
        except OSError as exc:
            raise RuntimeError(
                f"k-means resident task {ctx.partitionId()} cannot reach its driver ({exc}): it only runs "
                "during its fit (a lost cache of its assignments cannot be recomputed; refit)"
            ) from exc
        sock.settimeout(None)
        _tune(sock)
        try:
            sock.sendall(token)
            send(sock, ("hello", ctx.partitionId(), tasks))
            labels: list[tuple[np.ndarray, ...]] = []  # the last full pass's assignments
            try:
                blocks, stats = pack_batches(batches, r, seed, block_rows)
                send(sock, ("ok", stats))
                while True:
                    cmd, *args = recv(sock)
                    if cmd == "step":
                        centroids, iteration, fraction, scales = args
                        keep = [] if fraction >= 1.0 else None
                        sums = partial_sums(blocks, centroids, iteration, fraction, threads, scales, keep)
                        send(sock, ("ok", sums))
                        labels = keep if keep is not None else labels
                    elif cmd == "sample":
                        send(sock, ("ok", sample_rows(blocks, seed, args[0])))
                    elif cmd == "emit":  # the fit is done: output the assignments, with macro ids renumbered
                        (new_id,) = args
                        sock.close()
                        out = [_packed(assignment_batch(ids, new_id[lab], d)) for ids, lab, d in labels]
                        yield from out
                        return
                    else:  # "stop"
                        break
            except (EOFError, ConnectionError):
                pass  # the driver is gone: it has its answer or gave up; nothing to report to anyone
            except Exception:  # report to the driver (which falls back) instead of failing the job
                send(sock, ("error", traceback.format_exc(limit=4)))
        finally:
            sock.close()

    return run


# ---- driver side ------------------------------------------------------------------------------------------


class ResidentEngine:
    """Driver end of the resident engine; use as a context manager. See the module docstring."""

    name = "resident"

    def __init__(
        self,
        nodes: DataFrame,
        r: int | None,
        seed: int,
        block_rows: int,
        threads: int,
        tasks: int,
        accept_timeout: float = 180.0,
    ) -> None:
        """``nodes``: the input, with ``tasks`` partitions (at most the free task slots)."""
        from pyspark import InheritableThread, StorageLevel

        spark = nodes.sparkSession
        self._server = socket.create_server(("", 0), family=socket.AF_INET, backlog=128)
        self._server.settimeout(0.2)
        host = spark.conf.get("spark.driver.host", None) or socket.gethostname()
        token = secrets.token_bytes(TOKEN_BYTES)
        fn = make_task(host, self._server.getsockname()[1], token, tasks, r, seed, block_rows, threads)
        job = nodes.mapInArrow(fn, PACKED_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
        self.assignments: DataFrame | None = None
        self._pending = job
        self._error: BaseException | None = None
        self._thread = InheritableThread(target=self._run_job, args=(job,), daemon=True)
        self._conns: list[socket.socket] = []
        self._thread.start()
        try:
            self._accept(token, accept_timeout)
        except BaseException:
            self.close()
            raise

    def _run_job(self, job: DataFrame) -> None:
        try:
            # fills the cache with the assignments the tasks emit at the end (see emit); a noop write is one
            # stage (count() would add an aggregation stage)
            job.write.format("noop").mode("overwrite").save()
            self._job = job
        except BaseException as exc:  # reported by _accept / the next exchange
            self._error = exc
            job.unpersist()

    def _job_gone(self) -> str:
        if self._error is not None:
            first = str(self._error).strip().splitlines()[0] if str(self._error).strip() else type(self._error)
            return f"the resident job failed: {first}"
        return "the resident job ended before every task connected"

    def _accept(self, token: bytes, timeout: float) -> None:
        import time

        by_partition: dict[int, socket.socket] = {}
        total = None
        deadline = time.monotonic() + timeout
        self.stats_parts: dict[int, dict[str, float]] = {}
        while total is None or len(by_partition) < total:
            if not self._thread.is_alive():
                raise EngineUnavailable(self._job_gone())
            if time.monotonic() > deadline:
                got = f"{len(by_partition)} of {total or '?'}"
                raise EngineUnavailable(f"only {got} tasks connected in {timeout:.0f} s")
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            conn.settimeout(30)
            try:
                if not hmac.compare_digest(_recv_exact(conn, TOKEN_BYTES), token):
                    conn.close()
                    continue
                _, pid, total = recv(conn)
            except (OSError, EOFError):
                conn.close()
                continue
            conn.settimeout(None)
            _tune(conn)
            by_partition[int(pid)] = conn
        self._conns = [by_partition[p] for p in sorted(by_partition)]

    def _gather(self) -> list[Any]:
        out = []
        for conn in self._conns:  # task order (the sums are exact: any order gives the same totals)
            try:
                tag, payload = recv(conn)
            except (OSError, EOFError) as exc:
                raise EngineUnavailable(f"a task went away ({exc}); {self._job_gone()}") from exc
            if tag != "ok":
                raise EngineUnavailable(f"a task failed: {payload.strip().splitlines()[-1]}")
            out.append(payload)
        return out

    def _broadcast(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _LEN.pack(len(data)) + data
        for conn in self._conns:
            try:
                conn.sendall(frame)
            except OSError as exc:
                raise EngineUnavailable(f"a task went away ({exc})") from exc

    # ---- the engine interface (see mgoe_spark.nodes.kmeans.engines) ----

    @property
    def partitions(self) -> int:
        return len(self._conns)

    def stats(self) -> dict[str, float]:
        parts = self._gather()  # each task sends its statistics once it has packed its partition
        out = parts[0]
        for s in parts[1:]:
            out = merge_stats(out, s)
        return out

    def sample(self, prob: float) -> list[tuple[np.ndarray, ...]]:
        self._broadcast(("sample", prob))
        return self._gather()

    def step_parts(
        self, centroids: np.ndarray, iteration: int, fraction: float, scales: tuple[int, int]
    ) -> list[PartialSums]:
        self._broadcast(("step", np.ascontiguousarray(centroids, dtype=np.float32), iteration, fraction, scales))
        return self._gather()

    def emit(self, new_id: np.ndarray) -> DataFrame:
        """End the fit: every task outputs its final-pass assignments (label ``l`` becomes macro ``new_id[l] +
        1``) into the job's cached result, which is returned: ``(node_id, macro_id, distance)``, n rows."""
        self._broadcast(("emit", np.asarray(new_id, dtype=np.int64)))
        for conn in self._conns:
            conn.close()
        self._conns = []
        self._thread.join()
        if self._error is not None:
            raise EngineUnavailable(self._job_gone())
        self.assignments = self._job.mapInArrow(_unpacked, ASSIGN_SCHEMA)
        return self.assignments

    def close(self) -> None:
        for conn in self._conns:
            try:
                send(conn, ("stop",))
            except OSError:
                pass
            conn.close()
        self._conns = []
        self._server.close()
        self._thread.join(timeout=60)
        if self.assignments is None:  # stopped before emit: nothing worth keeping in the cache
            self._pending.unpersist()

    def __enter__(self) -> ResidentEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
