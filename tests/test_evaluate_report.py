"""`mgoe evaluate` and `mgoe report` on a tiny trained model (no Spark): saved checkpoints score exactly what
the trainer reported, incompatible tables and bad files are one-line errors, a report rebuilds from JSON."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from jobs.common import job_main
from mgoe_spark.config import load_config
from model.data import read_meta
from model.run import run_training
from model.synthetic import SyntheticSpec, generate_examples, write_examples
from model.train import CheckpointError, check_compatible, evaluate_checkpoints

RUN = "2024-02-01"
SMALL = [
    "train.embed_dim=4",
    "train.expert_sizes=[16, 8]",
    "train.tower_hidden=8",
    "train.batch_size=64",
    "train.eval_batch_size=128",
    "train.epochs=2",
    "train.patience=1",
    "train.max_steps_per_epoch=3",
    "train.seeds=[0, 1]",
    "train.threads=1",
    "train.shuffle_buffer=128",
]
SPEC = dict(users=50, items=30, feature_exposures_per_user=10, sample_exposures_per_user=10, recent_len=3)


def _table(path, **changes) -> str:
    write_examples(generate_examples(SyntheticSpec(**{**SPEC, **changes})), str(path), RUN, row_group_rows=128, files=2)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(results of `run_training`, table root, report dir) for mgoe and mmoe, seeds 0 and 1."""
    base = tmp_path_factory.mktemp("eval")
    root = _table(base / "examples")
    cfg = load_config(profile="test", overrides=SMALL)
    results = run_training(cfg, root, None, ["mgoe", "mmoe"], base / "report", progress=False)
    return results, root, base / "report"


def _argv(*args: str) -> list[str]:
    return [*args, "--profile", "test", *[a for s in SMALL for a in ("--set", s)]]


def test_evaluate_reproduces_the_trainers_test_metrics(trained):
    results, root, report = trained
    again = evaluate_checkpoints(report / "checkpoints", root, None, "test", batch_size=128)
    assert again["run_date"] == RUN and again["tasks"] == results["tasks"]
    assert set(again["models"]) == {"mgoe", "mmoe"}
    for name, r in results["models"].items():
        e = again["models"][name]
        assert [s["seed"] for s in e["seeds"]] == [0, 1]
        for key in ("auc_mean", "logloss_mean", "auc_mean_std", "logloss_mean_std"):
            assert e[key] == pytest.approx(r[key], abs=1e-9), (name, key)
        for task in results["tasks"]:
            for metric in ("auc", "logloss"):
                assert e[metric][task]["mean"] == pytest.approx(r[metric][task]["mean"], abs=1e-9)
        for run_e, run_t in zip(e["seeds"], r["seeds"], strict=True):
            assert run_e["best_epoch"] == run_t["best_epoch"] and run_e["best_step"] == run_t["best_step"]
            assert run_e["test"]["rows"] == run_t["test"]["rows"] > 0


def test_evaluate_other_splits_match_the_trainers_valid_metrics(trained):
    results, root, report = trained
    valid = evaluate_checkpoints(report / "checkpoints", root, RUN, "valid", batch_size=128, models=["mgoe"])
    assert list(valid["models"]) == ["mgoe"] and valid["split"] == "valid"
    for run_e, run_t in zip(valid["models"]["mgoe"]["seeds"], results["models"]["mgoe"]["seeds"], strict=True):
        assert run_e["valid"]["auc_mean"] == pytest.approx(run_t["valid"]["auc_mean"], abs=1e-9)
    train = evaluate_checkpoints(report / "checkpoints", root, RUN, "train", batch_size=128, models=["mmoe"])
    rows = train["models"]["mmoe"]["seeds"][0]["train"]["rows"]
    assert rows > results["models"]["mmoe"]["seeds"][0]["test"]["rows"]


def test_evaluate_job_prints_and_writes_train_shaped_json(trained, tmp_path, capsys):
    import jobs.evaluate as job

    results, root, report = trained
    out = tmp_path / "eval.json"
    assert job_main(job, _argv("--checkpoints", str(report), "--examples-root", root, "--json", str(out))) == 0
    text = capsys.readouterr().out
    assert f"run date {RUN} split test" in text and "AUC mean" in text and "mmoe" in text
    data = json.loads(out.read_text())
    for name in ("mgoe", "mmoe"):
        assert data["models"][name]["auc_mean"] == pytest.approx(results["models"][name]["auc_mean"], abs=1e-9)
        assert data["models"][name]["logloss_mean"] == pytest.approx(results["models"][name]["logloss_mean"], abs=1e-9)
        assert set(data["models"][name]["auc"]) == set(results["tasks"])


def test_evaluate_errors_are_one_line(trained, tmp_path, capsys):
    import jobs.evaluate as job

    _, root, report = trained
    (tmp_path / "empty").mkdir()
    cases = [
        (["--checkpoints", str(tmp_path / "empty"), "--examples-root", root], "no checkpoints"),
        (["--checkpoints", str(report), "--examples-root", root, "--models", "ple"], "no checkpoints for ple"),
        (["--checkpoints", str(report), "--examples-root", str(tmp_path / "none")], "no training_examples"),
        (["--checkpoints", str(report), "--examples-root", root, "--run-date", "2024-03-01"], "no run date 2024-03-01"),
    ]
    for argv, message in cases:
        assert job_main(job, _argv(*argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mgoe: error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"users": 80},
            r"users vocabulary \(80 ids\) is larger than checkpoint mgoe-seed0.pt's embedding table \(50\)",
        ),
        ({"items": 45}, r"items vocabulary \(45 ids\) is larger"),
        ({"recent_len": 4}, r"trained with 3 recent neighbors per task \(neighbors.recent_len\) but the table has 4"),
        ({"user_groups": 5}, r"trained with 4 user macro nodes \(kmeans.k_user\) but the table has 5"),
        ({"tasks": ("click", "buy")}, "trained with 4 tasks but the table has 2"),
    ],
)
def test_incompatible_table_is_named(trained, tmp_path, capsys, changes, message):
    import jobs.evaluate as job

    _, _, report = trained
    other = _table(tmp_path / "other", **changes)
    with pytest.raises(CheckpointError, match=message):
        evaluate_checkpoints(report / "checkpoints", other, RUN, models=["mgoe"])
    assert job_main(job, _argv("--checkpoints", str(report), "--examples-root", other)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgoe: error: ") and err.count("\n") == 1


def test_smaller_vocabulary_is_compatible(trained):
    _, root, _ = trained
    meta = read_meta(root)
    smaller = type(meta)(**{**meta.__dict__, "num_users": meta.num_users - 5})
    check_compatible(meta, smaller, "x.pt")  # no error: unseen embedding rows are just unused
    with pytest.raises(CheckpointError, match="users vocabulary"):
        check_compatible(smaller, meta, "x.pt")


def test_checkpoints_without_sidecar_are_ignored(trained, tmp_path):
    _, root, report = trained
    src = report / "checkpoints" / "mgoe-seed0.pt"
    shutil.copy(src, tmp_path / "mgoe-seed0.pt")  # no .json: not a loadable checkpoint
    with pytest.raises(CheckpointError, match="no checkpoints"):
        evaluate_checkpoints(tmp_path, root)
    shutil.copy(f"{src}.json", tmp_path / "mgoe-seed0.pt.json")
    res = evaluate_checkpoints(tmp_path, root, batch_size=128)
    assert list(res["models"]) == ["mgoe"] and not math.isnan(res["models"]["mgoe"]["auc_mean"])


# ---- mgoe report ---------------------------------------------------------------------------------------


def _report(tmp_path, capsys, results_path, *extra: str) -> tuple[int, str, str]:
    import jobs.report as job

    code = job_main(job, ["--results", str(results_path), "--out", str(tmp_path / "rep"), *extra, "--profile", "test"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_from_train_results_json(trained, tmp_path, capsys):
    from model.evaluate import to_json

    results, _, _ = trained
    path = tmp_path / "train.json"
    path.write_text(to_json(results))
    code, out, _ = _report(tmp_path, capsys, path)
    assert code == 0 and "report.md" in out
    rep = tmp_path / "rep"
    text = (rep / "report.md").read_text()
    assert "# MGOE training report" in text and "## Test metrics" in text
    assert "| model | AUC click | AUC fav | AUC cart | AUC buy | AUC mean |" in text
    mgoe = results["models"]["mgoe"]
    assert f"| mgoe | {mgoe['auc']['click']['mean']:.4f} ± {mgoe['auc']['click']['std']:.4f} |" in text
    for png in ("training_curves.png", "auc_per_task.png"):
        assert f"({png})" in text and (rep / png).stat().st_size > 1000
    assert "Pipeline run" not in text


def test_report_with_eval_every_shows_steps(tmp_path, capsys, monkeypatch):
    """Validation every 2 steps (3 per epoch): the report says so, gives each seed's best step and plots the
    checks against the optimizer step; rebuilt from JSON it is the same."""
    from matplotlib.axes import Axes

    from model.evaluate import to_json

    root = _table(tmp_path / "examples")
    cfg = load_config(profile="test", overrides=[*SMALL, "train.eval_every=2", "train.patience=9", "train.seeds=[0]"])
    xs, plot = [], Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, x, *a, **k: xs.append(list(x)) or plot(ax, x, *a, **k))
    results = run_training(cfg, root, None, ["mmoe"], tmp_path / "report", progress=False)
    run = results["models"]["mmoe"]["seeds"][0]
    assert [h["step"] for h in run["history"]] == [2, 3, 4, 6]
    assert xs == [[2, 3, 4, 6]] * 2  # train loss and valid AUC against the step
    path = tmp_path / "train.json"
    path.write_text(to_json(results))
    assert _report(tmp_path, capsys, path)[0] == 0
    for report in (tmp_path / "report", tmp_path / "rep"):
        text = (report / "report.md").read_text()
        assert "(validation every 2 steps and at each epoch's end, patience 9 checks)" in text
        assert "| best epochs (steps) |" in text
        assert f"| {run['best_epoch']} (step {run['best_step']}) |" in text


def test_report_from_evaluate_and_demo_json(trained, tmp_path, capsys):
    from model.evaluate import to_json

    results, root, report = trained
    evaluated = evaluate_checkpoints(report / "checkpoints", root, None, "valid", batch_size=128)
    evaluated["models"]["mgoe"]["auc"]["fav"]["std"] = math.nan  # written as null, read back as NaN
    path = tmp_path / "eval.json"
    path.write_text(to_json(evaluated))
    code, _, _ = _report(tmp_path, capsys, path)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert code == 0 and "# MGOE evaluation report" in text and "## Valid metrics" in text and "| mmoe |" in text
    assert "training_curves.png" not in text and (tmp_path / "rep" / "auc_per_task.png").stat().st_size > 1000

    demo = {**results, "pipeline": {"ingest": {"rows_out": 1234.0, "seconds": 1.5}, "train": {"seconds": 9.0}}}
    path.write_text(to_json(demo))
    code, _, _ = _report(tmp_path, capsys, path)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert code == 0 and "- `[ingest] rows_out=1,234 seconds=1.50`" in text and "- `[train] seconds=9`" in text


def test_report_errors_are_one_line(tmp_path, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"models": {}, "something": 1}))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"tasks": ["click"], "run_date": RUN, "models": {"mgoe": {"auc_mean": 0.5}}}))
    for path, message in [
        (tmp_path / "missing.json", "does not exist"),
        (bad_json, "is not JSON"),
        (other, "is not a results file (no tasks, run_date)"),
        (partial, "model 'mgoe' lacks auc, logloss, logloss_mean, seeds"),
    ]:
        code, _, err = _report(tmp_path, capsys, path)
        assert code == 2 and err.startswith("mgoe: error: ") and err.count("\n") == 1, err
        assert message in err and "mgoe train --json" in err


def test_report_with_tables_adds_pipeline_plots_and_stage_lines(trained, spark, tmp_path, capsys):
    from mgoe_spark.core.metrics import STEP_SECONDS, StageSummary
    from mgoe_spark.core.storage import TableStore
    from model.evaluate import to_json
    from schemas import CENTROIDS, MACRO_EDGES, RUN_METRICS

    results, _, _ = trained
    store = TableStore(spark, str(tmp_path / "tables"))
    cents = [(side, k, [0.0], 1.0, size, "v", "fp") for side in ("user", "item") for k, size in ((1, 3), (2, 5))]
    store.write(spark.createDataFrame(cents, CENTROIDS.spark(with_partition=False)), CENTROIDS, RUN)
    edges = [("train", "user", 1, 1, [0.5, 2.0]), ("train", "item", 1, 1, [1.0, 0.0]), ("test", "user", 1, 1, [9.0])]
    store.write(spark.createDataFrame(edges, MACRO_EDGES.spark(with_partition=False)), MACRO_EDGES, RUN)
    nodes, ingest = StageSummary("nodes"), StageSummary("ingest")
    nodes.add("users", 6)
    nodes.add(STEP_SECONDS, 2.5, detail="sketch user")
    nodes.add(STEP_SECONDS, 7.5, detail="weights user")
    ingest.add(STEP_SECONDS, 1.25, detail="parse")
    nodes.add("seconds", 10)
    ingest.add("rows_out", 1234)
    ingest.add("rejects", 2, "bad_id")  # detail rows are not stage-line metrics
    rows = nodes.rows() + ingest.rows()
    store.write(spark.createDataFrame(rows, RUN_METRICS.spark(with_partition=False)), RUN_METRICS, RUN)
    path = tmp_path / "train.json"
    path.write_text(to_json(results))

    code, _, err = _report(tmp_path, capsys, path, "--tables", str(tmp_path / "tables"))
    assert code == 0, err
    text = (tmp_path / "rep" / "report.md").read_text()
    # Pipeline order (ingest before nodes), not table order.
    assert "- `[ingest] rows_out=1,234`\n- `[nodes] " in text
    nodes_line = text.split("- `[nodes] ", 1)[1].split("\n", 1)[0]
    assert sorted(nodes_line.rstrip("`").split()) == ["seconds=10", "users=6"]
    assert "users: K=2, sizes min 3 / mean 4 / max 5" in text
    # step timings: pipeline order of stages, slowest step first within one, share of the stage's seconds
    steps = "| ingest | parse | 1.25 |  |\n| nodes | weights user | 7.50 | 75% |\n| nodes | sketch user | 2.50 | 25% |"
    assert steps in text
    for png in ("cluster_sizes.png", "edge_weights.png", "step_seconds.png"):
        assert f"({png})" in text and (tmp_path / "rep" / png).stat().st_size > 1000
    code, _, err = _report(tmp_path, capsys, path, "--tables", str(tmp_path / "tables"), "--run-date", "2024-03-09")
    assert code == 2 and "centroids" in err and "2024-03-09" in err


def _by_seed(*values: float) -> dict:
    return {"seeds": [{"seed": s, "test": {"auc": {"a": x}, "auc_mean": x}} for s, x in enumerate(values)]}


def test_model_quality_goal_checks_need_paired_margins_above_two_standard_errors():
    from bench.model_quality import goal_checks

    rows = goal_checks(
        {
            "mgoe": _by_seed(0.70, 0.72, 0.74, 0.71),
            "macgnn": _by_seed(0.69, 0.71, 0.73, 0.70),  # +0.01 on every seed: SE 0, met
            "mmoe": _by_seed(0.60, 0.80, 0.64, 0.81),  # a larger mean gap (+0.005) that seeds do not repeat
            "mmoe_full": _by_seed(0.71, 0.73),  # behind on its 2 matched seeds
            "mgoe_no_adjust": _by_seed(0.5, 0.5, 0.5, 0.5),  # ablation aliases are not goals
        },
        ["a"],
    )
    got = {(r["better"], r["worse"]): (r["met"], r["n"], r["wins"]) for r in rows}
    assert got == {
        ("mgoe", "macgnn"): (True, 4, 4),
        ("mgoe", "mmoe"): (False, 4, 2),
        ("mgoe", "mmoe_full"): (False, 2, 0),
    }
    macgnn = next(r for r in rows if r["worse"] == "macgnn")
    assert math.isclose(macgnn["margin"], 0.01) and macgnn["se"] < 1e-12


def _seeded(test: float, valids: list[float]) -> dict:
    return {"auc_mean": test, "auc_mean_std": 0.001, "seeds": [{"valid": {"auc_mean": v}} for v in valids]}


def test_model_quality_select_on_valid_chooses_by_validation_never_by_test():
    from bench.model_quality import select_on_valid

    models = {
        "mgoe": _seeded(0.95, [0.80, 0.82]),  # best on test, worse on valid
        "mgoe[wd=1e-4]": _seeded(0.90, [0.84, 0.84]),
        "macgnn": _seeded(0.70, [0.75, 0.75]),  # ties on valid: the unsuffixed default wins the tie
        "macgnn[wd=1e-4]": _seeded(0.99, [0.76, 0.74]),
    }
    chosen, report = select_on_valid(models)
    assert set(chosen) == {"mgoe", "macgnn"}
    assert chosen["mgoe"]["selected_variant"] == "mgoe[wd=1e-4]" and chosen["mgoe"]["auc_mean"] == 0.90
    assert chosen["macgnn"]["selected_variant"] == "macgnn" and chosen["macgnn"]["auc_mean"] == 0.70
    assert math.isclose(report["mgoe"]["valid_auc_mean"]["mgoe"], 0.81)


def test_sample_space_comes_from_run_metrics_or_the_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.report import label_rates, sample_space
    from schemas import RUN_METRICS, partition_path

    root = _table(tmp_path / "t")
    tasks = ["click", "fav", "cart", "buy"]
    rates = label_rates(root, RUN, tasks)
    assert all(0 < v["no_label"] < 1 and v["one_hot"] < 1 for v in rates.values())  # exposures: multi-hot, zeros
    assert sample_space(root, RUN, rates) == "pairs or exposures (inferred)"
    assert sample_space(root, RUN, {s: {**v, "one_hot": 1.0} for s, v in rates.items()}) == "events (inferred)"
    part = partition_path(root, RUN_METRICS.name, RUN)
    rows = [{"stage": "features", "metric": "sample_space", "value": 1.0, "detail": "exposures"}]
    (tmp_path / "t" / RUN_METRICS.name / f"run_date={RUN}").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RUN_METRICS.arrow(False)), f"{part}/part-0.parquet")
    assert sample_space(root, RUN, rates) == "exposures"  # what the features stage recorded wins
