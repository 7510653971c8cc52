"""Errors users hit, checked in-process: the interpreter preflight of `mgoe` and K larger than the nodes.
(The same errors through the real command line are in tests/test_cli_end_to_end.py.)"""

from __future__ import annotations

import configparser
import types
from pathlib import Path

import pytest

from jobs import cli, preflight

REPO = Path(__file__).resolve().parents[1]


def test_min_python_is_setup_cfgs_python_requires():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    assert parser["options"]["python_requires"].strip() == ">=" + ".".join(map(str, preflight.MIN_PYTHON))


def test_preflight_names_the_interpreter_and_the_fix():
    assert preflight.problem() is None  # the test interpreter is the project's
    old = preflight.problem(version=(3, 10, 4), executable="/usr/bin/python3.10")
    assert old == (
        "/usr/bin/python3.10 is Python 3.10.4; mgoe needs Python 3.11+: "
        "run scripts/setup.sh and use .venv/bin/mgoe (or activate .venv)"
    )
    bare = preflight.problem(version=(3, 12, 1), executable="/usr/bin/python3", installed=lambda n: n == "numpy")
    assert bare.startswith("/usr/bin/python3 (Python 3.12.1) lacks pyspark, pyarrow, faiss, torch, yaml: ")
    assert "scripts/setup.sh" in bare


def test_cli_refuses_an_old_python_before_parsing(monkeypatch, capsys):
    fake_sys = types.SimpleNamespace(version_info=(3, 9, 18, "final", 0), executable="/opt/py39/bin/python")
    monkeypatch.setattr(preflight, "sys", fake_sys)
    assert cli.main(["nodes", "--no-such-flag"]) == 2  # the preflight runs before argparse
    err = capsys.readouterr().err
    assert err == (
        "mgoe: error: /opt/py39/bin/python is Python 3.9.18; mgoe needs Python 3.11+: "
        "run scripts/setup.sh and use .venv/bin/mgoe (or activate .venv)\n"
    )


def test_k_larger_than_the_nodes_names_the_key_and_the_count(spark, tmp_path):
    from mgoe_spark.config import load_config
    from mgoe_spark.core.errors import UserError
    from mgoe_spark.core.storage import TableStore
    from mgoe_spark.nodes.run import run_nodes
    from schemas import INTERACTIONS

    tasks = ["click", "fav", "cart", "buy"]
    # 4 users, each with events from the start of the log (so all 4 are in the feature window), 8 items.
    rows = [(1 + t % 4, 1 + t % 8, tasks[t % 3 if t % 5 else 0], 1000 + 60 * t, None) for t in range(80)]
    overrides = [f"output.root={tmp_path}", "kmeans.k_user=6", "kmeans.k_item=2", "weights.enabled=false"]
    cfg = load_config(profile="test", overrides=[*overrides, "sketch.dim=4"])
    TableStore.of(spark, cfg).write(
        spark.createDataFrame(rows, INTERACTIONS.spark(with_partition=False)), INTERACTIONS, "2024-01-05"
    )
    with pytest.raises(UserError) as err:
        run_nodes(spark, cfg, "2024-01-05")
    assert str(err.value) == (
        "kmeans.k_user=6 is larger than the number of users in the feature window (4); "
        "lower it with --set kmeans.k_user=N"
    )
