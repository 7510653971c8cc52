"""Synthetic multi-behavior log with planted macro structure (the embedded default data).

The log looks like Taobao UserBehavior (``user_id,item_id,category_id,behavior,ts``) so it goes through
the real ingestion path, but who does what is driven by planted user groups and item groups, which the
ground-truth tables record. A model that learns the macro structure (MGOE's macro nodes) can exploit it
for every task, not only for clicks.

Generative model
----------------
Notation: ``g = cfg.generator``, seed ``s = cfg.sub_seed("generator")``; every random number below is a
hash of (s, a salt, key columns) via :mod:`mgoe_spark.core.rand`, so the output does not depend on how rows are
split into partitions. Tasks ``t_0, ..., t_{T-1}`` are ``cfg.tasks.order`` (``t_0`` is the click).

*Users.* ``U = g.users`` users with index ``a = 0..U-1``. User ``a`` is in user group ``a mod G_U``
(``G_U = g.user_groups``) and has a conversion propensity ``p_a = exp(sigma z_a - sigma^2/2)``,
``z_a ~ N(0, 1)``, ``sigma = g.propensity_sigma`` (log-normal with mean 1).

*Items.* ``I = g.items`` items with index ``j = 0..I-1``. Item ``j`` is in item group ``h = j mod G_I``
and has popularity rank ``r = j div G_I + 1`` within its group (``n_h = ceil((I - h) / G_I)`` items).
Its category is one of ``g.categories_per_group`` categories of its group, except that a share
``g.category_noise`` of items get a category of a uniformly drawn group.

*Preferences.* Each user group ``c`` prefers ``P = g.preferred_groups`` distinct item groups
``pref(c, 0..P-1)`` (a seeded permutation on the driver: a ``G_U x P`` table).

*Clicks.* Row ``e = 0..N+H-1`` of ``spark.range`` is one click, ``N = g.events``,
``H = round(N * g.hidden_click_fraction)``:

1. the user: rank ``~ Zipf(g.user_activity_exponent)`` over ``1..U``, ``a = rank - 1`` (heavy-tailed
   activity, every user group equally active on average);
2. the item key: with probability ``g.repeat_fraction`` the click revisits one of the user's
   ``g.personal_items`` personal items, i.e. steps 3-4 draw their randomness from (a, slot) instead of e
   (so the same user clicks the same items again, with the same group preferences);
3. the item group: with probability ``g.affinity`` one of the ``P`` preferred groups of the user's group
   (uniformly), otherwise a uniformly drawn group among all ``G_I``. So the share of clicks landing in a
   preferred group is ``affinity + (1 - affinity) * P / G_I``;
4. the item: rank ``~ Zipf(g.popularity_exponent)`` within the group's ``n_h`` items, so a few items
   (rank 1 of each group) are very hot;
5. the time: ``ts = start + floor(u * days * 86400)``, uniform over ``[start, start + days)`` (UTC).

Rows ``e >= N`` are *hidden* clicks: their conversions are emitted but the click itself is not, so a
share of roughly ``hidden_click_fraction`` of later-task events lies on pairs without a logged click.

*Funnel.* Task ``t_k`` (k >= 1) converts from its parent task ``t_{q(k)}`` (``g.funnel_parents``; default
fav, cart from click and buy from cart). For click row e with user ``a`` (group c) and item group h::

    rate_k(c, h, a) = min(1, g.funnel_rates[k-1] * f_k(c, h) * p_a)
    f_k(c, h)       = spread ** (2 v_k(c, h) - 1) / m,   v_k(c, h) ~ U[0, 1) per group pair and task
    m               = (spread - 1/spread) / (2 ln spread)  (the mean of spread ** (2v - 1); m = 1 if spread = 1)

so ``f_k`` is log-uniform on ``[1/(m spread), spread/m]`` with mean 1 over group pairs, and
``funnel_rates`` is the mean rate over group pairs. *Task-specific affinity*: ``rate_k`` is also multiplied
by ``a_k(c, h) = (A if h in pref_k(c) else 1) / ((P A + G_I - P) / G_I)``, ``A = g.task_affinity``, where
``pref_k(c)`` are P item groups drawn for user group c and task k independently of the click's ``pref(c)``
(mean 1 over item groups; ``A = 1`` turns it off). So later tasks prefer partly other item groups than the
click: what is bought is not simply what is clicked most.

*Conversion traits that cut across the click communities* (each a mean-1 log-normal factor
``L(sigma) = exp(sigma z - sigma^2 / 2)``, ``z ~ N(0, 1)`` hashed from its keys; ``sigma = 0`` leaves the
factor out, so with all three at 0 the log is exactly the one without them). User ``a`` has conversion
segment ``s(a)`` in ``0..g.conversion_segments-1`` and item ``j`` conversion tier ``tau(j)`` in
``0..g.conversion_tiers-1``, both hashes independent of the groups. ``rate_k`` is also multiplied by

- ``L_k(s(a), tau(j))`` with ``g.segment_sigma``: per later task and (segment, tier) cell (a price band
  buys one brand tier, whatever community it clicks in);
- ``Q(j)`` with ``g.item_quality_sigma``: per item, shared by the later tasks, independent of popularity
  (hot items clicked often and bought rarely, niche items that convert);
- ``B_k(a, tau(j))`` with ``g.user_taste_sigma``: per later task, user and tier (what this user buys).

Each has mean 1, so ``funnel_rates`` stays the mean rate before the clip at 1; a chain of tasks sharing
``Q(j)`` converts a little more often end to end than independent factors would.

*Events.* The conversion happens when its parent happened on the same row and ``u_k < rate_k``; it is
emitted at ``ts_k = ts_{q(k)} + 1 + floor(Exp(mean = g.conversion_delay_s))`` on the same (user, item)
pair, and only if ``ts_k < start + days`` (later conversions fall outside the observation window, as in a
real log). So every event of task k follows an
event of its parent task on the same pair, strictly earlier.

*What a model should learn.* Who clicks what: the (user group, item group) affinity and item
popularity. Who converts: ``f_k(c, h)``, i.e. every task has its own group-pair structure (a pair
that clicks a lot need not buy a lot), per-user propensity, and the traits above (segments x tiers,
item quality, user taste), which the click graph's communities do not carry.

*The oracle.* The rates depend only on the pair (``a``, ``j``), so for an event drawn on a pair the true
probability that it is task ``t`` (its label in the ``events`` sample space) is a function of the pair:
:mod:`mgoe_spark.generate.oracle` computes it with :func:`conversion_rates` and writes it per generated pair
(table ``ground_truth_pairs``).

*Raw ids.* User, item and category indices are mapped to raw ids by seeded affine bijections
``x -> (A x + B) mod P + 1`` with ``P`` a prime above 4x the id count, so raw ids look arbitrary and
carry no group information; the ground-truth tables map raw ids back to groups.

Complexity: one map-only pass over ``N + H`` rows (no shuffle, no join, no Python UDF); each row costs a
few dozen hashes (about ten more per later task with the conversion traits on). Output rows ~ ``N * (1 +
sum of the funnel rates along each chain)``. Driver work: ``O(G_U * P)`` (the preference table, embedded as
a literal).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.rand import normal, uniform

SECONDS_PER_DAY = 86_400
EVENT_COLUMNS = ("user_id", "item_id", "category_id", "behavior", "ts")
"""Columns of :func:`generate_events`, in Taobao UserBehavior CSV order."""


# --------------------------------------------------------------------------------------------------------
# Driver-side, k-sized pieces (pure Python / numpy)
# --------------------------------------------------------------------------------------------------------


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _next_prime(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


@dataclass(frozen=True)
class IdScramble:
    """A bijection ``x -> (a x + b) mod p + 1`` from indices ``0..n-1`` into ``1..p`` (``p`` prime > n)."""

    a: int
    b: int
    p: int

    @classmethod
    def make(cls, n: int, rng: np.random.Generator) -> IdScramble:
        p = _next_prime(4 * n + 1000)
        # a*x < 4n^2 + ...: stays in int64 for n <= 1e9 (validated in config).
        return cls(int(rng.integers(1, p)), int(rng.integers(0, p)), p)

    def column(self, index: Column) -> Column:
        return (index * F.lit(self.a) + F.lit(self.b)) % F.lit(self.p) + F.lit(1)

    def apply(self, index: np.ndarray) -> np.ndarray:
        """The same map on the driver (for tests and small lookups)."""
        return (np.asarray(index, dtype=object) * self.a + self.b) % self.p + 1


@dataclass(frozen=True)
class Plan:
    """Everything the generator derives from the config before touching data (all ``O(G_U * P + T)``)."""

    seed: int
    tasks: tuple[str, ...]
    behaviors: tuple[str, ...]
    """Raw behavior value of each task (the inverse of ``input.behavior_map``)."""
    parents: tuple[int, ...]
    """Parent task index of tasks 1..T-1."""
    rates: tuple[float, ...]
    preferred: np.ndarray
    """``(G_U, P)`` int: the preferred item groups of each user group."""
    task_preferred: np.ndarray
    """``(T - 1, G_U, G_I)`` float: the task-affinity multipliers ``a_k(c, h)`` of tasks 1..T-1."""
    users: IdScramble
    items: IdScramble
    categories: IdScramble
    start_ts: int
    end_ts: int


def funnel_parents(cfg: MgoeConfig) -> list[int]:
    """Parent task index of each task after the first (see ``generator.funnel_parents``)."""
    n = len(cfg.tasks.order)
    if cfg.generator.funnel_parents is not None:
        return list(cfg.generator.funnel_parents)
    parents = [0] * (n - 1)
    if n >= 3:
        parents[-1] = n - 2
    return parents


def behavior_names(cfg: MgoeConfig) -> list[str]:
    """The raw behavior value written for each task: the first key of ``input.behavior_map`` mapping to it."""
    names = []
    for task in cfg.tasks.order:
        raws = [raw for raw, t in cfg.input.behavior_map.items() if t == task]
        if not raws:
            raise ValueError(
                f"task '{task}' has no raw behavior in input.behavior_map {cfg.input.behavior_map}; "
                "the generator writes raw behaviors, so every task needs one"
            )
        names.append(raws[0])
    return names


def preferred_item_groups(cfg: MgoeConfig) -> np.ndarray:
    """``(G_U, P)`` array: the item groups each user group prefers (distinct within a row)."""
    g = cfg.generator
    rng = np.random.default_rng([cfg.sub_seed("generator"), 1])
    return np.stack([rng.permutation(g.item_groups)[: g.preferred_groups] for _ in range(g.user_groups)])


def task_affinity_table(cfg: MgoeConfig) -> np.ndarray:
    """``(T - 1, G_U, G_I)``: ``a_k(c, h)``, the mean-1 task-affinity multiplier of each later task."""
    g = cfg.generator
    n_later = max(0, len(cfg.tasks.order) - 1)
    rng = np.random.default_rng([cfg.sub_seed("generator"), 3])
    out = np.ones((n_later, g.user_groups, g.item_groups))
    for k in range(n_later):
        for c in range(g.user_groups):
            out[k, c, rng.permutation(g.item_groups)[: g.preferred_groups]] = g.task_affinity
    norm = (g.preferred_groups * g.task_affinity + g.item_groups - g.preferred_groups) / g.item_groups
    return out / norm


def start_timestamp(cfg: MgoeConfig) -> int:
    """Epoch seconds of ``generator.start`` at 00:00 UTC."""
    day = dt.date.fromisoformat(cfg.generator.start)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def plan(cfg: MgoeConfig) -> Plan:
    g = cfg.generator
    rng = np.random.default_rng([cfg.sub_seed("generator"), 2])
    start = start_timestamp(cfg)
    return Plan(
        seed=cfg.sub_seed("generator"),
        tasks=tuple(cfg.tasks.order),
        behaviors=tuple(behavior_names(cfg)),
        parents=tuple(funnel_parents(cfg)),
        rates=tuple(g.funnel_rates[: len(cfg.tasks.order) - 1]),
        preferred=preferred_item_groups(cfg),
        task_preferred=task_affinity_table(cfg),
        users=IdScramble.make(g.users, rng),
        items=IdScramble.make(g.items, rng),
        categories=IdScramble.make(g.item_groups * g.categories_per_group, rng),
        start_ts=start,
        end_ts=start + g.days * SECONDS_PER_DAY,
    )


def factor_mean(spread: float) -> float:
    """``E[spread ** (2v - 1)]`` for ``v ~ U[0, 1)``: the normaliser of the conversion factors."""
    return 1.0 if spread == 1.0 else (spread - 1.0 / spread) / (2.0 * math.log(spread))


# --------------------------------------------------------------------------------------------------------
# Column expressions
# --------------------------------------------------------------------------------------------------------


def zipf_rank(u: Column, n: Column | int, exponent: float) -> Column:
    """A rank in ``1..n`` with ``P(r) ~ r^-exponent``: inverse CDF of the continuous power law on
    ``[0.5, n + 0.5)``, rounded (the midpoint approximation of the discrete Zipf law; exact for the tail,
    within ~10% for rank 1). ``u`` is a uniform in [0, 1)."""
    n_col = F.lit(n) if isinstance(n, int) else n
    lo, hi = F.lit(0.5), n_col + 0.5
    s = float(exponent)
    if abs(s - 1.0) < 1e-9:
        x = lo * F.pow(hi / lo, u)
    else:
        e = 1.0 - s
        x = F.pow(F.pow(lo, e) + u * (F.pow(hi, e) - F.pow(lo, e)), 1.0 / e)
    # The clamp only guards floating-point rounding at the ends.
    return F.least(F.greatest(F.floor(x + 0.5), F.lit(1)), n_col).cast("long")


def conversion_factor(seed: int, k: int, spread: float, user_group: Column, item_group: Column) -> Column:
    """``f_k(c, h)``: the mean-1, log-uniform conversion factor of task ``k >= 1`` for a group pair."""
    v = uniform(seed, f"factor:{k}", user_group, item_group)
    return F.pow(F.lit(float(spread)), 2.0 * v - 1.0) / factor_mean(spread)


def _literal_array(values: list[int]) -> Column:
    return F.array(*[F.lit(int(v)) for v in values])


def task_affinity(p: Plan, k: int, user_group: Column, item_group: Column) -> Column:
    """``a_k(c, h)`` of task ``k >= 1`` as a column (a ``G_U * G_I`` literal array lookup)."""
    table = p.task_preferred[k - 1]
    values = F.array(*[F.lit(float(v)) for v in table.reshape(-1)])
    return F.element_at(values, user_group * table.shape[1] + item_group + 1)


def _clicks(spark: SparkSession, cfg: MgoeConfig, p: Plan) -> DataFrame:
    """One row per click (visible and hidden): e, hidden, user index a, user group, item index j, item
    group, ts. ``O(N + H)`` map-only."""
    g = cfg.generator
    seed = p.seed
    n_hidden = round(g.events * g.hidden_click_fraction)
    gi, gu, pref = g.item_groups, g.user_groups, g.preferred_groups
    df = spark.range(0, g.events + n_hidden, 1, numPartitions=g.partitions).withColumnRenamed("id", "e")
    e = F.col("e")
    a = zipf_rank(uniform(seed, "user", e), g.users, g.user_activity_exponent) - 1
    df = df.select(e, (e >= g.events).alias("hidden"), a.alias("a"))
    df = df.withColumn("user_group", (F.col("a") % gu).cast("int"))
    # Item randomness is keyed on (a, slot) for repeat clicks (personal items), on (e, -1) otherwise.
    personal = uniform(seed, "repeat", e) < g.repeat_fraction
    slot = F.floor(uniform(seed, "slot", e) * g.personal_items)
    k1 = F.when(personal, F.col("a")).otherwise(e)
    k2 = F.when(personal, slot).otherwise(F.lit(-1)).cast("long")
    df = df.withColumn("k1", k1).withColumn("k2", k2)
    keys = (F.col("k1"), F.col("k2"))
    in_pref = uniform(seed, "affinity", *keys) < g.affinity
    pref_slot = F.floor(uniform(seed, "pref_slot", *keys) * pref).cast("int")
    pref_group = F.element_at(
        _literal_array(p.preferred.reshape(-1).tolist()), F.col("user_group") * pref + pref_slot + 1
    )
    any_group = F.floor(uniform(seed, "any_group", *keys) * gi).cast("int")
    df = df.withColumn("item_group", F.when(in_pref, pref_group).otherwise(any_group).cast("int"))
    # n_h = ceil((I - h) / G_I) items in group h; rank r -> item index j = (r - 1) * G_I + h.
    n_h = F.floor((F.lit(g.items) - F.col("item_group") + (gi - 1)) / gi).cast("long")
    rank = zipf_rank(uniform(seed, "item", *keys), n_h, g.popularity_exponent)
    df = df.withColumn("j", (rank - 1) * gi + F.col("item_group"))
    span = g.days * SECONDS_PER_DAY
    ts = F.lit(p.start_ts) + F.floor(uniform(seed, "ts", e) * span).cast("long")
    return df.select("e", "hidden", "a", "user_group", "j", "item_group", ts.alias("ts0"))


def _category_index(cfg: MgoeConfig, seed: int, j: Column, item_group: Column) -> Column:
    g = cfg.generator
    noisy = uniform(seed, "cat_noise", j) < g.category_noise
    group = F.when(noisy, F.floor(uniform(seed, "cat_group", j) * g.item_groups)).otherwise(item_group)
    within = F.floor(uniform(seed, "cat", j) * g.categories_per_group)
    return (group * g.categories_per_group + within).cast("long")


def lognormal_factor(seed: int, salt: str, sigma: float, *keys: Column) -> Column | None:
    """``exp(sigma z - sigma^2 / 2)`` with ``z ~ N(0, 1)`` hashed from ``keys``: a mean-1 log-normal factor.
    ``None`` when ``sigma == 0`` (off: the caller multiplies nothing, so the log is unchanged bit for bit)."""
    if sigma == 0:
        return None
    return F.exp(normal(seed, salt, *keys) * float(sigma) - float(sigma) ** 2 / 2.0)


def conversion_segment(cfg: MgoeConfig, seed: int, a: Column) -> Column:
    """The conversion segment of user index ``a``: a hash, independent of its user group (``a mod G_U``)."""
    return F.floor(uniform(seed, "segment", a) * cfg.generator.conversion_segments).cast("long")


def conversion_tier(cfg: MgoeConfig, seed: int, j: Column) -> Column:
    """The conversion tier of item index ``j``: a hash, independent of its item group (``j mod G_I``)."""
    return F.floor(uniform(seed, "tier", j) * cfg.generator.conversion_tiers).cast("long")


def conversion_rates(cfg: MgoeConfig, p: Plan, a: Column, c: Column, j: Column, h: Column) -> list[Column]:
    """``rate_k`` of tasks ``k = 1..T-1`` (list index ``k - 1``) for a click of user index ``a`` (group ``c``)
    on item index ``j`` (group ``h``): the module docstring's funnel, the one definition the log and the
    oracle (:mod:`mgoe_spark.generate.oracle`) share. A factor whose strength is 0 is left out."""
    g, seed = cfg.generator, p.seed
    propensity = F.exp(normal(seed, "propensity", a) * g.propensity_sigma - g.propensity_sigma**2 / 2.0)
    segment, tier = conversion_segment(cfg, seed, a), conversion_tier(cfg, seed, j)
    quality = lognormal_factor(seed, "quality", g.item_quality_sigma, j)
    rates = []
    for k in range(1, len(p.tasks)):
        factor = conversion_factor(seed, k, g.conversion_spread, c, h) * task_affinity(p, k, c, h)
        extras = (
            lognormal_factor(seed, f"segment:{k}", g.segment_sigma, segment, tier),
            quality,
            lognormal_factor(seed, f"taste:{k}", g.user_taste_sigma, a, tier),
        )
        for x in extras:
            factor = factor if x is None else factor * x
        rates.append(F.least(F.lit(1.0), factor * propensity * p.rates[k - 1]))
    return rates


def generate_events(spark: SparkSession, cfg: MgoeConfig) -> DataFrame:
    """The synthetic raw log: ``user_id, item_id, category_id`` (long), ``behavior`` (raw value, e.g.
    ``pv``), ``ts`` (long, epoch seconds), in the Taobao UserBehavior column order.

    Deterministic for a given config (seed included), whatever the partitioning. Map-only: ``O(rows)``.
    """
    g = cfg.generator
    p = plan(cfg)
    seed = p.seed
    clicks = _clicks(spark, cfg, p)
    h = F.col("item_group")
    rates = conversion_rates(cfg, p, F.col("a"), F.col("user_group"), F.col("j"), h)
    # Task 0 (click): happened on every row, emitted unless hidden.
    happened: list[Column] = [F.lit(True)]
    times: list[Column] = [F.col("ts0")]
    emitted: list[Column] = [~F.col("hidden")]
    for k in range(1, len(p.tasks)):
        q = p.parents[k - 1]
        rate = rates[k - 1]
        delay = 1 + F.floor(-g.conversion_delay_s * F.log(1.0 - uniform(seed, f"delay:{k}", "e"))).cast("long")
        ts_k = times[q] + delay
        ok = happened[q] & (uniform(seed, f"convert:{k}", "e") < rate) & (ts_k < p.end_ts)
        happened.append(ok)
        times.append(ts_k)
        emitted.append(ok)
    # Materialise the per-task times/flags once (they chain), then explode the emitted ones.
    cols = [F.col("a"), F.col("j"), h]
    for k in range(len(p.tasks)):
        cols += [times[k].alias(f"ts_{k}"), emitted[k].alias(f"emit_{k}")]
    wide = clicks.select(*cols)
    events = F.filter(
        F.array(
            *[
                F.when(F.col(f"emit_{k}"), F.struct(F.lit(k).alias("t"), F.col(f"ts_{k}").alias("ts")))
                for k in range(len(p.tasks))
            ]
        ),
        lambda x: x.isNotNull(),
    )
    out = wide.select("a", "j", "item_group", F.inline(events))
    behavior = F.element_at(F.array(*[F.lit(b) for b in p.behaviors]), F.col("t") + 1)
    return out.select(
        p.users.column(F.col("a")).alias("user_id"),
        p.items.column(F.col("j")).alias("item_id"),
        p.categories.column(_category_index(cfg, seed, F.col("j"), F.col("item_group"))).alias("category_id"),
        behavior.alias("behavior"),
        F.col("ts").cast("long").alias("ts"),
    )


def ground_truth(spark: SparkSession, cfg: MgoeConfig) -> tuple[DataFrame, DataFrame]:
    """``(users, items)``: every generated raw id with its planted group (schemas GROUND_TRUTH_USERS /
    GROUND_TRUTH_ITEMS: ``raw_id`` string, ``group`` int32). ``O(U + I)`` map-only."""
    g = cfg.generator
    p = plan(cfg)

    def table(n: int, groups: int, scramble: IdScramble) -> DataFrame:
        idx = F.col("id")
        return spark.range(0, n, 1, numPartitions=max(1, min(g.partitions, n))).select(
            scramble.column(idx).cast("string").alias("raw_id"), (idx % groups).cast("int").alias("group")
        )

    return table(g.users, g.user_groups, p.users), table(g.items, g.item_groups, p.items)


def conversion_factors(spark: SparkSession, cfg: MgoeConfig) -> DataFrame:
    """The planted ``f_k(c, h)``: one row per (task, user_group, item_group) for tasks 1..T-1, with
    ``base_rate``, the task affinity ``a_k(c, h)`` and ``rate = base_rate * factor * affinity`` (before
    propensity and the clip at 1).
    ``O(T * G_U * G_I)`` rows: small, for analysis and tests."""
    g = cfg.generator
    p = plan(cfg)
    pairs = spark.range(0, g.user_groups * g.item_groups, 1, numPartitions=1).select(
        (F.col("id") / g.item_groups).cast("int").alias("user_group"),
        (F.col("id") % g.item_groups).cast("int").alias("item_group"),
    )
    per_task = []
    for k in range(1, len(p.tasks)):
        f = conversion_factor(p.seed, k, g.conversion_spread, F.col("user_group"), F.col("item_group"))
        a = task_affinity(p, k, F.col("user_group"), F.col("item_group"))
        per_task.append(
            pairs.select(
                F.lit(p.tasks[k]).alias("task"),
                "user_group",
                "item_group",
                f.alias("factor"),
                F.lit(p.rates[k - 1]).alias("base_rate"),
                a.alias("affinity"),
                (f * a * p.rates[k - 1]).alias("rate"),
            )
        )
    if not per_task:
        return spark.createDataFrame(
            [],
            "task string, user_group int, item_group int, factor double, base_rate double, affinity double, "
            "rate double",
        )
    out = per_task[0]
    for df in per_task[1:]:
        out = out.unionByName(df)
    return out
