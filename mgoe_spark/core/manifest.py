"""The run-date manifest: which version of each table a reader sees, so a stage's tables appear together.

A stage writes all its tables first (Parquet: each into its own staging directory; Delta: data files not
yet in the log), then publishes them one after another and, last, writes the manifest of the run date, a
small JSON file ``<root>/_manifests/run_date=D/<seq>.json`` that names, per table, the version (a token)
readers must see. Until that file exists, readers keep resolving every table to the version the previous
manifest names, so they see the previous complete set of a stage's tables or the new complete set, never a
mix, whatever point a killed driver stopped at:

- Parquet: a published partition ``<table>/run_date=D`` holds a marker file ``_mgoe_version`` with its
  version token. Publishing moves the old partition to ``<table>/_prev/run_date=D.<old token>``, where it
  stays until the new manifest is written. A reader whose manifest names a token that is not the partition's
  finds that version in ``_prev``.
- Delta: the manifest records the Delta log version that holds the table's committed files of date D;
  readers read the table at that version (time travel), so a later commit of D that no manifest names yet
  is not seen.

Manifests are numbered: a writer creates ``seq + 1`` only if it does not exist yet (a compare-and-swap on
the file name), so two writers that both read ``seq`` cannot both publish. Readers take the highest-numbered
file that parses (a file being written is not valid JSON yet and is skipped).

Tables written before manifests existed (a partition without a marker, no manifest entry) are read as they
are; a partition WITH a marker that no manifest names was published by a run that never finished, and reads
as missing.

This module does no I/O of its own: it is given a :class:`Files` (Hadoop's file system on the Spark side,
pyarrow's in the trainer), so both sides resolve a version by the same rule. Cost per read of one table and
date: one listing of the date's manifest directory (a handful of files, older ones are pruned) and two
small file reads.

>>> m = Manifest("2026-11-23", 0, {}).with_entries({"interactions": Entry("parquet", "a1b2c3")}, "ingest")
>>> m.seq, m.entries["interactions"].version, m.entries["interactions"].stage
(1, 'a1b2c3', 'ingest')
>>> Manifest.from_json(m.to_json()) == m
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Protocol

from schemas import RUN_DATE, partition_path, table_path

MANIFESTS = "_manifests"
VERSION_MARKER = "_mgoe_version"
PREVIOUS = "_prev"
LEGACY = "legacy"
"""The version name of a partition written before manifests (it has no marker)."""
KEEP_MANIFESTS = 3
"""Manifests kept per run date (older ones are deleted after a commit; readers only need the newest)."""


class Files(Protocol):
    """The file operations a reader needs (paths are the table layout's: ``root/...``)."""

    def exists(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str | None:
        """The file's text, or None if there is no such file."""

    def list_names(self, path: str) -> list[str]:
        """The names of a directory's children ([] if there is no such directory)."""


@dataclass(frozen=True)
class Entry:
    """One table's published version: ``version`` is the write's token (Parquet marker), ``delta_version``
    the Delta log version holding it (Delta tables only), ``stage`` the stage (or table) that wrote it."""

    format: str
    version: str
    delta_version: int | None = None
    stage: str = ""


@dataclass(frozen=True)
class Manifest:
    run_date: str
    seq: int
    entries: dict[str, Entry] = field(default_factory=dict)

    def with_entries(self, entries: dict[str, Entry], stage: str) -> Manifest:
        """The next manifest: this one with ``entries`` replaced or added (tables of other stages kept)."""
        merged = dict(self.entries)
        merged.update({name: replace(e, stage=stage) for name, e in entries.items()})
        return Manifest(self.run_date, self.seq + 1, merged)

    def to_json(self) -> str:
        tables = {name: vars(e) for name, e in sorted(self.entries.items())}
        return json.dumps({RUN_DATE: self.run_date, "seq": self.seq, "tables": tables}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        data = json.loads(text)
        entries = {name: Entry(**e) for name, e in data["tables"].items()}
        return Manifest(data[RUN_DATE], int(data["seq"]), entries)


def manifest_dir(root: str, run_date: str) -> str:
    return f"{root.rstrip('/')}/{MANIFESTS}/{RUN_DATE}={run_date}"


def manifest_path(root: str, run_date: str, seq: int) -> str:
    return f"{manifest_dir(root, run_date)}/{seq:08d}.json"


def previous_path(root: str, table: str, run_date: str, version: str) -> str:
    """Where a replaced Parquet partition waits until the manifest that drops it is written."""
    return f"{table_path(root, table)}/{PREVIOUS}/{RUN_DATE}={run_date}.{version}"


def latest(files: Files, root: str, run_date: str) -> Manifest | None:
    """The newest valid manifest of ``run_date`` (None if none was ever written)."""
    names = sorted((n for n in files.list_names(manifest_dir(root, run_date)) if n.endswith(".json")), reverse=True)
    for name in names:
        text = files.read_text(f"{manifest_dir(root, run_date)}/{name}")
        try:
            return Manifest.from_json(text) if text else None
        except (ValueError, KeyError, TypeError):
            continue  # being written, or damaged: the one before it holds
    return None


class UnpublishedVersion(LookupError):
    """The manifest names a version that is neither the published partition nor kept in ``_prev``."""


def resolve_parquet(files: Files, root: str, table: str, run_date: str, manifest: Manifest | None) -> str | None:
    """The directory holding the version of ``table``/``run_date`` that readers see, or None if there is none.

    The partition if its marker is the manifest's version (or, for a table no manifest names, if it has no
    marker: written before manifests); the kept previous version if the partition was replaced by a write
    that no manifest names yet. Raises :class:`UnpublishedVersion` if the named version is gone (a commit
    raced this read: the caller reads the manifest again).
    """
    part = partition_path(root, table, run_date)
    entry = manifest.entries.get(table) if manifest else None
    marker = files.read_text(f"{part}/{VERSION_MARKER}")
    if entry is None:  # written before manifests, or by a run that has not finished
        if marker is None:
            return part if files.exists(part) else None
        legacy = previous_path(root, table, run_date, LEGACY)
        return legacy if files.exists(legacy) else None
    if marker is not None and marker.strip() == entry.version:
        return part
    kept = previous_path(root, table, run_date, entry.version)
    if files.exists(kept):
        return kept
    raise UnpublishedVersion(f"table '{table}' run date {run_date}: version {entry.version} is not on disk")


def resolve(files: Files, root: str, table: str, run_date: str) -> tuple[Manifest | None, str | None]:
    """(manifest, directory) for a Parquet table; reads the manifest again once if a commit raced the first
    resolution."""
    for attempt in range(3):
        manifest = latest(files, root, run_date)
        try:
            return manifest, resolve_parquet(files, root, table, run_date, manifest)
        except UnpublishedVersion:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def parquet_run_dates(files: Files, root: str, table: str) -> list[str]:
    """The run dates a Parquet table has a readable version of, sorted: partition directories, and dates with
    a manifest (a date being published may have its partition moved aside for a moment). O(dates) reads."""
    prefix = f"{RUN_DATE}="
    names = files.list_names(table_path(root, table)) + files.list_names(f"{root.rstrip('/')}/{MANIFESTS}")
    dates = sorted({n[len(prefix) :] for n in names if n.startswith(prefix)})
    return [d for d in dates if resolve(files, root, table, d)[1] is not None]


def delta_version(files: Files, root: str, table: str, run_date: str) -> tuple[bool, int | None]:
    """(readable, log version) for a Delta table's ``run_date``: the version the manifest names; on a root
    that has never had a manifest (written before them), readable at the current version (None). A date
    whose commit no manifest names yet is not readable (its run never finished)."""
    manifest = latest(files, root, run_date)
    entry = manifest.entries.get(table) if manifest else None
    if entry is not None:
        return True, entry.delta_version
    return not files.exists(f"{root.rstrip('/')}/{MANIFESTS}"), None
