"""The run date's time windows as a table: chosen once by ``nodes``, read by ``features`` and the gates.

``nodes`` and ``features`` run as separate Spark applications (the Airflow DAG), possibly on different
parallelism; approximate quantiles computed in each could differ, and then macro ids would be fit on events
the other application uses as train samples. So :func:`choose` computes the cutoffs and the share of events
in each window and writes them as the one-row ``windows`` partition of the run date; :func:`recorded` reads
them back and refuses a config whose ``windows.*`` settings would choose other cutoffs (one-line error).

Cost: the windows computation (see :mod:`mgoe_spark.windows.cutoffs`) plus one aggregation for the shares; the
table is one row.
"""

from __future__ import annotations

import json

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.metrics import StageSummary
from mgoe_spark.core.storage import TableStore
from mgoe_spark.windows.cutoffs import (
    USER_EVENT_ORDER,
    Windows,
    check_nonempty,
    compute_windows,
    measure,
    settings_json,
    time_unit_of,
    user_event_order,
)
from schemas import INTERACTIONS, WINDOWS


def on_time_axis(interactions: DataFrame, cfg: MgoeConfig) -> DataFrame:
    """``interactions`` on the axis the cutoffs live on: unchanged for logs with time; for logs without
    (Tenrec) ``ts`` becomes each user's own event order, persisted since every stage reads it several times."""
    if time_unit_of(cfg.input) != USER_EVENT_ORDER:
        return interactions
    return user_event_order(interactions).persist(StorageLevel.MEMORY_AND_DISK)


def choose(store: TableStore, interactions: DataFrame, cfg: MgoeConfig, run_date: str) -> Windows:
    """Compute the windows of ``interactions`` (already :func:`on_time_axis`), check that every window holds
    events, and write them as the ``windows`` partition of ``run_date``."""
    unit = time_unit_of(cfg.input)
    windows = measure(interactions, compute_windows(interactions, cfg.windows, unit))
    check_nonempty(windows)
    spark = interactions.sparkSession
    row = (
        windows.train_cutoff,
        windows.test_cutoff,
        windows.time_unit,
        cfg.windows.mode,
        settings_json(cfg.windows, unit),
        windows.events,
        windows.feature_share,
        windows.train_share,
        windows.test_share,
        windows.valid_cutoff,
        windows.valid_share,
    )
    store.write(spark.createDataFrame([row], WINDOWS.spark(with_partition=False)).coalesce(1), WINDOWS, run_date)
    return windows


def recorded(store: TableStore, cfg: MgoeConfig, run_date: str) -> Windows:
    """The windows ``nodes`` recorded for ``run_date``; UserError if the config asks for other ones."""
    return from_rows(store.read(WINDOWS, run_date).collect(), cfg, run_date)  # one row


def from_rows(rows: list, cfg: MgoeConfig, run_date: str) -> Windows:
    """The windows of the ``windows`` partition's rows; UserError unless one row whose settings are the
    config's ``windows.*``."""
    if len(rows) != 1:
        raise UserError(f"table 'windows' of {run_date} has {len(rows)} rows, not 1: run `mgoe nodes` again")
    row = rows[0]
    wanted = settings_json(cfg.windows, time_unit_of(cfg.input))
    if json.loads(row["settings"]) != json.loads(wanted):
        raise UserError(
            f"`mgoe nodes` chose the windows of {run_date} with {_settings_text(row['settings'])}, but this config "
            f"asks for {_settings_text(wanted)}; use the same windows.* settings in every stage of a run "
            "(or run `mgoe nodes` again with these)"
        )
    return Windows(
        int(row["train_cutoff"]),
        int(row["test_cutoff"]),
        row["time_unit"],
        events=int(row["events"]),
        feature_share=float(row["feature_share"]),
        train_share=float(row["train_share"]),
        test_share=float(row["test_share"]),
        valid_cutoff=_optional(row, "valid_cutoff", int),
        valid_share=_optional(row, "valid_share", float),
    )


def _optional(row, name: str, cast):
    """A nullable column of the windows row (absent in tables written before it existed: None)."""
    value = row.asDict().get(name)
    return None if value is None else cast(value)


def _settings_text(settings: str) -> str:
    return " ".join(f"windows.{k}={v}" for k, v in sorted(json.loads(settings).items()) if k != "time_unit")


def load_interactions(store: TableStore, run_date: str) -> DataFrame:
    """The run date's INTERACTIONS (without the partition column), as ingest wrote them (lazy)."""
    return store.read(INTERACTIONS, run_date).drop("run_date")


def windows_of(
    store: TableStore, interactions: DataFrame, cfg: MgoeConfig, summary: StageSummary, run_date: str, *, decide: bool
) -> tuple[DataFrame, Windows]:
    """(interactions on the cutoffs' time axis, the run date's windows). ``decide`` (``nodes``): compute
    them and write the ``windows`` table; else (``features``) read that table."""
    interactions = on_time_axis(interactions, cfg)
    windows = choose(store, interactions, cfg, run_date) if decide else recorded(store, cfg, run_date)
    summary.add("train_cutoff_ts", windows.train_cutoff)
    summary.add("test_cutoff_ts", windows.test_cutoff)
    if windows.valid_cutoff is not None:
        summary.add("valid_cutoff_ts", windows.valid_cutoff)
        summary.add("valid_share", round(windows.valid_share, 4))
    for name in ("feature_share", "train_share", "test_share"):
        summary.add(name, round(getattr(windows, name), 4))
    summary.note("windows", windows.summary())
    return interactions, windows
