"""The whole config tree (:class:`MgoeConfig`: the seed and one dataclass per section) and its validation.

:func:`validate` runs each section's own checks (``<Section>.validate()``, in :mod:`mgoe_spark.config.sections`)
and then the checks that need two sections (the tasks named by the input, the generator's funnel, the
per-task training weights).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from mgoe_spark.config.errors import ConfigError
from mgoe_spark.config.errors import require as _require
from mgoe_spark.config.models import MODELS
from mgoe_spark.config.sections import (
    EdgeSettings,
    GeneratorSettings,
    InputSettings,
    KMeansSettings,
    NeighborSettings,
    OutputSettings,
    QualitySettings,
    SampleSettings,
    ScoreSettings,
    SketchSettings,
    SparkSettings,
    TaskSettings,
    TrainSettings,
    WeightSettings,
    WindowSettings,
)


@dataclass
class MgoeConfig:
    """The whole configuration. ``seed`` fixes every random choice in the project."""

    seed: int = 42
    spark: SparkSettings = field(default_factory=SparkSettings)
    tasks: TaskSettings = field(default_factory=TaskSettings)
    input: InputSettings = field(default_factory=InputSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    scores: ScoreSettings = field(default_factory=ScoreSettings)
    sketch: SketchSettings = field(default_factory=SketchSettings)
    weights: WeightSettings = field(default_factory=WeightSettings)
    kmeans: KMeansSettings = field(default_factory=KMeansSettings)
    windows: WindowSettings = field(default_factory=WindowSettings)
    edges: EdgeSettings = field(default_factory=EdgeSettings)
    neighbors: NeighborSettings = field(default_factory=NeighborSettings)
    samples: SampleSettings = field(default_factory=SampleSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)

    def sub_seed(self, stage: str) -> int:
        """A 31-bit seed for ``stage`` derived from :attr:`seed` (stable across Python versions)."""
        digest = hashlib.sha256(f"{self.seed}:{stage}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def validate(cfg: MgoeConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    tasks = cfg.tasks.order
    _require(1 <= len(tasks) <= 16, "tasks.order", "must name between 1 and 16 tasks")
    _require(len(set(tasks)) == len(tasks), "tasks.order", f"has a repeated task: {tasks}")
    if cfg.tasks.exposure is not None:
        _require(cfg.tasks.exposure not in tasks, "tasks.exposure", "must not also be in tasks.order")
    known = set(tasks) | ({cfg.tasks.exposure} if cfg.tasks.exposure else set())
    inp = cfg.input
    generic = inp.format.startswith("generic")
    # behavior_map only matters where a behavior column is read (Tenrec has 0/1 task columns instead).
    if inp.format == "taobao" or (generic and inp.behavior_column is not None):
        _require(bool(inp.behavior_map), "input.behavior_map", "must map at least one raw behavior to a task")
        for raw, task in inp.behavior_map.items():
            _require(
                task in known,
                f"input.behavior_map.{raw}",
                f"maps to unknown task '{task}'; allowed tasks (tasks.order / tasks.exposure): {sorted(known)}",
            )
    for task in inp.task_columns:
        _require(task in known, f"input.task_columns.{task}", f"is not a task; allowed: {sorted(known)}")
    if generic:
        _require(
            (inp.behavior_column is None) != (not inp.task_columns),
            "input.behavior_column",
            "or input.task_columns must be set, not both (set behavior_column: null to use task_columns)",
        )
    if inp.format == "generic_csv" and not inp.csv_header:
        _require(bool(inp.csv_columns), "input.csv_columns", "must name the columns when input.csv_header is false")
    if inp.format == "tenrec":
        flags = {"click", "follow", "like", "share"}
        for task in tasks:
            column = inp.task_columns.get(task, task)
            _require(
                column in flags,
                "tasks.order",
                f"task '{task}' has no Tenrec column; name one of {sorted(flags)} in input.task_columns.{task}",
            )
    _require(len(inp.csv_delimiter) == 1, "input.csv_delimiter", "must be a single character")
    g = cfg.generator
    for key in ("users", "items", "events", "user_groups", "item_groups", "days", "partitions"):
        _require(getattr(g, key) >= 1, f"generator.{key}", "must be >= 1")
    _require(g.user_groups <= g.users, "generator.user_groups", "must be <= generator.users")
    _require(g.item_groups <= g.items, "generator.item_groups", "must be <= generator.items")
    _require(0.0 <= g.affinity <= 1.0, "generator.affinity", "must be in [0, 1]")
    _require(g.popularity_exponent > 0, "generator.popularity_exponent", "must be > 0")
    _require(
        len(g.funnel_rates) >= len(tasks) - 1 and all(0 <= r <= 1 for r in g.funnel_rates),
        "generator.funnel_rates",
        f"needs {len(tasks) - 1} rates in [0, 1] (one per task after the first)",
    )
    _require(g.conversion_spread >= 1, "generator.conversion_spread", "must be >= 1")
    _require(g.task_affinity >= 1, "generator.task_affinity", "must be >= 1 (1 = no task-specific affinity)")
    for key in ("preferred_groups", "personal_items", "categories_per_group"):
        _require(getattr(g, key) >= 1, f"generator.{key}", "must be >= 1")
    _require(g.preferred_groups <= g.item_groups, "generator.preferred_groups", "must be <= generator.item_groups")
    for key in ("users", "items"):
        _require(getattr(g, key) <= 1_000_000_000, f"generator.{key}", "must be <= 1,000,000,000")
    _require(g.user_activity_exponent >= 0, "generator.user_activity_exponent", "must be >= 0")
    _require(g.propensity_sigma >= 0, "generator.propensity_sigma", "must be >= 0")
    _require(g.conversion_delay_s > 0, "generator.conversion_delay_s", "must be > 0")
    for key in ("repeat_fraction", "hidden_click_fraction", "category_noise"):
        _require(0.0 <= getattr(g, key) <= 1.0, f"generator.{key}", "must be in [0, 1]")
    if g.funnel_parents is not None:
        _require(
            len(g.funnel_parents) == len(tasks) - 1 and all(0 <= p <= k for k, p in enumerate(g.funnel_parents)),
            "generator.funnel_parents",
            f"needs {len(tasks) - 1} entries; entry k (task tasks.order[k+1]) must be an earlier task index 0..k",
        )
    try:
        dt.date.fromisoformat(g.start)
    except ValueError:
        raise ConfigError(f"config key 'generator.start' must be a date YYYY-MM-DD, got {g.start!r}") from None
    _require(math.isfinite(cfg.scores.beta), "scores.beta", "must be a finite number")
    _require(cfg.sketch.dim >= 1, "sketch.dim", "must be >= 1")
    w = cfg.weights
    _require(0 < w.q_low <= w.q_high < 1, "weights.q_low", "and weights.q_high need 0 < q_low <= q_high < 1")
    _require(w.neighbor_cap >= 1, "weights.neighbor_cap", "must be >= 1")
    _require(w.w_high > 0 and w.w_low > 0, "weights.w_high", "and weights.w_low must be > 0 (k-means weights)")
    _require(w.b is None or math.isfinite(w.b), "weights.b", "must be a finite number or null")
    _require(0 <= w.quantile_rel_error < 1, "weights.quantile_rel_error", "must be in [0, 1) (0 = exact, small data)")
    k = cfg.kmeans
    _require(k.k_user >= 1, "kmeans.k_user", "must be >= 1")
    _require(k.k_item >= 1, "kmeans.k_item", "must be >= 1")
    _require(k.max_iter >= 1, "kmeans.max_iter", "must be >= 1")
    _require(0 < k.batch_fraction <= 1, "kmeans.batch_fraction", "must be in (0, 1]")
    _require(k.tol >= 0, "kmeans.tol", "must be >= 0")
    _require(k.init_samples_per_center >= 1, "kmeans.init_samples_per_center", "must be >= 1")
    _require(k.faiss_threads is None or k.faiss_threads >= 1, "kmeans.faiss_threads", "must be >= 1 or null")
    _require(k.block_rows >= 1, "kmeans.block_rows", "must be >= 1")
    _require(k.patience >= 1, "kmeans.patience", "must be >= 1")
    win = cfg.windows
    _require(0 < win.q1 < win.q2 < 1, "windows.q1", "and windows.q2 need 0 < q1 < q2 < 1")
    _require(0 <= win.validation_fraction < 1, "windows.validation_fraction", "must be in [0, 1)")
    _require(0 <= win.quantile_rel_error < 0.1, "windows.quantile_rel_error", "must be in [0, 0.1)")
    if win.mode == "dates":
        _require(win.train_cutoff is not None, "windows.train_cutoff", "is required when windows.mode=dates")
        _require(win.test_cutoff is not None, "windows.test_cutoff", "is required when windows.mode=dates")
    _require(cfg.edges.hops >= 1, "edges.hops", "must be >= 1")
    _require(cfg.neighbors.length >= 1, "neighbors.length", "must be >= 1")
    _require(cfg.samples.negatives_per_user >= 0, "samples.negatives_per_user", "must be >= 0")
    _require(cfg.samples.negatives_per_positive >= 0, "samples.negatives_per_positive", "must be >= 0")
    _require(cfg.output.row_group_rows >= 1, "output.row_group_rows", "must be >= 1")
    t = cfg.train
    _require(t.embed_dim >= 1 and t.batch_size >= 1, "train.embed_dim", "and train.batch_size must be >= 1")
    _require(t.tau > 0, "train.tau", "must be > 0")
    _require(0 <= t.dropout < 1, "train.dropout", "must be in [0, 1)")
    _require(0 <= t.id_dropout < 1, "train.id_dropout", "must be in [0, 1)")
    _require(len(t.seeds) >= 1, "train.seeds", "needs at least one seed")
    _require(t.lr > 0, "train.lr", "must be > 0")
    _require(t.weight_decay >= 0 and t.l1 >= 0, "train.weight_decay", "and train.l1 must be >= 0")
    _require(t.epochs >= 1 and t.patience >= 1, "train.epochs", "and train.patience must be >= 1")
    _require(t.threads >= 1, "train.threads", "must be >= 1")
    _require(t.shuffle_buffer >= 0, "train.shuffle_buffer", "must be >= 0")
    _require(t.shuffle_row_groups >= 1, "train.shuffle_row_groups", "must be >= 1")
    _require(t.nproc >= 1 and t.dist_timeout_s > 0, "train.nproc", "must be >= 1 (and train.dist_timeout_s > 0)")
    _require(t.sparse_lr is None or t.sparse_lr > 0, "train.sparse_lr", "must be > 0")
    _require(len(t.expert_sizes) >= 1 and min(t.expert_sizes) >= 1, "train.expert_sizes", "needs sizes >= 1")
    _require(
        t.mgoe_expert_sizes is None or (len(t.mgoe_expert_sizes) >= 1 and min(t.mgoe_expert_sizes) >= 1),
        "train.mgoe_expert_sizes",
        "needs sizes >= 1 (or null: expert_sizes)",
    )
    _require(t.tower_hidden >= 1, "train.tower_hidden", "must be >= 1")
    _require(t.shared_experts >= 0 and t.task_experts >= 0, "train.shared_experts", "and task_experts >= 0")
    _require(t.shared_experts + t.task_experts >= 1, "train.shared_experts", "+ train.task_experts must be >= 1")
    _require(1 <= t.grec_top_k <= t.grec_experts, "train.grec_top_k", "must be in 1..train.grec_experts")
    _require(
        not t.task_weights or len(t.task_weights) == len(tasks),
        "train.task_weights",
        f"needs one weight per task ({len(tasks)}) or none",
    )
    _require(t.eval_batch_size >= 1 and t.loader_workers >= 0, "train.eval_batch_size", "must be >= 1")
    unknown = [m for m in t.models if m not in MODELS]
    _require(not unknown, "train.models", f"names unknown models {unknown}; allowed: {sorted(MODELS)}")
    q = cfg.quality
    _require(0 <= q.max_reject_fraction <= 1, "quality.max_reject_fraction", "must be in [0, 1]")
    _require(q.min_rows >= 0, "quality.min_rows", "must be >= 0")
