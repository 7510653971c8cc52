"""The whole config tree (:class:`MgoeConfig`: the seed and one dataclass per section) and its validation.

:func:`validate` runs each section's own checks (``<Section>.validate()``, in :mod:`mgoe_spark.config.sections`)
and then the checks that need two sections (the tasks named by the input, the generator's funnel, the
per-task training weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from mgoe_spark.config.errors import require as _require
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

    def validate(self) -> None:
        """Check the values types cannot express; raise :class:`ConfigError` naming the key at the first failure.

        Section by section in field order: the section's own ``validate()``, then its checks against another
        section (:data:`_CROSS_CHECKS`).
        """
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()
                if f.name in _CROSS_CHECKS:
                    _CROSS_CHECKS[f.name](self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def validate(cfg: MgoeConfig) -> None:
    """Raise :class:`ConfigError` for the first check that fails (see :meth:`MgoeConfig.validate`)."""
    cfg.validate()


def _known_tasks(tasks: TaskSettings) -> set[str]:
    """The task names a log may mention: ``tasks.order`` and the exposure pseudo-task."""
    return set(tasks.order) | ({tasks.exposure} if tasks.exposure else set())


def _check_input_tasks(cfg: MgoeConfig) -> None:
    """``input`` names only known tasks; a Tenrec log has a 0/1 column for every task."""
    inp, known = cfg.input, _known_tasks(cfg.tasks)
    if inp.reads_behavior_column:
        for raw, task in inp.behavior_map.items():
            _require(
                task in known,
                f"input.behavior_map.{raw}",
                f"maps to unknown task '{task}'; allowed tasks (tasks.order / tasks.exposure): {sorted(known)}",
            )
    for task in inp.task_columns:
        _require(task in known, f"input.task_columns.{task}", f"is not a task; allowed: {sorted(known)}")
    if inp.format == "tenrec":
        flags = {"click", "follow", "like", "share"}
        for task in cfg.tasks.order:
            column = inp.task_columns.get(task, task)
            _require(
                column in flags,
                "tasks.order",
                f"task '{task}' has no Tenrec column; name one of {sorted(flags)} in input.task_columns.{task}",
            )


def _check_generator_funnel(cfg: MgoeConfig) -> None:
    """One funnel rate (and parent, if given) per task after the first."""
    g, later = cfg.generator, len(cfg.tasks.order) - 1
    _require(
        len(g.funnel_rates) >= later and all(0 <= r <= 1 for r in g.funnel_rates),
        "generator.funnel_rates",
        f"needs {later} rates in [0, 1] (one per task after the first)",
    )
    if g.funnel_parents is not None:
        _require(
            len(g.funnel_parents) == later and all(0 <= p <= k for k, p in enumerate(g.funnel_parents)),
            "generator.funnel_parents",
            f"needs {later} entries; entry k (task tasks.order[k+1]) must be an earlier task index 0..k",
        )


def _check_task_weights(cfg: MgoeConfig) -> None:
    """``train.task_weights``: one per task, or none."""
    tasks = cfg.tasks.order
    _require(
        not cfg.train.task_weights or len(cfg.train.task_weights) == len(tasks),
        "train.task_weights",
        f"needs one weight per task ({len(tasks)}) or none",
    )


def _check_sample_space(cfg: MgoeConfig) -> None:
    """``exposures`` needs an exposure pseudo-task; negatives only where the space has room for them: per
    positive pair in ``pairs``, per user in ``pairs`` and ``exposures``, none in ``events`` (its labels are
    one-hot over the tasks: an all-zero row is not an event)."""
    sc, exposure = cfg.samples, cfg.tasks.exposure
    space = sc.resolve(exposure)
    _require(
        space != "exposures" or exposure is not None,
        "samples.space",
        "is 'exposures' but the log has no exposure pseudo-task: set tasks.exposure, or use events / pairs",
    )
    _require(
        space == "pairs" or sc.per_positive(space) == 0,
        "samples.negatives_per_positive",
        f"applies to samples.space=pairs only (the space is '{space}'); set it to 0 or null",
    )
    _require(
        space != "events" or sc.negatives_per_user == 0,
        "samples.negatives_per_user",
        "must be 0 in samples.space=events (each row is an event, labelled one-hot; no negatives are drawn)",
    )


_CROSS_CHECKS: dict[str, Callable[[MgoeConfig], None]] = {
    "input": _check_input_tasks,
    "generator": _check_generator_funnel,
    "samples": _check_sample_space,
    "train": _check_task_weights,
}
"""Section -> the checks of that section that need another one (``tasks``); they run after its own checks."""
