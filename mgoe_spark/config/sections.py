"""One settings dataclass per config section (``cfg.<section>``), with the section's defaults and docs.

The defaults are the values SPEC.md gives (the ``default`` profile). Each section's ``validate()`` holds the
checks that need only that section (the types are checked on loading, :mod:`mgoe_spark.config.loader`); the
checks that need two sections are in :mod:`mgoe_spark.config.tree`. Every random choice in the project reads
its seed from :attr:`mgoe_spark.config.MgoeConfig.seed` (stages derive their own sub-seeds with
:meth:`~mgoe_spark.config.MgoeConfig.sub_seed` so two stages never share a random stream by accident).
"""

from __future__ import annotations

import datetime as dt
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

from mgoe_spark.config.errors import ConfigError
from mgoe_spark.config.errors import require as _require
from mgoe_spark.config.models import MODELS


def _sizes_ok(sizes: list[int]) -> bool:
    """At least one layer size, every one >= 1."""
    return len(sizes) >= 1 and min(sizes) >= 1


@dataclass
class SparkSettings:
    """How the SparkSession is made (see :mod:`mgoe_spark.session`)."""

    master: str | None = None
    """``None``: spark-submit decides; when run directly, ``local[*]``."""
    app_name: str = "mgoe"
    conf: dict[str, str] = field(default_factory=dict)
    """Extra Spark conf, e.g. ``{"spark.sql.shuffle.partitions": "400"}``."""

    def validate(self) -> None:
        """Nothing to check beyond the types (Spark checks its own conf)."""


@dataclass
class TaskSettings:
    """The tasks, ordered by importance (the funnel). ``order[k]`` gets rank bit ``2**k`` (SPEC 4.1)."""

    order: list[str] = field(default_factory=lambda: ["click", "fav", "cart", "buy"])
    exposure: str | None = None
    """Name of an exposure/impression pseudo-task, if the log has one (Tenrec): samples are exposures."""

    def validate(self) -> None:
        tasks = self.order
        _require(1 <= len(tasks) <= 16, "tasks.order", "must name between 1 and 16 tasks")
        _require(len(set(tasks)) == len(tasks), "tasks.order", f"has a repeated task: {tasks}")
        if self.exposure is not None:
            _require(self.exposure not in tasks, "tasks.exposure", "must not also be in tasks.order")


InputFormat = Literal["taobao", "tenrec", "generic_csv", "generic_parquet"]
INPUT_FORMATS: tuple[str, ...] = typing.get_args(InputFormat)
"""The raw log formats ingest reads (``input.format``, ``mgoe ingest --format``)."""
OutputFormat = Literal["parquet", "delta"]
OUTPUT_FORMATS: tuple[str, ...] = typing.get_args(OutputFormat)
"""The table formats the stages write (``output.format``)."""
OBJECT_STORE_SCHEMES = ("s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs", "oss", "cos", "cosn")
"""URI schemes of object stores, where a directory rename is a copy and a delete (not atomic): Parquet output,
published by rename, is refused there."""


@dataclass
class InputSettings:
    """Where the raw multi-behavior log is and how to read it (SPEC 7)."""

    format: InputFormat = "taobao"
    path: str | None = None
    """``None``: the embedded default, data made by the synthetic generator."""
    behavior_map: dict[str, str] = field(
        default_factory=lambda: {"pv": "click", "fav": "fav", "cart": "cart", "buy": "buy"}
    )
    """Raw behavior value -> task name (taobao, generic with ``behavior_column``)."""
    user_column: str = "user_id"
    item_column: str = "item_id"
    category_column: str | None = None
    timestamp_column: str | None = "timestamp"
    """``None``: no timestamp; file order is time order (like Tenrec)."""
    timestamp_unit: Literal["epoch_seconds", "epoch_millis", "date"] = "epoch_seconds"
    date_format: str = "yyyy-MM-dd"
    behavior_column: str | None = "behavior"
    """Generic logs: the column holding the behavior (mapped by ``behavior_map``) ..."""
    task_columns: dict[str, str] = field(default_factory=dict)
    """... or one 0/1 column per task: ``{task_name: column}`` (then ``behavior_column`` must be null)."""
    csv_header: bool = True
    """Generic CSV: the first line of each file names the columns (lines equal to it are skipped)."""
    csv_columns: list[str] | None = None
    """Generic CSV without a header: the column names, in file order."""
    csv_delimiter: str = ","
    numeric_ids: bool = True
    """Reject rows whose user / item id is not a non-negative integer; ``false`` accepts any non-empty string."""
    check_rows: int = 1000
    """Wrong-format guard: ingest first parses the input's first ``check_rows`` records and, when the input
    has at least that many and more than ``quality.max_reject_fraction`` of them (headers aside) are rejected,
    stops with a one-line error before writing anything (a wrong ``--config`` would otherwise copy the whole
    input into ``rejects``). A smaller input is not checked this way (its rejects are few; the rejects table
    and the ingest gate judge it). ``0`` turns the guard off."""

    def validate(self) -> None:
        """The checks within the section; the ones against the task names are in :mod:`~mgoe_spark.config.tree`."""
        _require(self.check_rows >= 0, "input.check_rows", "must be >= 0 (0 turns the wrong-format guard off)")
        generic = self.format.startswith("generic")
        if self.reads_behavior_column:
            _require(bool(self.behavior_map), "input.behavior_map", "must map at least one raw behavior to a task")
        if generic:
            _require(
                (self.behavior_column is None) != (not self.task_columns),
                "input.behavior_column",
                "or input.task_columns must be set, not both (set behavior_column: null to use task_columns)",
            )
        if self.format == "generic_csv" and not self.csv_header:
            _require(
                bool(self.csv_columns), "input.csv_columns", "must name the columns when input.csv_header is false"
            )
        _require(len(self.csv_delimiter) == 1, "input.csv_delimiter", "must be a single character")

    @property
    def reads_behavior_column(self) -> bool:
        """Whether ``behavior_map`` is used: a behavior column is read (Tenrec has 0/1 task columns instead)."""
        return self.format == "taobao" or (self.format.startswith("generic") and self.behavior_column is not None)


@dataclass
class GeneratorSettings:
    """Synthetic multi-behavior log with planted structure (the embedded default data).

    The generative model is documented in :mod:`mgoe_spark.generate`.
    """

    users: int = 8_000
    items: int = 4_000
    events: int = 400_000
    """Number of first-task (click) events emitted; later tasks are added on top by the funnel."""
    user_groups: int = 10
    item_groups: int = 10
    preferred_groups: int = 2
    """How many item groups each user group prefers (drawn per user group, without repetition)."""
    affinity: float = 0.8
    """Probability that a click goes to one of the user group's preferred item groups (otherwise a
    uniformly drawn item group, which may also be a preferred one)."""
    popularity_exponent: float = 1.1
    """Zipf exponent of item popularity within an item group (a few very hot items)."""
    user_activity_exponent: float = 0.6
    """Zipf exponent of user activity (how many clicks a user makes); 0 = every user equally active."""
    repeat_fraction: float = 0.2
    """Share of clicks that go to one of the user's few personal items (repeat interactions)."""
    personal_items: int = 5
    """Number of personal items per user that ``repeat_fraction`` of its clicks revisit."""
    funnel_rates: list[float] = field(default_factory=lambda: [0.06, 0.09, 0.35])
    """Base conversion rate into task k+1 (fav, cart from click; buy from cart): the mean over group
    pairs of the rate, before the per-user propensity."""
    funnel_parents: list[int] | None = None
    """Index (in tasks.order) of the task each later task converts from, one per later task.
    ``None``: the last task converts from the one before it (buy from cart) when there are 3+ tasks,
    every other task from the first one (fav, cart from click)."""
    conversion_spread: float = 4.0
    """How much conversion depends on (user group, item group): rates are scaled by a factor in
    [1/spread, spread] drawn per group pair and task."""
    task_affinity: float = 4.0
    """Partly different affinities per task: each user group and later task has its own ``preferred_groups``
    item groups (drawn independently of the click's) on which that task's conversion rate is ``task_affinity``
    times higher (normalised to mean 1 over item groups); 1 = every task follows the click's affinity. The
    default matches ``conversion_spread``'s scale (what is bought is not simply what is clicked most)."""
    propensity_sigma: float = 0.5
    """Per-user conversion propensity: rates are scaled by a mean-1 log-normal with this sigma."""
    conversion_segments: int = 4
    """User segments for conversion (a hash of the user, independent of the click's user groups): what a
    price band or a life stage does to buying, across the click communities."""
    conversion_tiers: int = 4
    """Item tiers for conversion (a hash of the item, independent of the item groups): price / brand tiers
    that cut across what is clicked together."""
    segment_sigma: float = 0.5
    """Strength of the (user segment, item tier) structure: every later task and (segment, tier) cell gets a
    mean-1 log-normal conversion factor with this sigma, drawn per task (a segment that favors a tier need not
    buy it). Models who converts on what by traits the click graph does not group. 0 = off."""
    item_quality_sigma: float = 0.8
    """Per-item conversion quality: a mean-1 log-normal factor per item with this sigma, shared by every later
    task and independent of popularity (some hot items are clicked often and bought rarely, some niche
    items convert well). 0 = off."""
    user_taste_sigma: float = 0.5
    """Per-user preferences for what they convert on: a mean-1 log-normal factor per (later task, user, item
    tier) with this sigma (one user buys cheap, another premium, whatever they click). 0 = off."""
    conversion_delay_s: float = 3600.0
    """Mean delay (seconds, exponential) between a task's event and the conversion into the next one."""
    hidden_click_fraction: float = 0.05
    """Conversions on pairs with no logged click: this many extra clicks are drawn (as a share of
    ``events``) whose conversions are emitted but the click itself is not."""
    categories_per_group: int = 3
    """Item categories per item group (category_id in the log)."""
    category_noise: float = 0.05
    """Share of items whose category belongs to a random item group instead of their own."""
    days: int = 9
    start: str = "2017-11-25"
    """First day (UTC) of the log; events lie in [start, start + days)."""
    partitions: int = 8
    """Spark partitions of the generated log (= number of CSV files)."""

    def validate(self) -> None:
        """The checks within the section; the funnel's length per task is checked in :mod:`~mgoe_spark.config.tree`."""
        for key in ("users", "items", "events", "user_groups", "item_groups", "days", "partitions"):
            _require(getattr(self, key) >= 1, f"generator.{key}", "must be >= 1")
        _require(self.user_groups <= self.users, "generator.user_groups", "must be <= generator.users")
        _require(self.item_groups <= self.items, "generator.item_groups", "must be <= generator.items")
        _require(0.0 <= self.affinity <= 1.0, "generator.affinity", "must be in [0, 1]")
        _require(self.popularity_exponent > 0, "generator.popularity_exponent", "must be > 0")
        _require(self.conversion_spread >= 1, "generator.conversion_spread", "must be >= 1")
        _require(self.task_affinity >= 1, "generator.task_affinity", "must be >= 1 (1 = no task-specific affinity)")
        for key in ("preferred_groups", "personal_items", "categories_per_group"):
            _require(getattr(self, key) >= 1, f"generator.{key}", "must be >= 1")
        _require(
            self.preferred_groups <= self.item_groups, "generator.preferred_groups", "must be <= generator.item_groups"
        )
        for key in ("users", "items"):
            _require(getattr(self, key) <= 1_000_000_000, f"generator.{key}", "must be <= 1,000,000,000")
        _require(self.user_activity_exponent >= 0, "generator.user_activity_exponent", "must be >= 0")
        for key in ("propensity_sigma", "segment_sigma", "item_quality_sigma", "user_taste_sigma"):
            _require(getattr(self, key) >= 0, f"generator.{key}", "must be >= 0 (0 = off)")
        for key in ("conversion_segments", "conversion_tiers"):
            _require(getattr(self, key) >= 1, f"generator.{key}", "must be >= 1")
        _require(self.conversion_delay_s > 0, "generator.conversion_delay_s", "must be > 0")
        for key in ("repeat_fraction", "hidden_click_fraction", "category_noise"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"generator.{key}", "must be in [0, 1]")
        try:
            dt.date.fromisoformat(self.start)
        except ValueError:
            raise ConfigError(f"config key 'generator.start' must be a date YYYY-MM-DD, got {self.start!r}") from None


@dataclass
class ScoreSettings:
    """Merging preference score (SPEC 4.1, Eq 6-7)."""

    beta: float = 1.0
    binary: bool = True
    """``True`` (the default): every observed pair scores 1 whatever its tasks, so the k-means node vectors are
    rows of the binary graph of all behaviors (MacGNN's; with ``weights.enabled=false`` its unweighted
    k-means). ``False``: Eq 6-7's merging preference score ``s = ((rho + 1)^beta - 1) / beta``, which weighs a
    buy 8x a click in the node vectors. Issue 27 measured the merging scores helping on none of its three
    logs and costing 0.0135 +- 0.0010 (10/10 seeds) mean test AUC on the generator and 0.0094 +- 0.0037 on
    RetailRocket (Taobao fav / cart / buy: +0.0025 +- 0.0014, under 2 SE), so they are an option: the table
    variant ``mgoe_pref_scores``. Score edges (``edges.edge_matrix=score``) and preference weights read the
    scores as this key sets them."""

    def validate(self) -> None:
        _require(math.isfinite(self.beta), "scores.beta", "must be a finite number")


@dataclass
class SketchSettings:
    """Node vectors: sketched rows of S S^T and S^T S (SPEC 4.2)."""

    dim: int = 64
    normalize: bool = True
    """L2-normalize the sketched rows before clustering (zero rows stay zero)."""
    distribution: Literal["gaussian", "rademacher"] = "gaussian"
    """Entries of the hash-generated projection Omega: N(0, 1/r) or +-1/sqrt(r)."""

    def validate(self) -> None:
        _require(self.dim >= 1, "sketch.dim", "must be >= 1")


@dataclass
class WeightSettings:
    """Preference-based node weights (SPEC 4.3, Eq 8)."""

    enabled: bool = False
    """Eq 8's preference weights on the k-means nodes; ``False`` (the default): every weight is 1, and the
    2-hop strength sums are not computed. Issue 27 measured the weights helping on none of its three logs
    (generator, Taobao fav / cart / buy, RetailRocket; ``bench/results/model_quality_ablation_events_window15.txt``),
    so they are an option: ``true`` builds the ``mgoe_pref`` table variant."""
    w_high: float = 2.0
    w_low: float = 0.5
    b: float | None = None
    """``None``: the median of the non-zero off-diagonal entries (approximate quantile)."""
    q_high: float = 0.75
    q_low: float = 0.25
    neighbor_cap: int = 200
    """At most D sampled users (items) per item (user) for the 2-hop sums: an estimate, bounded work."""
    quantile_rel_error: float = 0.001
    """Relative rank error of the approximate quantiles (b, theta_low, theta_high); 0 = exact (small data)."""

    def validate(self) -> None:
        _require(0 < self.q_low <= self.q_high < 1, "weights.q_low", "and weights.q_high need 0 < q_low <= q_high < 1")
        _require(self.neighbor_cap >= 1, "weights.neighbor_cap", "must be >= 1")
        _require(
            self.w_high > 0 and self.w_low > 0, "weights.w_high", "and weights.w_low must be > 0 (k-means weights)"
        )
        _require(self.b is None or math.isfinite(self.b), "weights.b", "must be a finite number or null")
        _require(
            0 <= self.quantile_rel_error < 1,
            "weights.quantile_rel_error",
            "must be in [0, 1) (0 = exact, small data)",
        )


@dataclass
class KMeansSettings:
    """Weighted mini-batch k-means with FAISS on partitions (SPEC 4.4, Eq 9)."""

    k_user: int = 20
    k_item: int = 20
    mode: Literal["minibatch", "full"] = "minibatch"
    """``minibatch``: weighted Sculley steps on ``batch_fraction`` of the nodes, stops when the smoothed batch
    inertia has not improved (by a relative ``tol``) for ``patience`` steps. ``full``: Lloyd steps over all
    nodes, stops when the relative centroid shift < ``tol``. Mini-batch is the default because on the
    generator's default data (bench/results/kmeans_pipeline.json) it stops on both sides (16 / 19 iterations)
    in 0.44x / 0.60x the time of full mode, which ran 30 / 29 (users hit max_iter), at +1.1% / +1.7% inertia."""
    max_iter: int = 30
    tol: float = 1e-4
    batch_fraction: float = 0.2
    patience: int = 3
    init_samples_per_center: int = 256
    faiss_threads: int | None = None
    """``None``: ``spark.task.cpus``."""
    block_rows: int = 65_536
    """Nodes packed per cached block (one Arrow value per block per iteration; bounds task memory)."""
    warm_start: bool = True
    """Start a run's fit from the latest earlier run's centroids and match ids to them, when they have the same
    k, r and vector-space fingerprint (:mod:`mgoe_spark.kmeans.fingerprint`); otherwise a cold fit."""
    engine: Literal["auto", "jobs", "resident"] = "auto"
    """``auto`` (the default) = ``jobs``: one Spark job per iteration over cached blocks. It uses Spark's own
    channels only, so it inherits ``spark.authenticate`` and Spark's network encryption, and Spark's task retry
    covers lost executors; it works on any cluster. ``resident`` (opt-in, faster: bench/results/kmeans_engines_*):
    one Spark job per fit whose tasks keep the vectors in the Python workers and exchange centroids and sums
    with the driver over a socket of its own (bound to the driver's address, authenticated binary frames of
    numbers, never pickles, timeouts on every wait, unencrypted); it falls back to ``jobs`` (one log line,
    recorded in kmeans_stats) where it cannot run (dynamic allocation, speculation, too few slots) or stops. All
    engines give the same fit for the same input and seed."""
    exchange_timeout: float = 300.0
    """Seconds the resident engine waits, at most, for any connect, reply or the end of its job before it
    cancels its job and falls back to ``jobs`` (a stalled task, a lost host, a firewalled port)."""

    def validate(self) -> None:
        _require(self.k_user >= 1, "kmeans.k_user", "must be >= 1")
        _require(self.k_item >= 1, "kmeans.k_item", "must be >= 1")
        _require(self.max_iter >= 1, "kmeans.max_iter", "must be >= 1")
        _require(0 < self.batch_fraction <= 1, "kmeans.batch_fraction", "must be in (0, 1]")
        _require(self.tol >= 0, "kmeans.tol", "must be >= 0")
        _require(self.init_samples_per_center >= 1, "kmeans.init_samples_per_center", "must be >= 1")
        _require(self.faiss_threads is None or self.faiss_threads >= 1, "kmeans.faiss_threads", "must be >= 1 or null")
        _require(self.block_rows >= 1, "kmeans.block_rows", "must be >= 1")
        _require(self.patience >= 1, "kmeans.patience", "must be >= 1")
        _require(self.exchange_timeout > 0, "kmeans.exchange_timeout", "must be > 0 (seconds)")


@dataclass
class WindowSettings:
    """Feature cutoffs and sample windows (SPEC 3)."""

    mode: Literal["quantile", "dates"] = "quantile"
    q1: float = 0.8
    q2: float = 0.9
    train_cutoff: str | None = None
    """``mode=dates``: last day (``YYYY-MM-DD``, inclusive, UTC) or instant (``YYYY-MM-DDTHH:MM:SS``) of the
    training feature window; train / valid samples come after it, up to ``test_cutoff``."""
    test_cutoff: str | None = None
    """``mode=dates``: end of the test feature window; test samples come after it."""
    validation: Literal["split", "window"] = "window"
    """Where validation rows come from (SPEC 3): ``window`` (default) makes the last ``validation_fraction``
    of the train window a valid window with a feature snapshot of its own (cutoff cv, ``q2 -
    validation_fraction * (q2 - q1)`` in quantile mode, ``valid_cutoff`` in dates mode), so selection sees
    the same shift as the test split; it costs one more snapshot of every feature table. ``split`` carves
    ``validation_fraction`` of the train window's rows by a seeded hash, and they read the train snapshot's
    features (selection then favors what memorizes that snapshot). Measured on the two real logs, 5 seeds,
    test AUC of the window form (0.15) minus the split form (0.1), paired: Taobao fav / cart / buy MGOE
    +0.029 +- 0.003, MacGNN-style +0.013, MMoE -0.004, MMoE on MGOE's inputs +0.041; RetailRocket MGOE
    -0.004 +- 0.002, MacGNN-style -0.009, MMoE +0.003, MMoE full -0.002 (``bench/results/
    model_quality_*_window15.json``; the fraction 0.3 cost RetailRocket 0.011-0.022: fewer train rows)."""
    validation_fraction: float = 0.15
    validation_by: Literal["row", "user"] = "row"
    """How ``validation=split`` carves validation from the train window (seeded hash): ``row`` hashes the
    (user, item) pair, so validation users also have training rows (like the test split); ``user`` holds
    out whole users."""
    valid_cutoff: str | None = None
    """``mode=dates`` with ``validation=window``: end of the valid feature window (between ``train_cutoff``
    and ``test_cutoff``); valid samples come after it, up to ``test_cutoff``."""
    quantile_rel_error: float = 0.0001
    """Relative error of the approximate quantiles of ``ts`` (0 = exact, a full sort)."""

    def validate(self) -> None:
        _require(0 < self.q1 < self.q2 < 1, "windows.q1", "and windows.q2 need 0 < q1 < q2 < 1")
        _require(0 <= self.validation_fraction < 1, "windows.validation_fraction", "must be in [0, 1)")
        _require(0 <= self.quantile_rel_error < 0.1, "windows.quantile_rel_error", "must be in [0, 0.1)")
        if self.validation == "window":
            _require(
                self.validation_fraction > 0,
                "windows.validation_fraction",
                "must be > 0 with windows.validation=window (the share of the train window held out)",
            )
        if self.mode == "dates":
            _require(self.train_cutoff is not None, "windows.train_cutoff", "is required when windows.mode=dates")
            _require(self.test_cutoff is not None, "windows.test_cutoff", "is required when windows.mode=dates")
            _require(
                self.validation != "window" or self.valid_cutoff is not None,
                "windows.valid_cutoff",
                "is required when windows.mode=dates and windows.validation=window",
            )


@dataclass
class EdgeSettings:
    """Macro edges (SPEC 4.5, Eq 10)."""

    hops: int = 2
    edge_matrix: Literal["score", "binary"] = "binary"
    """The matrix S the macro edges multiply (Eq 10): ``binary`` (the default) = 1 for every (user, item) pair
    the task has, ``score`` = the merging preference score s_ui (Eq 6-7). Issue 27 measured the score edges
    helping on none of its three logs under its other defaults (generator +0.0002 ± 0.0006 over 10 seeds,
    ``bench/results/model_quality_ablation_events_defaults27.txt``), so they are an option: ``score`` builds the
    ``mgoe_score_edges`` table variant."""

    def validate(self) -> None:
        _require(self.hops >= 1, "edges.hops", "must be >= 1")


@dataclass
class NeighborSettings:
    """Recent micro neighbors (SPEC 4.6)."""

    length: int = 20

    def validate(self) -> None:
        _require(self.length >= 1, "neighbors.length", "must be >= 1")


SampleSpace = Literal["events", "exposures", "pairs"]
SAMPLE_SPACES: tuple[str, ...] = typing.get_args(SampleSpace)
"""The sample spaces of SPEC 5 (``samples.space``)."""
DEFAULT_NEGATIVES_PER_POSITIVE = 7
"""``samples.negatives_per_positive`` of the ``pairs`` space when the key is not set."""


@dataclass
class SampleSettings:
    """Samples (SPEC 5): which rows the model is trained and evaluated on."""

    space: Literal["auto", "events", "exposures", "pairs"] = "auto"
    """``events``: each behavior event of a sample window is one row, labelled one-hot by its own task, no
    negatives (the paper's Taobao protocol). ``exposures``: each exposure is a row, labelled by the behaviors
    on it; unclicked exposures are the negatives (the paper's Tenrec protocol; needs ``tasks.exposure``).
    ``pairs``: each observed (user, item) pair of a window is one row with multi-hot labels, plus seeded
    random negatives (a ranking protocol, not the paper's). ``auto``: ``exposures`` when ``tasks.exposure`` is
    set, else ``events`` (:meth:`resolve`)."""
    negatives_per_positive: int | None = None
    """``pairs`` only: random unobserved items per observed (user, item) pair of a sample window, added as
    all-zero-label rows (0 = none). ``None``: 7 in ``pairs`` (a click rate near 1/8 when nearly every observed
    pair is a click), 0 otherwise; a value above 0 in another space is an error."""
    negatives_per_user: int = 0
    """``pairs`` and ``exposures``: random unobserved items per (user, sample window) added on top (0 = none)."""
    negative_sampling: Literal["uniform", "popularity"] = "uniform"
    """How negatives are drawn: uniform over item ids, or in proportion to the item's sample-window pairs."""
    cold_start: Literal["keep", "drop"] = "keep"
    """Rows whose user or item has no feature-window history: keep them (flagged) or drop them."""

    def validate(self) -> None:
        _require(self.negatives_per_user >= 0, "samples.negatives_per_user", "must be >= 0")
        _require(
            self.negatives_per_positive is None or self.negatives_per_positive >= 0,
            "samples.negatives_per_positive",
            "must be >= 0 (or null: 7 in the pairs space, 0 otherwise)",
        )

    def resolve(self, exposure: str | None) -> str:
        """The sample space a table gets: ``space``, or for ``auto`` ``exposures`` when the log has an
        exposure pseudo-task (``tasks.exposure``) and ``events`` otherwise."""
        if self.space != "auto":
            return self.space
        return "exposures" if exposure is not None else "events"

    def per_positive(self, space: str) -> int:
        """Negatives per observed pair in ``space``: the key's value, or its default (7 in ``pairs``)."""
        if self.negatives_per_positive is not None:
            return self.negatives_per_positive
        return DEFAULT_NEGATIVES_PER_POSITIVE if space == "pairs" else 0


@dataclass
class OutputSettings:
    """Where and how tables are written (SPEC 8)."""

    root: str = "mgoe_output"
    format: OutputFormat = "parquet"
    row_group_rows: int = 65_536
    lease_seconds: int = 120
    """A writer renews its lease on a run date every ``lease_seconds / 4``; one not renewed for this long
    belongs to a dead run and the next writer of the date takes it over (:mod:`mgoe_spark.core.lease`)."""
    storage_options: dict[str, str] = field(default_factory=dict)
    """Object-store settings for the trainer's reader and delta-rs (e.g. ``endpoint_url``, ``region``,
    ``allow_http``); credentials come from the usual environment variables (``AWS_ACCESS_KEY_ID`` ...)."""

    def validate(self) -> None:
        _require(self.row_group_rows >= 1, "output.row_group_rows", "must be >= 1")
        _require(self.lease_seconds >= 2, "output.lease_seconds", "must be >= 2")
        scheme = self.root.split("://", 1)[0].lower() if "://" in self.root else ""
        _require(
            not (self.format == "parquet" and scheme in OBJECT_STORE_SCHEMES),
            "output.format",
            f"parquet cannot be published atomically on an object store ({scheme}://, a rename is a copy and a "
            "delete); use output.format=delta there",
        )


@dataclass
class TrainSettings:
    """The PyTorch trainer (SPEC 6)."""

    models: list[str] = field(default_factory=lambda: ["mgoe", "mmoe"])
    embed_dim: int = 10
    batch_size: int = 1024
    lr: float = 0.005
    weight_decay: float = 1e-5
    l1: float = 0.0
    tau: float = 1.3
    attention: Literal["logit", "neighbors", "off"] = "off"
    """Macro attention: ``logit`` = softmax(log1p(e)/tau + q.k/sqrt(h)); ``neighbors`` = the literal product of
    the two softmaxes (Eq 14-16, mutes the channel ~K-fold); ``off`` = edge weights only (MacGNN's code), the
    default: issue 27 measured the q.k term helping on none of its three logs (its ablation row)."""
    adjust_form: Literal["log_macro", "log_count", "literal", "tower"] = "log_macro"
    """Eq 22: ``log_macro`` = gamma[t, c(i)] * log(1 + K_I T); ``log_count`` = gamma[t, c(i)] * log(1 + n), n =
    the user's task-t items in c(i) (T times the recent list's count); ``literal`` = gamma_t * T; ``tower`` =
    the log-lifts fed to every tower."""
    own_macro: bool = True
    """Eq 11: the user's and item's own task-specific macro embeddings in each task's bottom input."""
    recent_attention: bool = False
    """Eq 18: attention weights for the recent micro neighbors against the target (default: their sum)."""
    attention_norm: bool = False
    """Macro attention (``logit`` / ``neighbors``) on L2-normalized queries and keys with a learned temperature
    per channel and task, ``exp(log_scale) * cos(W_Q e_m, W_K e_v)``, ``log_scale`` from ``log sqrt(d_h)``:
    the q.k term has std ~1 at init (the plain ``q.k/sqrt(d_h)`` is ~0.004 against edge logits of 0.5-9, so
    ``attention=off`` ties it). No effect with ``attention=off``. Ablation: ``false`` (default until measured,
    issue 27 item 6)."""
    attention_scale_init: float | None = None
    """With ``attention_norm``: the learned temperature's start. ``None``: ``sqrt(d_h)``, log-parametrized (std ~1
    at init); a number ``b0 >= 0``: the temperature itself is learned from ``b0``. ``0`` starts exactly as
    ``attention=off`` (zero-init, as ReZero does for residual branches): the q.k term grows only as far as its
    gradient pays, so a log too small to learn it loses nothing. Ablation: ``None``."""
    attention_key: Literal["id", "macro"] = "id"
    """What the macro attention (``logit`` / ``neighbors``) compares the macro neighbors with: ``id`` = the
    target's micro embedding e_u / e_i (Eq 16's ``W_K e_v``); ``macro`` = the target's own task-specific macro
    embedding ``M^t[c(v)]`` (Eq 11), a learned macro-to-macro affinity that exists for nodes the training rows
    never saw (about half of the test users and items of both real logs; their e_v is still its random
    init) and is 0 for a node with no macro node (its scores are 0: the edge weights alone). Ablation: ``id``."""
    gate_input: Literal["micro", "full", "off"] = "off"
    """Eq 12 bottom gates: ``micro`` = softmax(W^t [e_u, e_i]) (a near-constant mixture at Xavier scale);
    ``full`` = softmax(W^t [e_u, e_i, MGE^1..MGE^T]), Eq 12's full input (micro embeddings and the aggregated
    macro neighbors); ``off`` (the default) = no gates, ``x^t = MGE^t``: each task reads its own macro graph
    expert, no cross-task mixing. Issue 27 measured the ``micro`` gates helping on none of its three logs
    under its final defaults (with - without over 10 seeds: generator -0.0024 +- 0.0035, Taobao fav / cart /
    buy +0.0000 +- 0.0028, RetailRocket +0.0026 +- 0.0034), so they are an option with their ablation row."""
    lookup_norm: Literal["macros", "tasks"] = "macros"
    """Eq 22's task lookup (SPEC 4.7): ``macros`` = the table's share of u's task-t items in each item macro;
    ``tasks`` = n^t / sum_t' n^t' (how often u's interactions with the target's macro node are task t),
    computed in the trainer from the table's share and the recent lists (n^t = T^t * min(N^t, L), exact for
    users with at most L task-t items). Ablation: ``macros`` (default until measured)."""
    macro_neighbors: Literal["all", "edges"] = "all"
    """Eq 15's macro neighbors N(v) of a node in each (side, hop) channel: ``all`` = every one of the K macro
    nodes, zero-edge ones at logit log1p(0) / tau = 0 (MacGNN's code: a node with a few edges gets an almost
    uniform mixture of all K); ``edges`` = only the macro nodes with a non-zero edge (the paper's sum over
    N(v)); a channel where the node has none contributes z = 0."""
    neighbor_input: Literal["task", "all"] = "task"
    """Eq 18-19: the recent micro neighbors in task t's bottom input. ``task`` = r^t_u, r^t_i, the task's own
    (the paper's Eq 19); ``all`` = every task's, r^1_u..r^T_u and r^1_i..r^T_i (2Td wide), so the buy task
    reads the user's recent carts and views as MMoE on MGOE's inputs does. Ablation: ``task``."""
    macgnn_own_macro: bool = False
    """The MacGNN-style baseline (``macgnn``) also reads the user's and item's own macro embeddings (Eq 11,
    from its one shared table), as MGOE does: separates that input from MGOE's architecture. Ablation: false."""
    epochs: int = 10
    patience: int = 2
    """Early stopping: stop after this many validation checks in a row without a better valid mean AUC, i.e.
    epochs when ``eval_every`` is ``None``, checks (every ``eval_every`` steps and each epoch's end) otherwise."""
    eval_every: int | None = None
    """Validate (mean AUC on the valid split, one pass over it) every this many optimizer steps, counted over
    all epochs, and at each epoch's end; the best check is checkpointed. ``None``: once per epoch."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 2
    shuffle_buffer: int = 16_384
    head_dim: int | None = None
    """Attention size d_h of the macro graph experts; ``None``: ``embed_dim``."""
    macro_out: int | None = None
    """Output size of each macro graph expert channel; ``None``: ``embed_dim``."""
    activation: Literal["dice", "relu"] = "dice"
    """Expert activation (Dice as in MacGNN, or ReLU)."""
    expert_sizes: list[int] = field(default_factory=lambda: [200, 80])
    mgoe_expert_sizes: list[int] | None = None
    """MGOE's (and its ablations') expert sizes; ``None``: ``expert_sizes``. [128, 80] measured 1.20x MMoE's
    multiply-adds at no AUC cost on the planted tables (model/README.md); not yet checked on real logs."""
    tower_hidden: int = 40
    shared_experts: int = 2
    task_experts: int = 1
    cascade: bool = False
    """Eq 21's cascading readout ``o_t = tower_t([h^t, lambda_t o_{t-1}])``; ``false`` (the default): lambda = 0,
    every tower reads its own task's expert output only (the model ``mgoe_no_cascade`` forces it off). Issue 27
    measured the cascade helping on none of its three logs (its ablation row), so it is an option."""
    lambda_init: float = 1.0
    """Initial cascade weight lambda_t (Eq 21)."""
    gamma_init: float = 0.0
    """Initial macro task adjustment weight gamma (Eq 22). 0: training starts from the unadjusted logits
    (measured on the planted table: init 1 cost 0.009 mean AUC, bench/results/model_ablation.json)."""
    mmoe_experts: int | None = None
    """``None``: shared_experts + tasks * task_experts (as many experts as MGOE and PLE)."""
    grec_experts: int = 8
    grec_top_k: int = 2
    grec_noise: float = 1.0
    """GRec noisy top-k: scale of the learned routing noise in training (0 = none)."""
    grec_balance: float = 0.01
    """GRec: weight of the load-balancing loss."""
    dropout: float = 0.0
    """Dropout on every hidden unit of every model's experts and towers, in training (FuxiCTR's net_dropout)."""
    id_dropout: float = 0.0
    """Training only: each row's own user and item id become the padding id with this probability (the row
    is then scored from its macro and neighbor features, as a cold-start row is)."""
    task_weights: list[float] = field(default_factory=list)
    """Per-task BCE weights (Eq 23); empty: all 1."""
    eval_batch_size: int = 8192
    loader_workers: int = 0
    """DataLoader worker processes (row groups are sharded across them); 0: read in the training process."""
    max_steps_per_epoch: int | None = None
    """Cap on optimizer steps per epoch (smoke tests, benchmarks); ``None``: a full pass."""
    checkpoint_dir: str | None = None
    """Where best checkpoints go; ``None``: a ``checkpoints`` folder next to the report (or a temp dir)."""
    shared_expert_input: Literal["task", "mean"] = "mean"
    """MGOE's fusion: shared experts run once on the task-averaged input (``mean``) or on each task's input
    (``task``, as CGC / PLE: twice the expert multiply-adds). Measured on the trainer's planted table
    (3 seeds): ``mean`` 0.7375 +- 0.0051 mean AUC, ``task`` 0.7190 +- 0.0126, so ``mean`` stays the default."""
    sparse_embeddings: bool = True
    """Id tables with sparse gradients and a row-wise optimizer; ``false``: the dense reference (dense
    gradients, one Adam with weight decay over every row at every step: cost grows with the vocabulary)."""
    sparse_optimizer: Literal["adam", "rowwise_adagrad"] = "adam"
    """Optimizer of the id embedding tables, which get sparse gradients (only looked-up rows are updated and
    decayed): ``adam`` (lazy Adam, two moments per coordinate) or ``rowwise_adagrad`` (one float per row)."""
    sparse_lr: float | None = None
    """Learning rate of the id tables; ``None``: ``train.lr`` (row-wise Adagrad wants a larger one, ~0.05)."""
    shuffle_row_groups: int = 4
    """Row groups decoded and interleaved per shuffle window (memory: this many row groups per loader)."""
    nproc: int = 1
    """Data-parallel training processes (``mgoe train --nproc N``; torchrun sets its own)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where training runs; ``cuda`` needs a CUDA build of torch and a GPU."""
    dist_timeout_s: float = 300.0
    """Seconds a collective waits for the other ranks before the run fails (a killed rank, a hang)."""

    def validate(self) -> None:
        """The checks within the section (``task_weights`` against the tasks is in :mod:`~mgoe_spark.config.tree`)."""
        _require(self.embed_dim >= 1 and self.batch_size >= 1, "train.embed_dim", "and train.batch_size must be >= 1")
        _require(self.tau > 0, "train.tau", "must be > 0")
        scale_ok = self.attention_scale_init is None or self.attention_scale_init >= 0
        _require(scale_ok, "train.attention_scale_init", "must be >= 0 (or null: sqrt(d_h))")
        _require(0 <= self.dropout < 1, "train.dropout", "must be in [0, 1)")
        _require(0 <= self.id_dropout < 1, "train.id_dropout", "must be in [0, 1)")
        _require(len(self.seeds) >= 1, "train.seeds", "needs at least one seed")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(self.weight_decay >= 0 and self.l1 >= 0, "train.weight_decay", "and train.l1 must be >= 0")
        _require(self.epochs >= 1 and self.patience >= 1, "train.epochs", "and train.patience must be >= 1")
        every_ok = self.eval_every is None or self.eval_every >= 1
        _require(every_ok, "train.eval_every", "must be >= 1 (or null: once per epoch)")
        _require(self.threads >= 1, "train.threads", "must be >= 1")
        _require(self.shuffle_buffer >= 0, "train.shuffle_buffer", "must be >= 0")
        _require(self.shuffle_row_groups >= 1, "train.shuffle_row_groups", "must be >= 1")
        _require(
            self.nproc >= 1 and self.dist_timeout_s > 0, "train.nproc", "must be >= 1 (and train.dist_timeout_s > 0)"
        )
        _require(self.sparse_lr is None or self.sparse_lr > 0, "train.sparse_lr", "must be > 0")
        _require(_sizes_ok(self.expert_sizes), "train.expert_sizes", "needs sizes >= 1")
        _require(
            self.mgoe_expert_sizes is None or _sizes_ok(self.mgoe_expert_sizes),
            "train.mgoe_expert_sizes",
            "needs sizes >= 1 (or null: expert_sizes)",
        )
        _require(self.tower_hidden >= 1, "train.tower_hidden", "must be >= 1")
        _require(self.shared_experts >= 0 and self.task_experts >= 0, "train.shared_experts", "and task_experts >= 0")
        _require(
            self.shared_experts + self.task_experts >= 1, "train.shared_experts", "+ train.task_experts must be >= 1"
        )
        _require(1 <= self.grec_top_k <= self.grec_experts, "train.grec_top_k", "must be in 1..train.grec_experts")
        _require(self.eval_batch_size >= 1 and self.loader_workers >= 0, "train.eval_batch_size", "must be >= 1")
        unknown = [m for m in self.models if m not in MODELS]
        _require(not unknown, "train.models", f"names unknown models {unknown}; allowed: {sorted(MODELS)}")


@dataclass
class QualitySettings:
    """Data-quality gates between stages (``jobs/quality.py``, the Airflow DAG)."""

    max_reject_fraction: float = 0.05
    """Ingest gate: at most this fraction of input rows may be rejected as malformed."""
    min_rows: int = 1
    """Every checked table must have at least this many rows in the run date's partition."""

    def validate(self) -> None:
        _require(0 <= self.max_reject_fraction <= 1, "quality.max_reject_fraction", "must be in [0, 1]")
        _require(self.min_rows >= 0, "quality.min_rows", "must be >= 0")
