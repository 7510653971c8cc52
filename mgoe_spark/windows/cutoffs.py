"""Time windows: feature cutoffs and the train / valid / test sample windows (SPEC 3).

Two cutoffs ``c1 < c2`` split the log::

    events  <= c1            features of the train and valid samples   (snapshot "train")
    c1 < ts <= c2            train + valid samples
    events  <= c2            features of the test samples              (snapshot "test")
    c2 < ts                  test samples

``windows.validation=window`` adds a third cutoff ``c1 < cv < c2`` and gives validation a window and a
feature snapshot of its own, so model selection sees the same shift as the test split (SPEC 3)::

    events  <= c1            features of the train samples             (snapshot "train")
    c1 < ts <= cv            train samples
    events  <= cv            features of the valid samples             (snapshot "valid")
    cv < ts <= c2            valid samples
    events  <= c2            features of the test samples              (snapshot "test")
    c2 < ts                  test samples

The test split and its features are the same in both forms; the valid window is the last
``validation_fraction`` of the train window (quantile mode: ``qv = q2 - validation_fraction * (q2 - q1)``;
dates mode: ``windows.valid_cutoff``).

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

With ``windows.validation=split`` (default) validation is carved from the train window with a seeded hash
(partitioning-independent, SPEC 3; never the test set as MacGNN does): ``validation_by=row`` hashes the
(user, item) pair (validation users also have train rows, like the test split), ``validation_by=user``
holds out whole users; valid rows read the train snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, replace

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark.config import InputSettings, WindowSettings
from mgoe_spark.core import rand
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.names import SNAPSHOTS, TEST, TRAIN, VALID

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
    """Share of events in (c1, c2]: the train and valid samples together."""
    test_share: float | None = None
    valid_cutoff: int | None = None
    """cv of ``windows.validation=window`` (c1 < cv < c2): valid samples are (cv, c2] and read the ``valid``
    snapshot (events <= cv); ``None``: validation is carved from the train window by hash."""
    valid_share: float | None = None
    """Share of events in (cv, c2] (``None`` without a valid window)."""

    def __post_init__(self) -> None:
        if not self.train_cutoff < self.test_cutoff:
            raise WindowError(
                f"the train cutoff ({self.describe_cutoff(self.train_cutoff)}) must be before the test cutoff "
                f"({self.describe_cutoff(self.test_cutoff)}); set windows.train_cutoff < windows.test_cutoff"
            )
        if self.valid_cutoff is not None and not self.train_cutoff < self.valid_cutoff < self.test_cutoff:
            raise WindowError(
                f"the valid cutoff ({self.describe_cutoff(self.valid_cutoff)}) must be between the train cutoff "
                f"({self.describe_cutoff(self.train_cutoff)}) and the test cutoff "
                f"({self.describe_cutoff(self.test_cutoff)}); set windows.valid_cutoff between them"
            )

    @property
    def snapshots(self) -> tuple[str, ...]:
        """The feature snapshots of these windows, in cutoff order: (train, test), or (train, valid, test)
        with a valid window of its own."""
        return SNAPSHOTS if self.valid_cutoff is not None else (TRAIN, TEST)

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

        features = f"features <= {self.describe_cutoff(self.train_cutoff)} ({pct(self.feature_share)} of events), "
        test = f"test samples after ({pct(self.test_share)})"
        if self.valid_cutoff is None:
            return features + (
                f"train/valid samples <= {self.describe_cutoff(self.test_cutoff)} ({pct(self.train_share)}), " + test
            )
        train = None if self.train_share is None or self.valid_share is None else self.train_share - self.valid_share
        return features + (
            f"train samples <= {self.describe_cutoff(self.valid_cutoff)} ({pct(train)}), "
            f"valid samples <= {self.describe_cutoff(self.test_cutoff)} ({pct(self.valid_share)}), " + test
        )

    def window_shares(self) -> dict[str, float | None]:
        """The share of events in each window, by name: ``feature``, ``train sample`` (train rows only when
        validation has a window of its own), ``valid sample`` (only then) and ``test sample``."""
        train = self.train_share
        if self.valid_share is not None and train is not None:
            train = train - self.valid_share
        shares = {"feature": self.feature_share, "train sample": train}
        if self.valid_cutoff is not None:
            shares["valid sample"] = self.valid_share
        return {**shares, "test sample": self.test_share}

    def cutoff(self, snapshot: str) -> int:
        """Feature cutoff of a snapshot (one of :attr:`snapshots`)."""
        if snapshot not in self.snapshots:
            raise ValueError(f"unknown snapshot {snapshot!r}; allowed: {self.snapshots}")
        return {TRAIN: self.train_cutoff, VALID: self.valid_cutoff, TEST: self.test_cutoff}[snapshot]


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
    """The settings that choose the cutoffs (not the hash split of validation), as canonical JSON: what the
    ``windows`` table records and what a later reader's config must match. ``validation=split`` records
    what it always did, so tables written before the valid window read as they are."""
    keys = ["mode", "train_cutoff", "test_cutoff"] if settings.mode == "dates" else ["mode", "q1", "q2"]
    if settings.validation == "window":
        keys += ["validation", "valid_cutoff" if settings.mode == "dates" else "validation_fraction"]
    chosen = {k: v for k, v in asdict(settings).items() if k in keys}
    return json.dumps({**chosen, "time_unit": time_unit}, sort_keys=True)


def valid_quantile(settings: WindowSettings) -> float:
    """qv of ``validation=window`` in quantile mode: the last ``validation_fraction`` of the train window,
    ``q2 - validation_fraction * (q2 - q1)``."""
    return round(settings.q2 - settings.validation_fraction * (settings.q2 - settings.q1), 12)  # 0.85, not 0.85..01


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
    is ``user_event_order``), with the valid cutoff when ``settings.validation == 'window'``. Quantile mode:
    one approxQuantile pass plus the snapping aggregations (see :func:`snap_cutoffs`); the driver receives a
    few numbers. Dates mode: no Spark work. Shares are not measured here (:func:`measure`)."""
    own_valid = settings.validation == "window"
    if settings.mode == "dates":
        if time_unit == USER_EVENT_ORDER:
            raise WindowError(
                "windows.mode=dates needs timestamps, but this log has none (ts is the file order); "
                "use windows.mode=quantile with windows.q1 / windows.q2"
            )
        if settings.train_cutoff is None or settings.test_cutoff is None:
            raise WindowError("windows.mode=dates needs windows.train_cutoff and windows.test_cutoff (YYYY-MM-DD)")
        if own_valid and settings.valid_cutoff is None:
            raise WindowError(
                "windows.validation=window with windows.mode=dates needs windows.valid_cutoff (YYYY-MM-DD)"
            )
        return Windows(
            parse_instant(settings.train_cutoff, "windows.train_cutoff"),
            parse_instant(settings.test_cutoff, "windows.test_cutoff"),
            valid_cutoff=parse_instant(settings.valid_cutoff, "windows.valid_cutoff") if own_valid else None,
        )
    quantiles = [settings.q1, valid_quantile(settings), settings.q2] if own_valid else [settings.q1, settings.q2]
    if time_unit == USER_EVENT_ORDER:
        # On the per-user axis the quantile IS the fraction of each user's events: no data pass needed.
        cuts = [round(q * ORDER_SCALE) for q in quantiles]
        return Windows(cuts[0], cuts[-1], USER_EVENT_ORDER, valid_cutoff=cuts[1] if own_valid else None)
    qs = interactions.approxQuantile("ts", quantiles, settings.quantile_rel_error)
    if len(qs) < len(quantiles):
        raise WindowError("cannot compute time windows: the interactions table is empty")
    cuts = snap_cutoffs(interactions, *(int(q) for q in qs))
    return Windows(cuts[0], cuts[-1], valid_cutoff=cuts[1] if own_valid else None)


def _max_below(interactions: DataFrame, bound: int) -> int | None:
    """The largest ts strictly below ``bound`` (None if none): one aggregation over ``ts``."""
    v = interactions.where(F.col("ts") < F.lit(int(bound))).agg(F.max("ts")).first()[0]
    return None if v is None else int(v)


def snap_cutoffs(interactions: DataFrame, *values: int) -> tuple[int, ...]:
    """Increasing cutoffs from the quantile values ``values`` (ascending: v1 <= v2, or v1 <= vv <= v2) such
    that each window holds a distinct timestamp: the last cutoff below the largest ts (test samples exist),
    each earlier one below the next (its sample window is non-empty); ``c1`` is a ts itself, so the feature
    window is never empty. Quantile values are timestamps of the log, so on a log of seconds nothing moves.
    Cost: one aggregation (min, max), plus one per moved cutoff. WindowError (with example
    ``windows.mode=dates`` values) when the log has too few distinct timestamps."""
    row = interactions.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    lo, hi = int(row["lo"]), int(row["hi"])
    cuts: list[int] = []
    bound: int | None = hi
    for v in reversed(values):
        bound = None if bound is None else (v if v < bound else _max_below(interactions, bound))
        if bound is None:
            raise WindowError(no_split_message(lo, hi))
        cuts.append(bound)
    return tuple(reversed(cuts))


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
    valid_cut = windows.test_cutoff if windows.valid_cutoff is None else windows.valid_cutoff
    row = interactions.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(ts <= F.lit(windows.train_cutoff), 1).otherwise(0)).alias("f"),
        F.sum(F.when(ts > F.lit(windows.test_cutoff), 1).otherwise(0)).alias("t"),
        F.sum(F.when((ts > F.lit(valid_cut)) & (ts <= F.lit(windows.test_cutoff)), 1).otherwise(0)).alias("v"),
    ).first()
    n = int(row["n"])
    if n == 0:
        raise WindowError("cannot compute time windows: the interactions table is empty")
    f, t, v = int(row["f"] or 0), int(row["t"] or 0), int(row["v"] or 0)
    return replace(
        windows,
        events=n,
        feature_share=f / n,
        train_share=(n - f - t) / n,
        test_share=t / n,
        valid_share=None if windows.valid_cutoff is None else v / n,
    )


def check_nonempty(windows: Windows) -> None:
    """WindowError naming the empty window (explicit dates outside the log, or a tiny per-user log)."""
    empty = [name for name, share in windows.window_shares().items() if share == 0]
    if empty:
        raise WindowError(
            f"the {' and the '.join(empty)} window{'s are' if len(empty) > 1 else ' is'} empty ({windows.summary()}); "
            "move windows.train_cutoff / windows.valid_cutoff / windows.test_cutoff inside the log, "
            "or use windows.mode=quantile"
        )


def feature_events(interactions: DataFrame, cutoff: int) -> DataFrame:
    """Events usable as features at ``cutoff``: ``ts <= cutoff`` (a filter, O(events), pushed into scans)."""
    return interactions.where(F.col("ts") <= F.lit(int(cutoff)))


def sample_window(windows: Windows) -> Column:
    """``'test'`` for ts > c2, ``'valid'`` for ts in (cv, c2] (with a valid window), ``'train'`` for the rest
    after c1, null for feature-window events."""
    ts = F.col("ts")
    window = F.when(ts > F.lit(windows.test_cutoff), F.lit(TEST))
    if windows.valid_cutoff is not None:
        window = window.when(ts > F.lit(windows.valid_cutoff), F.lit(VALID))
    return window.when(ts > F.lit(windows.train_cutoff), F.lit(TRAIN)).otherwise(F.lit(None).cast("string"))


def sample_events(interactions: DataFrame, windows: Windows) -> DataFrame:
    """Events after the train cutoff, with column ``window`` = ``train`` | ``valid`` | ``test``."""
    return interactions.where(F.col("ts") > F.lit(windows.train_cutoff)).withColumn("window", sample_window(windows))


def split_column(window: Column | str, settings: WindowSettings, seed: int) -> Column:
    """The split of a sample row: its window's name for the test window and a valid window of its own
    (``validation=window``); in the train window under ``validation=split``, ``valid`` with probability
    ``validation_fraction`` (hash of (user_id, item_id) or of user_id, see ``validation_by``), else
    ``train``. Needs columns ``user_id`` (and ``item_id`` for ``validation_by=row``). Deterministic per row."""
    window = F.col(window) if isinstance(window, str) else window
    if settings.validation == "window":
        return window
    keys = ["user_id"] if settings.validation_by == "user" else ["user_id", "item_id"]
    u = rand.uniform(seed, "validation", *keys)
    return (
        F.when(window == F.lit(TEST), F.lit(TEST))
        .when(u < F.lit(float(settings.validation_fraction)), F.lit(VALID))
        .otherwise(F.lit(TRAIN))
    )


def snapshot_of_split(split: Column | str, snapshots: tuple[str, ...] = (TRAIN, TEST)) -> Column:
    """Which feature snapshot serves a split: its own when ``snapshots`` (the windows' :attr:`Windows.snapshots`)
    has one of that name, else ``train`` (valid rows carved by hash read the train snapshot)."""
    split = F.col(split) if isinstance(split, str) else split
    out = F.when(split == F.lit(TEST), F.lit(TEST))
    if VALID in snapshots:
        out = out.when(split == F.lit(VALID), F.lit(VALID))
    return out.otherwise(F.lit(TRAIN))


def snapshot_cutoff(snapshot: Column | str, windows: Windows) -> Column:
    """The feature cutoff of a ``snapshot`` column's value (a CASE over the windows' snapshots)."""
    snapshot = F.col(snapshot) if isinstance(snapshot, str) else snapshot
    out = None
    for name in windows.snapshots:
        cut = F.lit(int(windows.cutoff(name)))
        out = F.when(snapshot == F.lit(name), cut) if out is None else out.when(snapshot == F.lit(name), cut)
    return out
