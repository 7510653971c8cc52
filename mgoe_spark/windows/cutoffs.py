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

Quantile cutoffs are *snapped to distinct timestamps* (:func:`snap_cutoffs`): on a day-grained log both
quantiles often fall on the same day (or the last one), which would leave a sample window empty; c2 moves
to the distinct timestamp before the last one if needed, then c1 to the one before c2. So both sample
windows are non-empty whenever the log has at least three distinct timestamps; otherwise
:class:`WindowError` says so and suggests ``windows.mode=dates``. Cost: one or two more aggregations over
``ts`` (a column scan each), only the first always.

Logs without timestamps (``ts`` is a file-order ordinal, Tenrec): the cut is made in *each user's own*
event order (:func:`user_event_order`): the first q1 of a user's events are features, the next q2 - q1 train
samples, the rest test samples. A global ordinal cut would, on a file grouped by user, give the last 20% of
users only test (cold-start) samples.

``nodes`` chooses the windows once and writes them to the ``windows`` table; ``features`` and the quality
gates read that table (so two applications on different parallelism cannot disagree on a cutoff) and
refuse a config that asks for other windows (:func:`settings_json` is what is compared).

Validation is carved from the train window with a seeded hash (partitioning-independent, SPEC 3; never the
test set as MacGNN does): ``validation_by=row`` hashes the (user, item) pair (validation users also have
train rows, like the test split), ``validation_by=user`` holds out whole users.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark.config import InputSettings, WindowSettings
from mgoe_spark.core import rand
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.names import SNAPSHOTS, TEST, TRAIN, VALID

"""Feature snapshots: ``train`` (cutoff c1) serves the train and valid samples, ``test`` (cutoff c2)."""

EPOCH_SECONDS, USER_EVENT_ORDER = "epoch_seconds", "user_event_order"
ORDER_SCALE = 1_000_000_000
"""``user_event_order`` time axis: an event's ts is ``rank * ORDER_SCALE // n`` (its position among the
user's n distinct ordinals, scaled to 1..ORDER_SCALE), so a cutoff ``q * ORDER_SCALE`` cuts every user at q."""


class WindowError(UserError, ValueError):
    """No valid split of the log into the three windows (a user-fixable data / config problem)."""


@dataclass(frozen=True)
class Windows:
    """The two feature cutoffs (inclusive, in the units of ``ts``: epoch seconds or, for logs without time,
    the per-user order axis of :func:`user_event_order`), and the share of events in each window (None until
    measured by :func:`measure`)."""

    train_cutoff: int
    test_cutoff: int
    time_unit: str = EPOCH_SECONDS
    events: int | None = None
    feature_share: float | None = None
    train_share: float | None = None
    test_share: float | None = None

    def __post_init__(self) -> None:
        if not self.train_cutoff < self.test_cutoff:
            raise WindowError(
                f"the train cutoff ({self.describe_cutoff(self.train_cutoff)}) must be before the test cutoff "
                f"({self.describe_cutoff(self.test_cutoff)}); set windows.train_cutoff < windows.test_cutoff"
            )

    def describe_cutoff(self, ts: int) -> str:
        """A cutoff for people: a UTC date (``2019-06-18``, when it is midnight or the day's last second) or
        instant; on the per-user order axis the fraction of each user's events."""
        if self.time_unit == USER_EVENT_ORDER:
            return f"first {ts / ORDER_SCALE:.0%} of each user's events"
        return format_instant(ts)

    def summary(self) -> str:
        """One line: both cutoffs as dates and the share of events in each window."""

        def pct(x: float | None) -> str:
            return "?" if x is None else f"{x:.1%}"

        return (
            f"features <= {self.describe_cutoff(self.train_cutoff)} ({pct(self.feature_share)} of events), "
            f"train/valid samples <= {self.describe_cutoff(self.test_cutoff)} ({pct(self.train_share)}), "
            f"test samples after ({pct(self.test_share)})"
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
        raise WindowError(f"{key} {text!r} is not a date (YYYY-MM-DD) or instant (YYYY-MM-DDTHH:MM:SS)") from None
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp()) + 86_400 - 1


def format_instant(ts: int) -> str:
    """Epoch seconds as a UTC date (midnight or 23:59:59) or ``YYYY-MM-DD HH:MM:SS``."""
    t = dt.datetime.fromtimestamp(int(ts), dt.UTC)
    if (t.hour, t.minute, t.second) in ((0, 0, 0), (23, 59, 59)):
        return t.date().isoformat()
    return t.strftime("%Y-%m-%d %H:%M:%S")


def log_has_time(inp: InputSettings) -> bool:
    """False when ingest made ``ts`` a file-order ordinal (Tenrec, or a generic log without a timestamp)."""
    return inp.format != "tenrec" and inp.timestamp_column is not None


def time_unit_of(inp: InputSettings) -> str:
    return EPOCH_SECONDS if log_has_time(inp) else USER_EVENT_ORDER


def settings_json(settings: WindowSettings, time_unit: str) -> str:
    """The settings that choose the cutoffs (not the validation split), as canonical JSON: what the
    ``windows`` table records and what a later reader's config must match."""
    keys = ("mode", "train_cutoff", "test_cutoff") if settings.mode == "dates" else ("mode", "q1", "q2")
    chosen = {k: v for k, v in asdict(settings).items() if k in keys}
    return json.dumps({**chosen, "time_unit": time_unit}, sort_keys=True)


def user_event_order(interactions: DataFrame) -> DataFrame:
    """``interactions`` with ``ts`` replaced by the event's position in its user's own order: the user's
    distinct ordinals ranked 1..n and scaled, ``ts = rank * ORDER_SCALE // n`` (events of one line share a
    rank). Cost: one shuffle by user and a sort within it (both window functions share it); a very heavy
    user's events sit in one task, which Spark's window buffer spills to disk past its threshold."""
    by_user = Window.partitionBy("user_id")
    ranked = interactions.withColumn("_rank", F.dense_rank().over(by_user.orderBy("ts")))
    ranked = ranked.withColumn("_n", F.max("_rank").over(by_user))
    scaled = (F.col("_rank").cast("long") * F.lit(ORDER_SCALE)) / F.col("_n").cast("long")
    return ranked.withColumn("ts", F.floor(scaled).cast("long")).drop("_rank", "_n")


def compute_windows(interactions: DataFrame, settings: WindowSettings, time_unit: str = EPOCH_SECONDS) -> Windows:
    """The cutoffs for ``interactions`` (needs column ``ts``; on the per-user order axis when ``time_unit``
    is ``user_event_order``). Quantile mode: one approxQuantile pass plus the snapping aggregations (see
    :func:`snap_cutoffs`); the driver receives a few numbers. Dates mode: no Spark work. Shares are not
    measured here (:func:`measure`)."""
    if settings.mode == "dates":
        if time_unit == USER_EVENT_ORDER:
            raise WindowError(
                "windows.mode=dates needs timestamps, but this log has none (ts is the file order); "
                "use windows.mode=quantile with windows.q1 / windows.q2"
            )
        if settings.train_cutoff is None or settings.test_cutoff is None:
            raise WindowError("windows.mode=dates needs windows.train_cutoff and windows.test_cutoff (YYYY-MM-DD)")
        return Windows(
            parse_instant(settings.train_cutoff, "windows.train_cutoff"),
            parse_instant(settings.test_cutoff, "windows.test_cutoff"),
        )
    if time_unit == USER_EVENT_ORDER:
        # On the per-user axis the quantile IS the fraction of each user's events: no data pass needed.
        return Windows(round(settings.q1 * ORDER_SCALE), round(settings.q2 * ORDER_SCALE), USER_EVENT_ORDER)
    qs = interactions.approxQuantile("ts", [settings.q1, settings.q2], settings.quantile_rel_error)
    if len(qs) < 2:
        raise WindowError("cannot compute time windows: the interactions table is empty")
    c1, c2 = snap_cutoffs(interactions, int(qs[0]), int(qs[1]))
    return Windows(c1, c2)


def _max_below(interactions: DataFrame, bound: int) -> int | None:
    """The largest ts strictly below ``bound`` (None if none): one aggregation over ``ts``."""
    v = interactions.where(F.col("ts") < F.lit(int(bound))).agg(F.max("ts")).first()[0]
    return None if v is None else int(v)


def snap_cutoffs(interactions: DataFrame, v1: int, v2: int) -> tuple[int, int]:
    """Cutoffs ``c1 < c2`` from the quantile values ``v1 <= v2`` such that each window holds a distinct
    timestamp: ``c2`` below the largest ts (test samples exist), ``c1`` below ``c2`` (train samples exist);
    ``c1`` is a ts itself, so the feature window is never empty. Quantile values are timestamps of the log,
    so on a log of seconds nothing moves. Cost: one aggregation (min, max), plus one per moved cutoff.
    WindowError (with example ``windows.mode=dates`` values) when the log has fewer than three distinct
    timestamps."""
    row = interactions.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    lo, hi = int(row["lo"]), int(row["hi"])
    c2 = v2 if v2 < hi else _max_below(interactions, hi)
    c1 = None if c2 is None else (v1 if v1 < c2 else _max_below(interactions, c2))
    if c1 is None or c2 is None:
        raise WindowError(no_split_message(lo, hi))
    return c1, c2


def no_split_message(lo: int, hi: int) -> str:
    """The one-line error for a log whose timestamps cannot be split into three windows."""
    first, last = dt.datetime.fromtimestamp(lo, dt.UTC).date(), dt.datetime.fromtimestamp(hi, dt.UTC).date()
    if (last - first).days >= 2:  # the last day for test samples, the day before for train samples
        c1, c2 = last - dt.timedelta(days=2), last - dt.timedelta(days=1)
        example = f"--set windows.train_cutoff={c1} --set windows.test_cutoff={c2}"
    else:
        example = "--set windows.train_cutoff=YYYY-MM-DD --set windows.test_cutoff=YYYY-MM-DD"
    return (
        f"cannot split the log ({format_instant(lo)} .. {format_instant(hi)}) into feature, train and test windows "
        "by quantiles: it has fewer than 3 distinct timestamps in the needed places; "
        f"choose the cutoffs yourself: --set windows.mode=dates {example}"
    )


def measure(interactions: DataFrame, windows: Windows) -> Windows:
    """``windows`` with the number of events and each window's share: one aggregation over ``ts``."""
    ts = F.col("ts")
    row = interactions.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(ts <= F.lit(windows.train_cutoff), 1).otherwise(0)).alias("f"),
        F.sum(F.when(ts > F.lit(windows.test_cutoff), 1).otherwise(0)).alias("t"),
    ).first()
    n = int(row["n"])
    if n == 0:
        raise WindowError("cannot compute time windows: the interactions table is empty")
    f, t = int(row["f"] or 0), int(row["t"] or 0)
    return Windows(
        windows.train_cutoff,
        windows.test_cutoff,
        windows.time_unit,
        events=n,
        feature_share=f / n,
        train_share=(n - f - t) / n,
        test_share=t / n,
    )


def check_nonempty(windows: Windows) -> None:
    """WindowError naming the empty window (explicit dates outside the log, or a tiny per-user log)."""
    empty = [
        name
        for name, share in (
            ("feature", windows.feature_share),
            ("train sample", windows.train_share),
            ("test sample", windows.test_share),
        )
        if share == 0
    ]
    if empty:
        raise WindowError(
            f"the {' and the '.join(empty)} window{'s are' if len(empty) > 1 else ' is'} empty ({windows.summary()}); "
            "move windows.train_cutoff / windows.test_cutoff inside the log, or use windows.mode=quantile"
        )


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
