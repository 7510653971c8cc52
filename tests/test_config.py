"""Typed config: profiles, overrides, and errors that name the key and the allowed values."""

from __future__ import annotations

import pytest

from mgoe_spark.config import ConfigError, MgoeConfig, load_config


def test_defaults_follow_the_spec():
    cfg = load_config()
    assert cfg.tasks.order == ["click", "fav", "cart", "buy"]
    assert cfg.scores.beta == 1.0 and cfg.sketch.dim == 64 and cfg.sketch.normalize
    assert (cfg.weights.w_high, cfg.weights.w_low, cfg.weights.neighbor_cap) == (2.0, 0.5, 200)
    assert (cfg.windows.q1, cfg.windows.q2) == (0.8, 0.9)
    assert cfg.edges.hops == 2 and cfg.edges.edge_matrix == "binary" and cfg.neighbors.length == 20
    assert cfg.train.embed_dim == 10 and cfg.train.tau == 1.3
    assert cfg.samples.resolve(cfg.tasks.exposure) == "events"  # SPEC 5: the paper's Taobao protocol


def test_layers_profile_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("profile: test\nkmeans:\n  k_user: 7\n  k_item: 9\nseed: 3\n")
    cfg = load_config(path, overrides=["kmeans.k_item=11", "train.seeds=[4, 5]"])
    assert cfg.generator.users == 600  # from the test profile
    assert (cfg.kmeans.k_user, cfg.kmeans.k_item, cfg.seed) == (7, 11, 3)
    assert cfg.train.seeds == [4, 5]
    assert load_config(path, profile="default").generator.users == MgoeConfig().generator.users


def test_int_widens_to_float_and_dates_become_strings():
    cfg = load_config(overrides=["scores.beta=2", "generator.start=2020-01-02"])
    assert cfg.scores.beta == 2.0 and isinstance(cfg.scores.beta, float)
    assert cfg.generator.start == "2020-01-02"


@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("3E-5", 3e-5), ("2e0", 2.0), ("0.001", 0.001)])
def test_exponent_numbers_are_numbers(text, value):
    # YAML 1.1 reads 1e-4 (no dot) as a string; typed on a command line it means the number
    assert load_config(overrides=[f"train.weight_decay={text}"]).train.weight_decay == value


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("kmeans.kk_user=3", "unknown config key 'kmeans.kk_user' (did you mean 'kmeans.k_user'?)"),
        ("nosuch.key=3", "unknown config key 'nosuch'"),
        ("kmeans.mode=fast", "config key 'kmeans.mode' must be one of 'minibatch', 'full'"),
        ("kmeans.k_user=many", "config key 'kmeans.k_user' must be an integer"),
        ("sketch.normalize=3", "config key 'sketch.normalize' must be true/false"),
        ("tasks.order=[a, a]", "config key 'tasks.order' has a repeated task"),
        ("input.behavior_map={pv: zz}", "maps to unknown task 'zz'"),
        ("windows.q1=0.95", "windows.q1' and windows.q2 need 0 < q1 < q2 < 1"),
        ("kmeans", "must look like section.key=value"),
        ("kmeans=3", "config section 'kmeans' must be a mapping"),
        ("train.weight_decay=nan", "config key 'train.weight_decay' must be a number"),
        ("train.weight_decay=1e", "config key 'train.weight_decay' must be a number"),
        ("train.weight_decay=1e999", "config key 'train.weight_decay' must be a number"),
        ("train.dropout=1", "config key 'train.dropout' must be in [0, 1)"),
        ("train.id_dropout=-0.1", "config key 'train.id_dropout' must be in [0, 1)"),
    ],
)
def test_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert needle in str(err.value)


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'prod'; allowed profiles: default, demo, test"):
        load_config(profile="prod")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_sub_seeds_are_stable_and_distinct():
    a, b = load_config(overrides=["seed=1"]), load_config(overrides=["seed=1"])
    assert a.sub_seed("kmeans") == b.sub_seed("kmeans") != a.sub_seed("generate")
    assert load_config(overrides=["seed=2"]).sub_seed("kmeans") != a.sub_seed("kmeans")


def test_yaml_round_trip(tmp_path):
    cfg = load_config(profile="test", overrides=["kmeans.k_user=5"])
    path = tmp_path / "dump.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
