"""The real `mgoe` CLI end to end: help texts, user errors, and the demo through real Spark and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import SUBCOMMANDS, main
from schemas import CENTROIDS, RUN_METRICS, TRAINING_EXAMPLES

REPO = Path(__file__).resolve().parents[1]


def _mgoe(
    *args: str, timeout: int = 1500, env: dict[str, str] | None = None, python: tuple[str, ...] = (sys.executable,)
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [*python, "-m", "jobs.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("mgoe: error: ")
    return lines[0]


def test_help_lists_and_explains_every_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in text
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        sub = capsys.readouterr().out
        assert f"usage: mgoe {name}" in sub and "--run-date" in sub and "--set KEY=VALUE" in sub


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--input", "/nonexistent/log.csv", "--profile", "test"], "does not exist"),
        (["nodes", "--profile", "test", "--set", "kmeans.kk_user=3"], "did you mean 'kmeans.k_user'"),
        (["nodes", "--profile", "test", "--run-date", "2026-13-45"], "is not a date"),
        (["nodes", "--profile", "test", "--set", "input.behavior_map={pv: view}"], "unknown task 'view'"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, message, tmp_path):
    result = _mgoe(*args, "--output", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_python_gets_a_hint_before_any_import():
    # -S: no site-packages, so pyspark, numpy, ... are missing, as under a system python3 without the venv.
    line = _one_line_error(_mgoe("nodes", "--profile", "test", python=(sys.executable, "-S"), timeout=120))
    assert f"{sys.executable} (Python {sys.version_info.major}.{sys.version_info.minor}" in line
    assert "lacks pyspark, numpy, pyarrow, faiss, torch, yaml" in line
    assert "run scripts/setup.sh and use .venv/bin/mgoe" in line


def test_output_root_that_cannot_be_created(tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a directory")
    root = tmp_path / "file.txt" / "out"
    line = _one_line_error(_mgoe("nodes", "--profile", "test", "--output", str(root), timeout=300))
    assert f"output root '{root}' is not writable: Not a directory" in line and "--output DIR" in line


def test_java_too_old(tmp_path):
    java = tmp_path / "jdk11" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    env = {"JAVA_HOME": str(tmp_path / "jdk11")}
    line = _one_line_error(_mgoe("nodes", "--profile", "test", "--output", str(tmp_path / "out"), env=env, timeout=300))
    assert "Java 11 is too old; Spark 4 needs Java 17+" in line and "openjdk-17" in line


@pytest.mark.slow
def test_demo_through_the_cli_entry_point(spark, tmp_path, capsys):
    """``mgoe demo`` end to end through the command's entry point, on the tests' session (the demo leaves a
    session it did not start running; that the installed command runs as its own process is checked by the
    subprocess tests above): generate, build, train, the tables, the printed tables and the report."""
    out, report, results = tmp_path / "out", tmp_path / "report", tmp_path / "demo.json"
    code = main([
        "demo", "--profile", "test", "--output", str(out), "--run-date", "2026-11-23",
        "--report", str(report), "--json", str(results), "--quiet",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:]
    assert spark.sparkContext._jsc is not None  # the tests' session still runs
    run = captured
    assert "demo done" in run.out and "AUC mean" in run.out
    data = json.loads(results.read_text())
    for name in ("mgoe", "mmoe"):
        assert 0.0 <= data["models"][name]["auc_mean"] <= 1.0
        assert data["models"][name]["logloss_mean"] > 0
    # the sample space and label rates print: the default events space has one-hot rows, so the rates add
    # up to 1 and the click is the most frequent behavior (as the paper's Taobao shares, 88 / 7 / 4 / 2 %)
    assert "rate click" in run.out and "cold start" in run.out and " events " in run.out
    assert data["sample_space"] == {str(out): "events"}
    rates = data["label_rates"][str(out)]
    assert set(rates) == {"train", "valid", "test"}
    for split, v in rates.items():
        assert sum(v["labels"].values()) == pytest.approx(1.0) and v["one_hot"] == pytest.approx(1.0), (split, v)
        assert 0.6 <= v["labels"]["click"] <= 0.95 and v["labels"]["buy"] < v["labels"]["click"], (split, v)
    # the oracle's AUC (the headroom) prints and is in the results
    assert "oracle (the generator's true probabilities): test AUC click" in run.out
    assert data["oracle"]["missing"] == 0 and 0.5 < data["oracle"]["auc_mean"] < 1.0
    # Real tables, readable with the contract's pyarrow schema.
    examples = pq.read_table(out / "training_examples" / "run_date=2026-11-23", schema=TRAINING_EXAMPLES.arrow(False))
    assert examples.num_rows > 0 and set(examples.column("split").to_pylist()) == {"train", "valid", "test"}
    centroids = pq.read_table(out / "centroids" / "run_date=2026-11-23", schema=CENTROIDS.arrow(False))
    assert sorted(centroids.column("side").to_pylist()) == ["item"] * 4 + ["user"] * 4
    metrics = pq.read_table(out / "run_metrics" / "run_date=2026-11-23", schema=RUN_METRICS.arrow(False))
    assert {"generate", "ingest", "nodes", "features"} <= set(metrics.column("stage").to_pylist())
    text = (report / "report.md").read_text()
    assert "| nodes | k-means user |" in text and "| features | training examples + write |" in text
    for png in ("cluster_sizes.png", "edge_weights.png", "training_curves.png", "auc_per_task.png", "step_seconds.png"):
        assert png in text and (report / png).stat().st_size > 1000
