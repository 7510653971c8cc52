"""The fitted k-means model: fit (engine choice + fallback), assign, id matching, save / load, tables.

Costs: :meth:`WeightedKMeans.fit` is one engine run (see :mod:`mgoe_spark.nodes.kmeans.engines`): one pass to pack
the vectors, then per iteration O(n k r / threads) on the workers and O(P k r) on the driver.
:meth:`WeightedKMeans.assign` is one lazy pass, O(n k r / threads). Persistence and table rows are k x r.
The driver never holds more than k x r centroids, P x k candidates and the init sample (``m <=
init_samples_per_center * k`` rows).

Macro ids are ``1..k``: centroid row ``m - 1`` is macro ``m``. A refit can warm-start from a previous model
and is then matched to it (Hungarian on centroid distance) so macro ``m`` keeps its meaning (SPEC 3); the
caller decides whether the previous model lives in the same vector space (its ``fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mgoe_spark.nodes.kmeans.blocks import ASSIGN_SCHEMA, assign_batches, sum_scales
from mgoe_spark.nodes.kmeans.engines import JobsEngine, resident_blocker, task_slots
from mgoe_spark.nodes.kmeans.loop import (
    IterationStats,
    combine,
    init_from_sample,
    match_to_previous,
    run_fit,
    validate,
)
from mgoe_spark.nodes.kmeans.resident import EngineUnavailable, ResidentEngine

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mgoe_spark.config import KMeansSettings

FORMAT_VERSION = 2
ENGINES = ("auto", "jobs", "resident")
log = logging.getLogger("mgoe.kmeans")


class WeightedKMeans:
    """Weighted k-means (SPEC 4.4, Eq 9) over a Spark DataFrame of nodes ``(node_id, vector, weight)``.

    Fitted state: ``centroids`` (k, r) float32 (row m-1 = macro m), ``weights`` / ``sizes`` per cluster over
    all nodes, ``inertia`` (weighted, all nodes), ``stats`` (per iteration), ``n_iter``, ``stop_reason``,
    ``engine_used`` (+ ``fallback_reason``: why the opt-in resident engine did not run), ``version`` (content
    hash), ``fingerprint`` (the vector space it was fitted in, set by the caller), ``seed``.

    ``engine``: ``auto`` (the default) and ``jobs`` run the jobs engine, on Spark's own channels only;
    ``resident`` (opt-in) runs :mod:`~mgoe_spark.nodes.kmeans.resident` and falls back to the jobs engine where
    it cannot run or stops; ``exchange_timeout`` (seconds) bounds every wait on its socket.

    >>> km = WeightedKMeans(k=20, mode="full", seed=7)          # doctest: +SKIP
    >>> km.fit(nodes)                                            # doctest: +SKIP
    >>> km.assign(nodes)  # DataFrame(node_id, macro_id 1..20, distance)  # doctest: +SKIP
    """

    def __init__(
        self,
        k: int,
        *,
        mode: Literal["minibatch", "full"] = "minibatch",
        max_iter: int = 30,
        tol: float = 1e-4,
        batch_fraction: float = 0.2,
        patience: int = 3,
        init_samples_per_center: int = 256,
        seed: int = 0,
        faiss_threads: int | None = None,
        block_rows: int = 65_536,
        engine: Literal["auto", "jobs", "resident"] = "auto",
        exchange_timeout: float = 300.0,
        fingerprint: str = "",
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if mode not in ("minibatch", "full"):
            raise ValueError(f"mode must be 'minibatch' or 'full', got {mode!r}")
        if not 0 < batch_fraction <= 1:
            raise ValueError(f"batch_fraction must be in (0, 1], got {batch_fraction}")
        if min(max_iter, init_samples_per_center, block_rows, patience) < 1:
            raise ValueError("max_iter, patience, init_samples_per_center and block_rows must be >= 1")
        if not exchange_timeout > 0:
            raise ValueError(f"exchange_timeout must be > 0 seconds, got {exchange_timeout}")
        self.k = k
        self.mode = mode
        self.max_iter = max_iter
        self.tol = tol
        self.batch_fraction = batch_fraction
        self.patience = patience
        self.init_samples_per_center = init_samples_per_center
        self.seed = seed
        self.faiss_threads = faiss_threads
        self.block_rows = block_rows
        self.engine = engine
        self.exchange_timeout = exchange_timeout
        self.fingerprint = fingerprint
        # fitted state
        self.centroids: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.inertia: float | None = None
        self.stats: list[IterationStats] = []
        self.n_iter = 0
        self.reseeded_total = 0
        self.stop_reason: str | None = None
        self.engine_used: str | None = None
        self.fallback_reason: str | None = None
        self._fit_assignments: DataFrame | None = None
        self._fit_cache: DataFrame | None = None
        self._fit_source: DataFrame | None = None
        self.timings: dict[str, float] = {}
        """Wall seconds of the last fit's phases: blocks (pack + input checks), init, iterations, final_pass."""

    @classmethod
    def from_config(cls, settings: KMeansSettings, k: int, seed: int, fingerprint: str = "") -> WeightedKMeans:
        """Build from the ``kmeans`` config section (``k`` is ``k_user`` or ``k_item``; ``seed`` a sub-seed)."""
        return cls(
            k,
            mode=settings.mode,
            max_iter=settings.max_iter,
            tol=settings.tol,
            batch_fraction=settings.batch_fraction,
            patience=settings.patience,
            init_samples_per_center=settings.init_samples_per_center,
            seed=seed,
            faiss_threads=settings.faiss_threads,
            block_rows=settings.block_rows,
            engine=settings.engine,
            exchange_timeout=settings.exchange_timeout,
            fingerprint=fingerprint,
        )

    # ---- properties ------------------------------------------------------------------------------------

    @property
    def r(self) -> int:
        self._check_fitted()
        return int(self.centroids.shape[1])

    @property
    def version(self) -> str:
        """Content hash of the fitted centroids (first 12 hex digits of sha256)."""
        self._check_fitted()
        return hashlib.sha256(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()).hexdigest()[:12]

    def _check_fitted(self) -> None:
        if self.centroids is None:
            raise ValueError("the k-means model is not fitted yet: call fit() or load() first")

    def _threads(self, spark: SparkSession) -> int:
        if self.faiss_threads is not None:
            return self.faiss_threads
        return int(spark.conf.get("spark.task.cpus", "1") or 1)

    # ---- fit -------------------------------------------------------------------------------------------

    def fit(
        self,
        nodes: DataFrame,
        *,
        init_centroids: np.ndarray | None = None,
        warm_start: WeightedKMeans | None = None,
        r: int | None = None,
    ) -> WeightedKMeans:
        """Fit on ``nodes`` (node_id, vector, weight). Returns ``self``.

        ``init_centroids`` (k, r): start from these instead of k-means++ (benchmarks, tests).
        ``warm_start``: a previous fitted model with the same k and r; its centroids are the start and the
        result is matched to them (Hungarian) so macro ids keep their meaning.
        ``r``: the vector length; default: the first vector's length (all must agree).
        """
        from pyspark.sql import functions as F

        for col in ("node_id", "vector", "weight"):
            if col not in nodes.columns:
                raise ValueError(f"the nodes DataFrame needs a '{col}' column; it has {nodes.columns}")
        if warm_start is not None:
            warm_start._check_fitted()
            if warm_start.k != self.k:
                raise ValueError(f"warm start needs the same k: previous model has k={warm_start.k}, now {self.k}")
            init_centroids = warm_start.centroids
        if init_centroids is not None:
            init_centroids = np.asarray(init_centroids, dtype=np.float64)
            r = r if r is not None else int(init_centroids.shape[1])
            if init_centroids.shape != (self.k, r):
                raise ValueError(f"initial centroids must have shape ({self.k}, {r}), got {init_centroids.shape}")
        if r is not None and r < 1:
            raise ValueError(f"node vectors must have length >= 1, got {r}")
        nodes = nodes.select(
            F.col("node_id").cast("long"), F.col("vector").cast("array<float>"), F.col("weight").cast("double")
        )
        # the input partition of each row: blocks are cut per input partition, whichever task reads it
        packed = nodes.withColumn("part", F.spark_partition_id())
        spark = nodes.sparkSession
        self.fallback_reason = None
        self.unpersist()  # a refit replaces the previous fit's cached assignments
        self._fit_source = None
        if self.engine == "resident":  # opt-in; "auto" and "jobs" use Spark's channels only
            reason = self._fit_resident(packed, init_centroids, r, warm_start)
            if reason is None:
                self._fit_source = nodes
                return self._finish()
            self.fallback_reason = reason
            log.warning("k-means: resident engine not used (%s); one Spark job per iteration instead", reason)
        t0 = time.perf_counter()
        with JobsEngine(packed, r, self.seed, self.block_rows, self._threads(spark)) as eng:
            t1 = time.perf_counter()
            self._fit_with(eng, init_centroids, r)
            self._emit(eng, warm_start)
            self.timings = {"start": t1 - t0, **self.timings}
        self._fit_source = nodes
        return self._finish()

    def _emit(self, eng: Any, warm_start: WeightedKMeans | None) -> None:
        """Match to ``warm_start`` (if any), then take the final pass's assignments from the engine (cached)."""
        perm = self._match(warm_start)
        t0 = time.perf_counter()
        self._fit_assignments = eng.emit(np.argsort(perm))  # label perm[m] becomes macro m + 1
        self._fit_cache = eng.emitted
        self.timings["emit"] = time.perf_counter() - t0

    def _fit_resident(
        self, packed: DataFrame, init_centroids: np.ndarray | None, r: int | None, warm_start: WeightedKMeans | None
    ) -> str | None:
        """Fit on the opt-in resident engine (:mod:`.resident`); None when it did, else why it could not (the
        caller falls back to the jobs engine; the resident job is cancelled by then)."""
        spark = packed.sparkSession
        blocker = resident_blocker(spark)
        if blocker is not None:
            return blocker
        try:
            t0 = time.perf_counter()
            source, parts = self._resident_input(packed)
            t1 = time.perf_counter()
            threads = self._threads(spark)
            timeout = self.exchange_timeout
            with ResidentEngine(source, r, self.seed, self.block_rows, threads, parts, timeout) as eng:
                t2 = time.perf_counter()
                self._fit_with(eng, init_centroids, r)
                self._emit(eng, warm_start)
                self.timings = {"plan": t1 - t0, "start": t2 - t1, **self.timings}
        except EngineUnavailable as exc:
            return str(exc)
        return None

    def _resident_input(self, nodes: DataFrame) -> tuple[DataFrame, int]:
        """(``nodes``, coalesced to the task-slot count when it has more partitions (all tasks of the resident
        job run at once): narrow, no shuffle; its partition count)."""
        slots = task_slots(nodes.sparkSession) or 1
        parts = nodes.rdd.getNumPartitions()
        if parts > slots:
            log.info("k-means: %d partitions for %d task slots: each resident task reads several", parts, slots)
            return nodes.coalesce(slots), slots
        return nodes, parts

    def _fit_with(self, eng: Any, init_centroids: np.ndarray | None, r: int | None) -> None:
        clock = time.perf_counter()
        self.timings = {}

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            self.timings[name] = now - clock
            clock = now

        stats = eng.stats()
        n, r = validate(stats, self.k, r)  # FitInputError (a ValueError) on bad input: the CLI's one line
        scales = sum_scales(n, stats["max_w"], stats["max_x"])
        lap("blocks")
        if init_centroids is None:
            cap = self.init_samples_per_center * self.k
            prob = min(1.0, 1.2 * cap / n)  # oversample a little so the sample rarely falls short of the cap
            parts = eng.sample(prob)
            if not any(len(p[0]) for p in parts):  # no key fell below prob (only for tiny n): take everything
                parts = eng.sample(1.0)
            init_centroids = init_from_sample(parts, self.k, r, self.seed, cap)
        lap("init")
        k = self.k
        seconds: list[float] = []

        def step(centroids: np.ndarray, iteration: int, fraction: float) -> dict[str, Any]:
            t0 = time.perf_counter()
            out = combine(eng.step_parts(centroids, iteration, fraction, scales), k, r, scales)
            seconds.append(time.perf_counter() - t0)
            return out

        result = run_fit(
            step,
            init_centroids,
            mode=self.mode,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_fraction=self.batch_fraction,
            patience=self.patience,
        )
        self.timings["iterations"] = sum(seconds[:-1])
        self.timings["final_pass"] = seconds[-1]
        self.centroids = result.centroids
        self.stats = result.stats
        self.stop_reason = result.stop_reason
        self.n_iter = len(result.stats)
        self.reseeded_total = sum(s.reseeded for s in result.stats)
        final = result.final
        self.weights, self.sizes, self.inertia = final["wsum"], final["cnt"].astype(np.int64), final["inertia"]
        self.engine_used = eng.name

    def _match(self, warm_start: WeightedKMeans | None) -> np.ndarray:
        """Renumber the clusters to line up with ``warm_start``'s (identity without one); returns the permutation."""
        perm = np.arange(self.k)
        if warm_start is not None:
            perm = match_to_previous(self.centroids, warm_start.centroids)
            self._permute(perm)
        return perm

    def _finish(self) -> WeightedKMeans:
        log.info(
            "k-means: k=%d, %d iterations (%s), engine %s, inertia %.6g",
            self.k, self.n_iter, self.stop_reason, self.engine_used, self.inertia,
        )  # fmt: skip
        return self

    def _permute(self, perm: np.ndarray) -> None:
        self.centroids = self.centroids[perm]
        self.weights = self.weights[perm]
        self.sizes = self.sizes[perm]
        for s in self.stats:  # keep per-iteration sizes in the final id order
            s.sizes = [s.sizes[p] for p in perm]

    # ---- assign ----------------------------------------------------------------------------------------

    def assign(self, nodes: DataFrame) -> DataFrame:
        """Nearest centroid of every node: DataFrame ``(node_id long, macro_id int 1..k, distance float)``.

        Lazy, one pass, O(n k r / threads). Works for nodes never seen in the fit (cold start): same ids.
        ``distance`` is the squared L2 distance to the centroid.
        """
        from pyspark.sql import functions as F

        self._check_fitted()
        centroids, threads = self.centroids, self._threads(nodes.sparkSession)
        src = nodes.select(F.col("node_id").cast("long"), F.col("vector").cast("array<float>"))
        return src.mapInArrow(lambda batches: assign_batches(batches, centroids, threads), ASSIGN_SCHEMA)

    def training_assignments(self) -> DataFrame:
        """:meth:`assign` of the nodes of the last :meth:`fit`, ``(node_id, macro_id, distance)``: the fit's
        final pass already assigned every node, and this is that result, read from a cache (MEMORY_AND_DISK,
        ~16 bytes a node; :meth:`unpersist` or ``spark.catalog.clearCache()`` frees it): no second pass over
        the vectors. Falls back to ``assign(fitted nodes)`` (lazy, one pass) after :meth:`unpersist`."""
        if self._fit_source is None:
            raise ValueError("training_assignments() needs a fit() in this process; use assign(nodes)")
        if self._fit_assignments is not None:
            return self._fit_assignments
        return self.assign(self._fit_source)

    def unpersist(self) -> None:
        """Free the cached fit-time assignments (if any)."""
        if self._fit_cache is not None:
            self._fit_cache.unpersist()
        self._fit_assignments = self._fit_cache = None

    # ---- persistence -----------------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "r": self.r,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "mode": self.mode,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "batch_fraction": self.batch_fraction,
            "patience": self.patience,
            "init_samples_per_center": self.init_samples_per_center,
            "block_rows": self.block_rows,
            "inertia": self.inertia,
            "n_iter": self.n_iter,
            "stop_reason": self.stop_reason,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>/model.npz`` (centroids, weights, sizes) and ``<path>/model.json`` (k, r, version, ...)."""
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "model.npz", centroids=self.centroids, weights=self.weights, sizes=self.sizes)
        (out / "model.json").write_text(json.dumps(self._meta(), indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> WeightedKMeans:
        """Read a model written by :meth:`save`; checks the stored version hash against the centroids."""
        src = Path(path)
        if not (src / "model.json").is_file() or not (src / "model.npz").is_file():
            raise ValueError(f"no saved k-means model at '{src}' (expected model.json and model.npz)")
        meta = json.loads((src / "model.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"'{src}': unsupported model format {meta.get('format_version')}")
        arrays = np.load(src / "model.npz")
        model = cls(
            meta["k"],
            **{key: meta[key] for key in ("mode", "max_iter", "tol", "batch_fraction", "patience", "seed")},
            init_samples_per_center=meta["init_samples_per_center"],
            block_rows=meta["block_rows"],
            fingerprint=meta["fingerprint"],
        )
        model.centroids = arrays["centroids"].astype(np.float32)
        model.weights = arrays["weights"]
        model.sizes = arrays["sizes"]
        model.inertia = meta["inertia"]
        model.n_iter = meta["n_iter"]
        model.stop_reason = meta["stop_reason"]
        if model.centroids.shape != (meta["k"], meta["r"]) or model.version != meta["version"]:
            raise ValueError(f"'{src}': centroids do not match model.json (corrupt or edited model)")
        return model

    def centroid_rows(self, side: str, run_date: str | None = None) -> list[dict[str, Any]]:
        """CENTROIDS-table rows (k of them). ``version`` = ``<run_date>-<content hash>`` (or the hash alone)."""
        self._check_fitted()
        version = f"{run_date}-{self.version}" if run_date else self.version
        return [
            {
                "side": side,
                "macro_id": m + 1,
                "centroid": [float(v) for v in self.centroids[m]],
                "weight": float(self.weights[m]),
                "size": int(self.sizes[m]),
                "version": version,
                "fingerprint": self.fingerprint,
            }
            for m in range(self.k)
        ]

    def centroids_frame(self, spark: SparkSession, side: str, run_date: str | None = None) -> DataFrame:
        """The CENTROIDS table (without ``run_date``) as a DataFrame of k rows."""
        from schemas.tables import CENTROIDS

        return spark.createDataFrame(self.centroid_rows(side, run_date), CENTROIDS.spark(with_partition=False))

    def stats_frame(self, spark: SparkSession, side: str) -> DataFrame:
        """The KMEANS_STATS table (without ``run_date``): one row per iteration; the last row says why the
        fit stopped, every row which engine ran it (and why the resident engine did not, if so)."""
        from schemas.tables import KMEANS_STATS

        last = len(self.stats)
        rows = [
            {
                "side": side,
                **vars(s),
                "stop_reason": self.stop_reason if s.iteration == last else None,
                "engine": self.engine_used or "",
                "fallback_reason": self.fallback_reason,
            }
            for s in self.stats
        ]
        return spark.createDataFrame(rows, KMEANS_STATS.spark(with_partition=False))

    @classmethod
    def from_centroid_rows(cls, rows: list[Any], **params: Any) -> WeightedKMeans:
        """Rebuild a fitted model from CENTROIDS rows of one side (e.g. ``read_table(...).collect()``, k rows);
        its ``fingerprint`` is the rows' (empty if they have none)."""
        if not rows:
            raise ValueError("no centroid rows given")
        rows = sorted(rows, key=lambda row: row["macro_id"])
        ids = [row["macro_id"] for row in rows]
        if ids != list(range(1, len(rows) + 1)):
            raise ValueError(f"centroid macro ids must be 1..{len(rows)} with no gaps, got {ids}")
        if len({row["side"] for row in rows}) > 1:
            raise ValueError("centroid rows mix sides; pass the rows of one side")
        fingerprints = {_field(row, "fingerprint") or "" for row in rows}
        if len(fingerprints) > 1:
            raise ValueError("centroid rows carry different fingerprints; pass the rows of one fit")
        params.setdefault("fingerprint", fingerprints.pop())
        model = cls(len(rows), **params)
        model.centroids = np.array([row["centroid"] for row in rows], dtype=np.float32)
        model.weights = np.array([row["weight"] for row in rows], dtype=np.float64)
        model.sizes = np.array([row["size"] for row in rows], dtype=np.int64)
        return model


def _field(row: Any, name: str) -> Any:
    """``row[name]`` for a dict or a Spark Row, None when it has no such field."""
    try:
        return row[name]
    except (KeyError, ValueError):
        return None


def warm_start_candidate(rows: list[Any], *, k: int, r: int, fingerprint: str, side: str) -> WeightedKMeans | None:
    """The previous run's model (from its CENTROIDS rows of ``side``) if a warm start into it is meaningful:
    same k, same r and the same vector-space fingerprint. Otherwise None and one log line saying why."""
    if not rows:
        return None
    previous = WeightedKMeans.from_centroid_rows(rows)
    why = None
    if previous.k != k or previous.r != r:
        why = f"k, r changed from {previous.k}, {previous.r} to {k}, {r}"
    elif previous.fingerprint != fingerprint:
        why = f"the vector space changed (fingerprint {previous.fingerprint or 'none'} -> {fingerprint})"
    if why:
        log.warning("k-means %s: cold fit, no warm start: %s; macro ids start afresh", side, why)
        return None
    return previous
