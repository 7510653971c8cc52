"""Time windows: feature cutoffs and the train / valid / test sample windows (SPEC 3).

Two cutoffs ``c1 < c2`` split the log::

    events  <= c1            features of the train and valid samples   (snapshot "train")
    c1 < ts <= c2            train + valid samples
    events  <= c2            features of the test samples              (snapshot "test")
    c2 < ts                  test samples

Every graph feature of a sample is computed only from events at or before its snapshot's cutoff, and the
sample's labels only from events strictly after it, so a label can never leak into a feature (see the
label-leak trap test).

Cutoffs come from approximate quantiles of ``ts`` (``windows.mode=quantile``, default q1 = 0.8,
q2 = 0.9: one pass over ``ts``, O(events), memory O(1 / rel_error) per partition) or from explicit dates
(``windows.mode=dates``; the Airflow DAG passes run dates). A date cutoff ``YYYY-MM-DD`` is inclusive: the
whole day (UTC) belongs to the feature window.

Validation is carved from the train window with a seeded hash (partitioning-independent, SPEC 3; never the
test set as MacGNN does): ``validation_by=row`` hashes the (user, item) pair (validation users also have
train rows, like the test split), ``validation_by=user`` holds out whole users.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mgoe_spark import rand
from mgoe_spark.config import WindowSettings

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)
SNAPSHOTS = (TRAIN, TEST)
"""Feature snapshots: ``train`` (cutoff c1) serves the train and valid samples, ``test`` (cutoff c2)."""


@dataclass(frozen=True)
class Windows:
    """The two feature cutoffs (inclusive, in the units of ``ts``: epoch seconds or file-order ordinals)."""

    train_cutoff: int
    test_cutoff: int

    def __post_init__(self) -> None:
        if not self.train_cutoff < self.test_cutoff:
            raise ValueError(
                f"train cutoff {self.train_cutoff} must be before test cutoff {self.test_cutoff} "
                "(too few distinct timestamps, or windows.train_cutoff >= windows.test_cutoff)"
            )

    def cutoff(self, snapshot: str) -> int:
        """Feature cutoff of a snapshot (``train`` or ``test``)."""
        if snapshot not in SNAPSHOTS:
            raise ValueError(f"unknown snapshot {snapshot!r}; allowed: {SNAPSHOTS}")
        return self.train_cutoff if snapshot == TRAIN else self.test_cutoff


def parse_instant(text: str, key: str) -> int:
    """Epoch seconds (UTC) of the END of a cutoff given as ``YYYY-MM-DD`` (whole day inclusive) or as an
    ISO instant ``YYYY-MM-DDTHH:MM:SS`` (that second inclusive)."""
    try:
        if "T" in text or " " in text:
            t = dt.datetime.fromisoformat(text)
            t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t
            return int(t.timestamp())
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key} {text!r} is not a date (YYYY-MM-DD) or instant (YYYY-MM-DDTHH:MM:SS)") from None
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp()) + 86_400 - 1


def compute_windows(interactions: DataFrame, settings: WindowSettings) -> Windows:
    """The cutoffs for ``interactions`` (needs column ``ts``). Quantile mode: one approxQuantile pass,
    O(events) time; the driver receives two numbers. Dates mode: no Spark work."""
    if settings.mode == "dates":
        if settings.train_cutoff is None or settings.test_cutoff is None:
            raise ValueError("windows.mode=dates needs windows.train_cutoff and windows.test_cutoff")
        return Windows(
            parse_instant(settings.train_cutoff, "windows.train_cutoff"),
            parse_instant(settings.test_cutoff, "windows.test_cutoff"),
        )
    qs = interactions.approxQuantile("ts", [settings.q1, settings.q2], settings.quantile_rel_error)
    if len(qs) < 2:
        raise ValueError("cannot compute time windows: the interactions table is empty")
    return Windows(int(qs[0]), int(qs[1]))


def feature_events(interactions: DataFrame, cutoff: int) -> DataFrame:
    """Events usable as features at ``cutoff``: ``ts <= cutoff`` (a filter, O(events), pushed into scans)."""
    return interactions.where(F.col("ts") <= F.lit(int(cutoff)))


def sample_window(windows: Windows) -> Column:
    """``'train'`` for ts in (c1, c2], ``'test'`` for ts > c2, null for feature-window events."""
    ts = F.col("ts")
    return (
        F.when(ts > F.lit(windows.test_cutoff), F.lit(TEST))
        .when(ts > F.lit(windows.train_cutoff), F.lit(TRAIN))
        .otherwise(F.lit(None).cast("string"))
    )


def sample_events(interactions: DataFrame, windows: Windows) -> DataFrame:
    """Events after the train cutoff, with column ``window`` = ``train`` | ``test`` (which sample window)."""
    return interactions.where(F.col("ts") > F.lit(windows.train_cutoff)).withColumn("window", sample_window(windows))


def split_column(window: Column | str, settings: WindowSettings, seed: int) -> Column:
    """The split of a sample row: ``test`` in the test window; in the train window ``valid`` with probability
    ``validation_fraction`` (hash of (user_id, item_id) or of user_id, see ``validation_by``), else ``train``.
    Needs columns ``user_id`` (and ``item_id`` for ``validation_by=row``). Deterministic per row."""
    window = F.col(window) if isinstance(window, str) else window
    keys = ["user_id"] if settings.validation_by == "user" else ["user_id", "item_id"]
    u = rand.uniform(seed, "validation", *keys)
    return (
        F.when(window == F.lit(TEST), F.lit(TEST))
        .when(u < F.lit(float(settings.validation_fraction)), F.lit(VALID))
        .otherwise(F.lit(TRAIN))
    )


def snapshot_of_split(split: Column | str) -> Column:
    """Which feature snapshot serves a split: ``test`` for test rows, ``train`` for train and valid rows."""
    split = F.col(split) if isinstance(split, str) else split
    return F.when(split == F.lit(TEST), F.lit(TEST)).otherwise(F.lit(TRAIN))
