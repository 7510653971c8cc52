"""One writer per output root and run date: a lease file renewed by its holder, and the file operations the
storage layer needs over Hadoop's FileSystem (local disk, HDFS, ...).

The lease is ``<root>/_leases/run_date=D``, created only if absent (``O_EXCL`` on a local disk, HDFS's
``create(overwrite=false)``, both atomic), holding its owner's token, host, process and Spark application. A
daemon thread renews it (sets its modification time) every ``seconds / 4``; a lease not renewed for
``seconds`` belongs to a dead writer and the next writer takes it over (renames it away, then creates its
own: of two writers taking over the same stale lease only one rename succeeds). A live lease makes the
second writer fail at once with :class:`ConcurrentWriteError` (one line, with its hint), before it writes
anything. The holder checks the lease is still its own before it publishes.

Staleness compares the file's modification time with this driver's clock: hosts must be within a few
seconds of each other (NTP), far below the default 120 s. On object stores a create is not exclusive, so
the lease there is advisory; Parquet output is refused there anyway (:mod:`.storage`) and Delta's own
commit protocol orders the commits.

>>> lease = Lease(HadoopFiles(spark), "/data/mgoe/_leases/run_date=2026-11-23", seconds=120)  # doctest: +SKIP
>>> with lease:                                                                             # doctest: +SKIP
...     ...  # write and publish the date's tables
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from mgoe_spark.core.errors import UserError

DEFAULT_LEASE_SECONDS = 120
LEASES = "_leases"


class ConcurrentWriteError(UserError, RuntimeError):
    """Another run is writing the same output root and run date."""

    hint = (
        "wait for the other run to finish; if it died, rerun once its lease has not been renewed for "
        "output.lease_seconds"
    )


def _local(path: str) -> str | None:
    """The OS path of a local-disk path (no scheme or ``file:``), else None."""
    if path.startswith("file:"):
        path = path[len("file:") :]
        while path.startswith("//"):
            path = path[1:]
        return path
    return None if "://" in path else os.path.abspath(path)


class HadoopFiles:
    """:class:`mgoe_spark.core.manifest.Files` and the writes the storage layer needs, over the Hadoop
    FileSystem of each path (the one Spark itself writes through). Each call is one or two file-system
    operations (a py4j round trip each)."""

    def __init__(self, spark):
        self.spark = spark
        self.jvm = spark.sparkContext._jvm

    def fs(self, path: str):
        hpath = self.jvm.org.apache.hadoop.fs.Path(path)
        return hpath.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()), hpath

    def exists(self, path: str) -> bool:
        fs, h = self.fs(path)
        return bool(fs.exists(h))

    def read_text(self, path: str) -> str | None:
        fs, h = self.fs(path)
        if not fs.exists(h) or not fs.getFileStatus(h).isFile():
            return None
        stream = fs.open(h)
        try:
            return self.jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def list_names(self, path: str) -> list[str]:
        fs, h = self.fs(path)
        if not fs.exists(h):
            return []
        return sorted(str(st.getPath().getName()) for st in fs.listStatus(h))

    def create_exclusive(self, path: str, text: str) -> bool:
        """Create ``path`` holding ``text`` only if it does not exist; False if it does. Atomic on local disk
        and HDFS."""
        local = _local(path)
        if local is not None:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
        fs, h = self.fs(path)
        if fs.exists(h):
            return False
        try:
            out = fs.create(h, False)
        except Exception as e:  # noqa: BLE001 - py4j wraps FileAlreadyExistsException
            if "FileAlreadyExists" in str(e) or fs.exists(h):
                return False
            raise
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()
        return True

    def mtime_ms(self, path: str) -> int | None:
        fs, h = self.fs(path)
        return int(fs.getFileStatus(h).getModificationTime()) if fs.exists(h) else None

    def touch(self, path: str) -> None:
        fs, h = self.fs(path)
        fs.setTimes(h, int(time.time() * 1000), -1)

    def rename(self, src: str, dst: str) -> bool:
        fs, s = self.fs(src)
        d = self.jvm.org.apache.hadoop.fs.Path(dst)
        fs.mkdirs(d.getParent())
        return bool(fs.rename(s, d))

    def delete(self, path: str) -> None:
        fs, h = self.fs(path)
        fs.delete(h, True)

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern``, oldest first."""
        fs, h = self.fs(pattern)
        found = fs.globStatus(h) or []
        return [str(st.getPath()) for st in sorted(found, key=lambda st: st.getModificationTime())]


class Lease:
    """The exclusive right to write one output root's run date (see the module docstring)."""

    def __init__(self, files: HadoopFiles, path: str, seconds: int = DEFAULT_LEASE_SECONDS):
        self.files, self.path, self.seconds = files, path, seconds
        self.owner = json.dumps(
            {
                "token": uuid.uuid4().hex,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "app": files.spark.sparkContext.applicationId,
            },
            sort_keys=True,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, taking over a stale one; ConcurrentWriteError if a live writer holds it."""
        for _ in range(3):
            if self.files.create_exclusive(self.path, self.owner):
                self._thread = threading.Thread(target=self._renew, name="mgoe-lease", daemon=True)
                self._thread.start()
                return
            holder, age = self.files.read_text(self.path), self._age_seconds()
            if age is None:
                continue  # released meanwhile
            if age <= self.seconds:
                raise ConcurrentWriteError(
                    f"{self.path} is held by another run ({_describe(holder)}, renewed {age:.0f} s ago)"
                )
            broken = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
            if self.files.rename(self.path, broken):  # only one taker's rename succeeds
                self.files.delete(broken)
        raise ConcurrentWriteError(f"{self.path}: could not take the lease (others are taking it too)")

    def _age_seconds(self) -> float | None:
        mtime = self.files.mtime_ms(self.path)
        return None if mtime is None else max(0.0, time.time() - mtime / 1000)

    def _renew(self) -> None:
        while not self._stop.wait(max(0.5, self.seconds / 4)):
            try:
                if self.held():
                    self.files.touch(self.path)
            except Exception:  # noqa: BLE001 - the JVM is going away; held() at publish time decides
                return

    def held(self) -> bool:
        return self.files.read_text(self.path) == self.owner

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            self.files.delete(self.path)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(owner_json: str | None) -> str:
    try:
        owner = json.loads(owner_json or "")
        return f"host {owner['host']}, pid {owner['pid']}, application {owner['app']}"
    except (ValueError, KeyError, TypeError):
        return "unknown owner"
