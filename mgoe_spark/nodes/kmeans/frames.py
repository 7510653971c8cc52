"""Authenticated binary frames of numbers: the only thing the opt-in resident engine's socket carries.

A frame is ``header | body | tag``:

- header (20 bytes, big-endian, :data:`HEADER`): magic ``b"MGKM"``, format version, message kind, sequence
  number, array count, body length;
- body: per array its dtype code (:data:`DTYPES`: int64, float64, float32, uint8, all little-endian), its
  number of dimensions (0 to 2), its dimensions (u64 each), then its values;
- tag: HMAC-SHA256 over ``nonce | direction | header | body`` with the fit's 32-byte key. The key reaches the
  tasks inside the task closure (Spark's own channel); it never travels on the socket. The nonce is random
  per connection (sent by the driver first), the direction is one byte per side, and each side numbers its
  frames 0, 1, 2, ...: a frame cannot be replayed on another connection, reflected back, reordered or
  dropped unnoticed.

:meth:`Channel.recv` reads the header (length bounded before anything is allocated), the body and the tag,
checks the tag (``hmac.compare_digest``) before it looks at the body, then the sequence number, the kind and
the layout, and reads the values with ``np.frombuffer`` of a fixed numeric dtype. Nothing is ever
unpickled: a frame can carry numbers and nothing else, and a peer without the key is dropped after one
header. Every receive has a timeout (the socket's).

Cost: O(bytes) per frame (one copy to send, one HMAC pass and one copy to receive).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import socket
import struct

import numpy as np

MAGIC = b"MGKM"
VERSION = 1
HEADER = struct.Struct(">4sBBIHQ")
"""magic, version, kind, sequence number, array count, body length."""
TAG_BYTES = 32
KEY_BYTES = 32
NONCE_BYTES = 16
DTYPES = {1: np.dtype("<i8"), 2: np.dtype("<f8"), 3: np.dtype("<f4"), 4: np.dtype("u1")}
MAX_BODY = 1 << 34
"""Largest body a channel accepts once authenticated (16 GiB); the first frame of a connection is bounded by
the caller (a few bytes)."""
TO_TASK, TO_DRIVER = b"D", b"T"


class FrameError(ValueError):
    """A frame is not a well-formed, authentic frame of the expected kind (the message says what)."""


def encode_arrays(arrays: list[np.ndarray]) -> bytes:
    """The body of a frame: ``arrays`` (int64 / float64 / float32 / uint8, at most 2-D) as typed raw bytes."""
    parts = []
    for a in arrays:
        a = np.asarray(a)
        code = next((c for c, dt in DTYPES.items() if (a.dtype.kind, a.dtype.itemsize) == (dt.kind, dt.itemsize)), None)
        if code is None or a.ndim > 2:
            raise TypeError(f"a frame carries int64 / float64 / float32 / uint8 arrays of <= 2 dims, got {a.dtype}")
        parts.append(struct.pack(f">BB{a.ndim}Q", code, a.ndim, *a.shape))
        parts.append(np.ascontiguousarray(a, dtype=DTYPES[code]).tobytes())
    return b"".join(parts)


def decode_arrays(body: bytes, count: int) -> list[np.ndarray]:
    """Inverse of :func:`encode_arrays`; raises :class:`FrameError` on any inconsistency. Numbers only."""
    out, pos, view = [], 0, memoryview(body)
    for _ in range(count):
        if pos + 2 > len(body):
            raise FrameError("frame body ends inside an array header")
        code, ndim = body[pos], body[pos + 1]
        if code not in DTYPES or ndim > 2:
            raise FrameError(f"frame array has dtype code {code} / {ndim} dims: only numeric arrays are accepted")
        pos += 2
        if pos + 8 * ndim > len(body):
            raise FrameError("frame body ends inside an array shape")
        shape = struct.unpack_from(f">{ndim}Q", body, pos)
        pos += 8 * ndim
        size = math.prod(shape) * DTYPES[code].itemsize
        if size > len(body) - pos:
            raise FrameError("frame array is longer than the frame body")
        out.append(np.frombuffer(view[pos : pos + size], dtype=DTYPES[code]).reshape(shape))
        pos += size
    if pos != len(body):
        raise FrameError(f"frame body has {len(body) - pos} trailing bytes")
    return out


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes (the socket's timeout applies to every read); EOFError if the peer closes."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        m = sock.recv_into(view[got:], n - got)
        if m == 0:
            raise EOFError("connection closed")
        got += m
    return bytes(buf)


class Channel:
    """One authenticated connection: :meth:`send` / :meth:`recv` numbered frames in both directions.

    ``side`` is ``"driver"`` or ``"task"``; ``timeout`` (seconds) bounds every send and receive.
    """

    def __init__(self, sock: socket.socket, key: bytes, nonce: bytes, side: str, timeout: float) -> None:
        if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
            raise ValueError("a channel needs a 32-byte key and a 16-byte nonce")
        self.sock = sock
        self._key, self._nonce = key, nonce
        self._out_dir, self._in_dir = (TO_TASK, TO_DRIVER) if side == "driver" else (TO_DRIVER, TO_TASK)
        self._sent = self._received = 0
        sock.settimeout(timeout)

    def _tag(self, direction: bytes, header: bytes, body: bytes) -> bytes:
        mac = hmac.new(self._key, self._nonce + direction + header, hashlib.sha256)
        mac.update(body)
        return mac.digest()

    def send(self, kind: int, arrays: list[np.ndarray] = ()) -> None:
        body = encode_arrays(list(arrays))
        header = HEADER.pack(MAGIC, VERSION, kind, self._sent, len(arrays), len(body))
        self.sock.sendall(header + body + self._tag(self._out_dir, header, body))
        self._sent += 1

    def recv(self, kinds: tuple[int, ...], max_body: int = MAX_BODY) -> tuple[int, list[np.ndarray]]:
        """The next frame, ``(kind, arrays)``; :class:`FrameError` unless it is authentic, in sequence and
        one of ``kinds``. ``max_body`` bounds what is read before the tag is checked."""
        header = recv_exact(self.sock, HEADER.size)
        magic, version, kind, seq, count, length = HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise FrameError("not a k-means frame (bad magic or version)")
        if length > max_body:
            raise FrameError(f"frame body of {length} bytes exceeds the limit of {max_body}")
        body = recv_exact(self.sock, length)
        tag = recv_exact(self.sock, TAG_BYTES)
        if not hmac.compare_digest(tag, self._tag(self._in_dir, header, body)):
            raise FrameError("frame authentication failed (wrong key, nonce or direction, or altered bytes)")
        if seq != self._received:
            raise FrameError(f"frame out of sequence: got {seq}, expected {self._received}")
        self._received += 1
        if kind not in kinds:
            raise FrameError(f"unexpected frame kind {kind} (expected one of {kinds})")
        return kind, decode_arrays(body, count)
