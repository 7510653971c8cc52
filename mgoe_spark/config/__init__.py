"""Typed configuration for the whole pipeline and trainer.

One tree of dataclasses, loaded from YAML with ``yaml.safe_load``:
``defaults <- profile <- config file <- --set overrides``, then validated. The modules, in the order a load
uses them:

- :mod:`~mgoe_spark.config.loader`: reads the profile (``mgoe_spark/profiles/<name>.yaml``) and the user's
  YAML file, parses ``--set section.key=value`` overrides, checks every key and value against the dataclass
  fields and types (:func:`load_config`, :func:`with_overrides`, :func:`profile_data`);
- :mod:`~mgoe_spark.config.tree`: :class:`MgoeConfig`, the root (``seed``, one field per section), and
  :func:`validate`: each section's checks, then the checks that need two sections;
- :mod:`~mgoe_spark.config.sections`: one dataclass per section (defaults, docs, ``validate()``);
- :mod:`~mgoe_spark.config.models`: the registry of trainable model names (``train.models``, ``--models``,
  :func:`model.baselines.build_model`);
- :mod:`~mgoe_spark.config.errors`: :class:`ConfigError`, naming the dotted key and what is allowed.

Importing this package needs only PyYAML (no pyspark, no torch). Every public name is re-exported here:
``from mgoe_spark.config import load_config, MgoeConfig, ConfigError``.
"""

from mgoe_spark.config.errors import ConfigError
from mgoe_spark.config.loader import PROFILES, load_config, profile_data, with_overrides
from mgoe_spark.config.sections import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    SAMPLE_SPACES,
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
from mgoe_spark.config.tree import MgoeConfig, validate

__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "SAMPLE_SPACES",
    "PROFILES",
    "ConfigError",
    "EdgeSettings",
    "GeneratorSettings",
    "InputSettings",
    "KMeansSettings",
    "MgoeConfig",
    "NeighborSettings",
    "OutputSettings",
    "QualitySettings",
    "SampleSettings",
    "ScoreSettings",
    "SketchSettings",
    "SparkSettings",
    "TaskSettings",
    "TrainSettings",
    "WeightSettings",
    "WindowSettings",
    "load_config",
    "profile_data",
    "validate",
    "with_overrides",
]
