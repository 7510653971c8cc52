"""Config by section: each section checks itself; MgoeConfig.validate adds the checks that need two sections."""

from __future__ import annotations

import dataclasses

import pytest

from mgoe_spark.config import (
    ConfigError,
    GeneratorSettings,
    InputSettings,
    KMeansSettings,
    MgoeConfig,
    TaskSettings,
    TrainSettings,
    load_config,
    validate,
)


def test_every_section_has_its_own_validate_and_the_defaults_pass():
    cfg = MgoeConfig()
    sections = [getattr(cfg, f.name) for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    assert len(sections) == 15
    for section in sections:
        section.validate()
    cfg.validate()
    validate(cfg)


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        (KMeansSettings(k_user=0), "config key 'kmeans.k_user' must be >= 1"),
        (TaskSettings(order=["a", "a"]), "config key 'tasks.order' has a repeated task"),
        (InputSettings(csv_delimiter="ab"), "config key 'input.csv_delimiter' must be a single character"),
        (GeneratorSettings(start="soon"), "config key 'generator.start' must be a date YYYY-MM-DD"),
        (TrainSettings(models=["nope"]), "config key 'train.models' names unknown models ['nope']"),
    ],
)
def test_a_section_checks_itself(section, needle):
    with pytest.raises(ConfigError) as err:
        section.validate()
    assert needle in str(err.value)


def test_checks_that_need_the_tasks_run_on_the_whole_config():
    two = TaskSettings(order=["click", "buy"])
    # each section alone is fine; together with two tasks they are not
    GeneratorSettings(funnel_parents=[0, 1, 2]).validate()
    TrainSettings(task_weights=[1.0, 1.0, 1.0]).validate()
    InputSettings().validate()
    for section, needle in [
        ({"generator": GeneratorSettings(funnel_parents=[0, 1, 2])}, "generator.funnel_parents' needs 1 entries"),
        ({"train": TrainSettings(task_weights=[1.0, 1.0, 1.0])}, "needs one weight per task (2) or none"),
        ({"input": InputSettings()}, "config key 'input.behavior_map.fav' maps to unknown task 'fav'"),
    ]:
        fitting_input = InputSettings(behavior_map={"pv": "click", "buy": "buy"})
        cfg = MgoeConfig(**{"tasks": two, "input": fitting_input, **section})
        with pytest.raises(ConfigError) as err:
            cfg.validate()
        assert needle in str(err.value)
    assert load_config(overrides=["tasks.order=[click, buy]", "input.behavior_map={pv: click, buy: buy}"])
