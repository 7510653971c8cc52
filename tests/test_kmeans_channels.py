"""Which channels a k-means fit opens, and what the opt-in resident engine's socket accepts (issue 26).

- the default engine opens no socket of its own (Spark's channels only);
- the resident engine binds the driver's address, never all interfaces;
- its frames carry numbers only: a pickle, with or without the key, is rejected unread and executes nothing;
- a peer that knows the fit's key and sends a pickle framed as the engine used to frame messages executes
  nothing, and the fit still runs on the resident engine;
- a stalled task makes the fit fall back to the jobs engine within ``exchange_timeout`` and its Spark job is
  cancelled.
"""

from __future__ import annotations

import pickle
import secrets
import socket
import struct
import threading
import time

import numpy as np
import pytest

from mgoe_spark.nodes.kmeans import WeightedKMeans
from tests.test_kmeans import nodes_df, planted

PARAMS = dict(mode="full", max_iter=4, tol=0.0, seed=3)


class _Evil:
    """Unpickling this creates ``path`` (the proof that a pickle ran code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def listeners(monkeypatch):
    """Every server socket the driver opens during the test: ``[(socket, address)]``; ``on_open`` (a list of
    callables) runs on each one right after it opens."""
    opened, hooks = [], []
    real = socket.create_server

    def spy(address, *args, **kwargs):
        server = real(address, *args, **kwargs)
        opened.append((server, server.getsockname()))
        for hook in hooks:
            hook(server)
        return server

    monkeypatch.setattr(socket, "create_server", spy)
    return opened, hooks


def test_the_default_engine_opens_no_socket_of_its_own(spark, listeners, monkeypatch):
    """Spark's channels only: no listening socket in the driver, the fit runs the jobs engine."""

    def refuse(self, *args):
        raise AssertionError("the default k-means engine must not listen on a socket of its own")

    monkeypatch.setattr(socket.socket, "listen", refuse)
    x, w, _, _ = planted(21, k=3, per=30)
    km = WeightedKMeans(3, **PARAMS).fit(nodes_df(spark, x, w, partitions=2))
    assert km.engine == "auto" and (km.engine_used, km.fallback_reason) == ("jobs", None)
    assert listeners[0] == []


def test_the_resident_engine_binds_the_drivers_address(spark, listeners):
    x, w, _, _ = planted(22, k=3, per=30)
    km = WeightedKMeans(3, engine="resident", **PARAMS).fit(nodes_df(spark, x, w, partitions=2))
    assert km.engine_used == "resident"
    (_, (host, _port)) = listeners[0][0]
    assert host not in ("0.0.0.0", "")  # the driver's own address, not every interface
    assert host == socket.getaddrinfo(spark.conf.get("spark.driver.host"), None, socket.AF_INET)[0][4][0]


class _Wire:
    """A socket stand-in for one direction of a connection: ``sendall`` appends, ``recv_into`` reads back."""

    def __init__(self) -> None:
        self.data = bytearray()

    def settimeout(self, timeout: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def recv_into(self, view, n: int) -> int:
        m = min(n, len(self.data))
        view[:m] = self.data[:m]
        del self.data[:m]
        return m


def test_frames_carry_numbers_only_and_a_pickle_is_rejected_unread(tmp_path):
    from mgoe_spark.nodes.kmeans.frames import HEADER, MAGIC, VERSION, Channel, FrameError

    marker = tmp_path / "pwned"
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(16)
    wire = _Wire()
    task, driver = Channel(wire, key, nonce, "task", 5.0), Channel(wire, key, nonce, "driver", 5.0)
    arrays = [np.arange(6, dtype=np.int64).reshape(2, 3), np.array([0.5, -2.0]), np.ones((2, 2), np.float32)]
    task.send(3, arrays)
    kind, got = driver.recv((3,))
    assert kind == 3 and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(got, arrays, strict=True))
    with pytest.raises(TypeError):
        task.send(3, [np.array([object()])])  # objects cannot even be sent

    evil = pickle.dumps(_Evil(str(marker)))
    # 1. a pickle with the key and a valid tag (a compromised peer): its bytes are no numeric array layout
    header = HEADER.pack(MAGIC, VERSION, 3, 1, 1, len(evil))
    wire.sendall(header + evil + task._tag(b"T", header, evil))
    with pytest.raises(FrameError, match="only numeric arrays"):
        driver.recv((3,))
    # 2. the same pickle from a peer without the key: rejected on its tag, before its body is looked at
    stranger = Channel(wire, secrets.token_bytes(32), nonce, "task", 5.0)
    header = HEADER.pack(MAGIC, VERSION, 3, 0, 1, len(evil))
    wire.sendall(header + evil + stranger._tag(b"T", header, evil))
    with pytest.raises(FrameError, match="authentication failed"):
        Channel(wire, key, nonce, "driver", 5.0).recv((3,))
    # 3. a bare pickle behind a length (the old framing), and a replayed genuine frame
    wire.data[:] = struct.pack(">Q", len(evil)) + evil + bytes(64)
    with pytest.raises(FrameError, match="not a k-means frame"):
        Channel(wire, key, nonce, "driver", 5.0).recv((3,))
    wire.data.clear()
    tx, rx = Channel(wire, key, nonce, "task", 5.0), Channel(wire, key, nonce, "driver", 5.0)
    tx.send(3, arrays)
    wire.data += bytes(wire.data)  # the genuine frame, then the same bytes again
    rx.recv((3,))
    with pytest.raises(FrameError, match="out of sequence"):
        rx.recv((3,))
    assert not marker.exists()


def test_a_peer_with_the_key_sending_a_pickle_executes_nothing(spark, listeners, monkeypatch, tmp_path):
    """A peer that learnt the fit's secret (the old engine sent it in clear) connects during the fit and sends
    a pickle framed as the engine used to frame its messages (token, 8-byte length, pickle): nothing runs, the
    connection is dropped, and the fit goes on on the resident engine."""
    marker = tmp_path / "pwned"
    fixed = b"\x07" * 64
    monkeypatch.setattr(secrets, "token_bytes", lambda n=32: fixed[:n])  # the peer knows the secret
    payload = pickle.dumps(_Evil(str(marker)))
    sent = threading.Event()

    def attack(server: socket.socket) -> None:
        def run() -> None:
            host, port = server.getsockname()
            with socket.create_connection((host, port), timeout=10) as peer:
                peer.sendall(fixed[:16] + struct.pack(">Q", len(payload)) + payload)
                sent.set()
                time.sleep(2)

        threading.Thread(target=run, daemon=True).start()

    listeners[1].append(attack)
    x, w, _, _ = planted(23, k=3, per=30)
    km = WeightedKMeans(3, engine="resident", **PARAMS).fit(nodes_df(spark, x, w, partitions=2))
    assert sent.is_set()
    assert not marker.exists(), "a pickle sent to the driver ran code"
    assert km.engine_used == "resident" and km.fallback_reason is None


def test_a_stalled_task_makes_the_fit_fall_back_within_the_timeout(spark, monkeypatch):
    """Task 1 stops answering after its statistics (a hung worker, or a lost host that never closes its
    connection): the driver gives up after ``exchange_timeout``, cancels the resident job (whose task would
    otherwise sleep 10 minutes) and refits on the jobs engine, same result."""
    from mgoe_spark.nodes.kmeans import resident

    real_serve = resident.serve

    def stalled_serve(chan, blocks, seed, threads):
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 1:
            time.sleep(600)
        return real_serve(chan, blocks, seed, threads)

    monkeypatch.setattr(resident, "serve", stalled_serve)  # shipped to the workers by value
    x, w, _, _ = planted(24, k=3, per=30)
    df = nodes_df(spark, x, w, partitions=2)
    reference = WeightedKMeans(3, engine="jobs", **PARAMS).fit(df)
    t0 = time.perf_counter()
    km = WeightedKMeans(3, engine="resident", exchange_timeout=3, **PARAMS).fit(df)
    seconds = time.perf_counter() - t0
    assert km.engine_used == "jobs" and "task 1 did not answer in 3 s" in km.fallback_reason
    assert seconds < 60, f"the fall-back took {seconds:.0f} s"
    np.testing.assert_array_equal(km.centroids, reference.centroids)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []  # the resident job was cancelled
