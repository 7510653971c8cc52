"""One model registry (mgoe_spark.config.models): config validation, the CLI and build_model share its names."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from mgoe_spark.config import ConfigError, load_config
from mgoe_spark.config.models import MODELS, TABLE_VARIANTS, model_of
from model.baselines import BUILDERS, build_model
from model.data import TableMeta
from model.mgoe import MGOE, ModelOptions

META = TableMeta(num_users=20, num_items=15, k_user=3, k_item=4, hops=2, num_tasks=2, recent_len=3, tasks=("a", "b"))
OPTS = ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4)


def test_build_model_maps_exactly_the_registered_names_in_order():
    assert list(BUILDERS) == list(MODELS)
    assert all(isinstance(text, str) and text for text in MODELS.values())


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_builds_and_scores_a_batch(name):
    from tests.test_trainer_infer import _batch

    torch.manual_seed(0)
    model = build_model(name, META, OPTS)
    assert isinstance(model, torch.nn.Module)
    model.eval()
    with torch.no_grad():
        assert model(_batch(5)).shape == (5, META.num_tasks)


def test_ablations_switch_off_their_part_only():
    assert isinstance(build_model("mgoe_no_pref", META, OPTS), MGOE)
    assert build_model("mgoe", META, OPTS).adjust.form == "log_macro"
    assert build_model("mgoe_no_adjust", META, OPTS).adjust.form == "off"  # gamma = 0
    # the cascade is off by default (issue 27's ablation); on, mgoe learns lambda and mgoe_no_cascade still forces 0
    assert "lam" in dict(build_model("mgoe", META, OPTS).towers.named_buffers())
    cascade = dataclasses.replace(OPTS, cascade=True)
    assert "lam" in dict(build_model("mgoe", META, cascade).towers.named_parameters())
    assert "lam" in dict(build_model("mgoe_no_cascade", META, cascade).towers.named_buffers())  # lambda = 0
    assert OPTS.adjust and cascade.cascade  # the caller's options are not changed


def test_unknown_names_are_refused_with_the_registry_listed():
    with pytest.raises(ValueError, match="unknown model 'nope'; choose from mgoe, mgoe_no_adjust, "):
        build_model("nope", META, OPTS)
    with pytest.raises(ConfigError, match=r"names unknown models \['nope'\]"):
        load_config(overrides=["train.models=[mgoe, nope]"])
    assert load_config(overrides=[f"train.models=[{', '.join(MODELS)}]"]).train.models == list(MODELS)


def test_table_variants_name_registered_models_and_valid_overrides():
    for label, (model, overrides) in TABLE_VARIANTS.items():
        assert label in MODELS and model in MODELS and model_of(label) == model
        load_config(overrides=list(overrides))
    assert model_of("mmoe") == "mmoe"


@pytest.mark.parametrize(
    "label", ["mgoe_no_pref", "mgoe_pref", "mgoe_binary_edges", "mgoe_score_edges", "mgoe_pref_scores"]
)
def test_a_table_only_ablation_without_its_table_is_refused(label, tmp_path):
    from mgoe_spark.core.errors import UserError
    from model.run import run_training

    built_with = " ".join(TABLE_VARIANTS[label][1])
    with pytest.raises(UserError, match=f"{label} is MGOE on a table built with {built_with}: pass --table-root"):
        run_training(load_config(profile="test"), str(tmp_path), None, ["mgoe", label])


def test_the_config_package_imports_without_spark_or_torch():
    code = (
        "import sys, mgoe_spark.config, mgoe_spark.config.models; "
        "assert 'pyspark' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_options_take_their_defaults_from_train_settings():
    from mgoe_spark.config import TrainSettings

    train, opts = TrainSettings(), ModelOptions()
    shared = [f.name for f in dataclasses.fields(ModelOptions) if f.name != "adjust"]
    assert {f.name for f in dataclasses.fields(TrainSettings)} >= set(shared)
    assert {name: getattr(opts, name) for name in shared} == {name: getattr(train, name) for name in shared}
    assert opts.adjust and not opts.cascade  # the cascade is an option since issue 27's ablation
    assert ModelOptions().expert_sizes is not ModelOptions().expert_sizes  # no shared mutable default
    # what a checkpoint stores rebuilds the same options
    custom = ModelOptions.from_train_settings(TrainSettings(embed_dim=6, mgoe_expert_sizes=[5, 4], dropout=0.1))
    assert ModelOptions(**dataclasses.asdict(custom)) == custom
    assert (custom.embed_dim, custom.mgoe_expert_sizes, custom.dropout, custom.tau) == (6, [5, 4], 0.1, train.tau)
