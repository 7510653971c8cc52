"""Table URIs outside Spark: the delta-rs / pyarrow spelling of a Hadoop path, the file system to open it
with, and the object-store settings (``output.storage_options``) both take. Spark-free (the trainer uses it).

Spark users write ``s3a://bucket/root``; delta-rs and pyarrow know that bucket as ``s3://bucket/root``.
``storage_options`` use delta-rs's keys (case-insensitive: ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_ALLOW_HTTP``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, and the other
delta-rs keys for GCS / Azure); they go to delta-rs as they are and, for S3, to pyarrow's
:class:`~pyarrow.fs.S3FileSystem`. Keys not given come from the environment, as the AWS SDKs do.

>>> delta_uri("s3a://b/p"), delta_uri("file:///tmp/x"), spark_path("s3://b/p/f.parquet")
('s3://b/p', '/tmp/x', 's3a://b/p/f.parquet')
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from functools import lru_cache

import pyarrow.fs as pafs


def delta_uri(path: str) -> str:
    """The delta-rs / pyarrow URI of a Hadoop path: local paths absolute, ``file:`` stripped, ``s3a://`` and
    ``s3n://`` -> ``s3://``."""
    if path.startswith("file:"):
        path = path[len("file:") :]
        while path.startswith("//"):
            path = path[1:]
        return path
    if "://" not in path:
        return os.path.abspath(path)
    if path.startswith(("s3a://", "s3n://")):
        return "s3://" + path.split("://", 1)[1]
    return path


def spark_path(uri: str) -> str:
    """Inverse of :func:`delta_uri` for the file URIs delta-rs returns (``s3://`` -> ``s3a://``)."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def _option(options: Mapping[str, str], *names: str) -> str | None:
    lower = {k.lower(): v for k, v in options.items()}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


@lru_cache(maxsize=16)
def _s3(options: tuple[tuple[str, str], ...]) -> pafs.S3FileSystem:
    opts = dict(options)
    endpoint = _option(opts, "aws_endpoint_url", "endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    allow_http = (_option(opts, "aws_allow_http", "allow_http") or "").lower() == "true"
    kwargs = {
        "region": _option(opts, "aws_region", "region"),
        "access_key": _option(opts, "aws_access_key_id", "access_key_id"),
        "secret_key": _option(opts, "aws_secret_access_key", "secret_access_key"),
        "session_token": _option(opts, "aws_session_token", "session_token"),
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs["endpoint_override"], kwargs["scheme"] = (host, scheme) if host else (endpoint, "https")
        if allow_http and not host:
            kwargs["scheme"] = "http"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def open_uri(uri: str, options: Mapping[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path in it) of a table URI: local disk, ``s3://`` / ``s3a://`` / ``s3n://``
    (with ``options``), or any other scheme pyarrow knows (``hdfs://``, ``gs://``, ``abfs://``)."""
    uri = delta_uri(uri)
    if "://" not in uri:
        return pafs.LocalFileSystem(), posixpath.abspath(uri)
    if uri.startswith("s3://"):
        return _s3(tuple(sorted((options or {}).items()))), uri[len("s3://") :]
    return pafs.FileSystem.from_uri(uri)


class ArrowFiles:
    """:class:`mgoe_spark.core.manifest.Files` over pyarrow file systems (the trainer's side). Each call is
    one file-system request."""

    def __init__(self, options: Mapping[str, str] | None = None):
        self.options = dict(options or {})

    def exists(self, path: str) -> bool:
        fs, p = open_uri(path, self.options)
        return fs.get_file_info(p).type != pafs.FileType.NotFound

    def read_text(self, path: str) -> str | None:
        fs, p = open_uri(path, self.options)
        if fs.get_file_info(p).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(p) as f:
            return f.read().decode()

    def list_names(self, path: str) -> list[str]:
        fs, p = open_uri(path, self.options)
        if fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        return sorted(posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(p)))
