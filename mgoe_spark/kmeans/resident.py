"""The resident engine: the vectors leave Spark once per fit and stay in the Python workers.

One barrier-mode ``mapInArrow`` job runs for the whole fit. Each of its P tasks packs its partition's Arrow
batches into numpy blocks once (:func:`~mgoe_spark.kmeans.blocks.pack_batches`), connects back to a socket
the driver opened for this fit, and then answers the driver's commands (statistics, init sample, one step
for given centroids) until it is told to stop. Barrier mode is what makes this safe: Spark starts all P tasks
at once or not at all, so the driver never waits for a task that has no slot.

Per iteration the driver sends the k x r centroids to every task and receives P x (k (r + 2) + 1) floats
plus P x k re-seed candidates (k x r): no Spark job, no re-read of the vectors, no JVM round trip.
(``BarrierTaskContext.allGather`` would do the exchange inside Spark, but the JVM side polls its RPC once a
second, so every call costs about 1 s: more than a whole Spark job on small data.)

At the end the driver sends ``emit``: each task outputs its final-pass assignments ``(node_id, macro_id,
distance)`` as the job's rows (macro ids already renumbered for a warm start), which are shuffled once (n x
16 bytes, so later stages that read them are not barrier stages) and cached: the caller gets the
assignments of the fitted nodes without a second pass over the vectors.

Wire format: 8-byte big-endian length + a pickle, over TCP. A task first sends the fit's random 16-byte
token; the driver drops connections without it before unpickling anything.

Memory: each task holds its partition (4 n r + 24 n bytes for n nodes) for the fit; the driver holds k x r
sized arrays and P sockets. Needs one free task slot per partition (the nodes are repartitioned to the slot
count when there are more partitions) and no dynamic allocation; otherwise, or if anything in the job
fails, :class:`EngineUnavailable` makes the fit fall back to the jobs engine.
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

from mgoe_spark.kmeans.blocks import (
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


def make_task(host: str, port: int, token: bytes, r: int | None, seed: int, block_rows: int, threads: int):
    """The barrier ``mapInArrow`` function: pack the partition, then serve the driver's commands."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        # a failed connect raises: the task fails loudly (the driver then falls back)
        sock = socket.create_connection((host, port), timeout=120)
        sock.settimeout(None)
        _tune(sock)
        try:
            sock.sendall(token)
            send(sock, ("hello", ctx.partitionId(), len(ctx.getTaskInfos())))
            labels: list[tuple[np.ndarray, ...]] = []  # the last full pass's assignments
            try:
                blocks, stats = pack_batches(batches, r, seed, block_rows)
                send(sock, ("ok", stats))
                while True:
                    cmd, *args = recv(sock)
                    if cmd == "step":
                        centroids, iteration, fraction = args
                        keep = [] if fraction >= 1.0 else None
                        send(sock, ("ok", partial_sums(blocks, centroids, iteration, fraction, threads, keep)))
                        labels = keep if keep is not None else labels
                    elif cmd == "sample":
                        send(sock, ("ok", sample_rows(blocks, seed, args[0])))
                    elif cmd == "emit":  # the fit is done: output the assignments, with macro ids renumbered
                        (new_id,) = args
                        sock.close()
                        out = [assignment_batch(ids, new_id[lab], d) for ids, lab, d in labels]
                        yield from out
                        return
                    else:  # "stop"
                        break
            except (EOFError, ConnectionError):
                pass  # the driver is gone: it has its answer or gave up; nothing to report to anyone
            except Exception:  # report to the driver (which falls back) instead of failing the barrier stage
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
        out_partitions: int,
        accept_timeout: float = 600.0,
    ) -> None:
        from pyspark import InheritableThread, StorageLevel

        spark = nodes.sparkSession
        self._server = socket.create_server(("", 0), family=socket.AF_INET, backlog=128)
        self._server.settimeout(0.2)
        host = spark.conf.get("spark.driver.host", None) or socket.gethostname()
        token = secrets.token_bytes(TOKEN_BYTES)
        fn = make_task(host, self._server.getsockname()[1], token, r, seed, block_rows, threads)
        # Every RDD narrowly derived from a barrier RDD is itself "barrier" to Spark's scheduler (even when it
        # reads a cache), so a later union / write of the assignments would be refused: a shuffle of the
        # n x 16-byte assignments cuts that lineage. The cache sits after the shuffle.
        out = nodes.mapInArrow(fn, ASSIGN_SCHEMA, barrier=True)
        job = out.repartition(out_partitions).persist(StorageLevel.MEMORY_AND_DISK)
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
            job.count()  # fills the cache with the assignments the tasks emit at the end (see emit)
            self._job = job
        except BaseException as exc:  # reported by _accept / the next exchange
            self._error = exc
            job.unpersist()

    def _job_gone(self) -> str:
        if self._error is not None:
            first = str(self._error).strip().splitlines()[0] if str(self._error).strip() else type(self._error)
            return f"the barrier job failed: {first}"
        return "the barrier job ended before every task connected"

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
        for conn in self._conns:  # partition order: the sums are added deterministically
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

    # ---- the engine interface (see mgoe_spark.kmeans.engines) ----

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

    def step_parts(self, centroids: np.ndarray, iteration: int, fraction: float) -> list[PartialSums]:
        self._broadcast(("step", np.ascontiguousarray(centroids, dtype=np.float32), iteration, fraction))
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
        self.assignments = self._job
        return self._job

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
