"""Paired statistics of a model comparison (issue 27): per-seed differences to a reference model matched by
seed number, their mean, standard error (ddof 1) and wins, in ``bench.model_quality compare`` and the report."""

from __future__ import annotations

import json
import math

import pytest

from model.paired import paired_differences, paired_table, summarize
from model.report import paired_lines

TASKS = ["click", "buy"]


def _model(per_seed: dict[int, tuple[float, float]]) -> dict:
    """A trainer result with per-seed test AUCs {seed: (click, buy)}, listed in the given seed order."""
    seeds = [
        {"seed": s, "test": {"auc": {"click": c, "buy": b}, "auc_mean": (c + b) / 2}} for s, (c, b) in per_seed.items()
    ]
    means = [x["test"]["auc_mean"] for x in seeds]
    auc = {t: {"mean": sum(x["test"]["auc"][t] for x in seeds) / len(seeds), "std": 0.0} for t in TASKS}
    logloss = {t: {"mean": 0.5, "std": 0.0} for t in TASKS}
    return {
        "seeds": seeds,
        "auc": auc,
        "auc_mean": sum(means) / len(means),
        "auc_mean_std": 0.0,
        "logloss": logloss,
        "logloss_mean": 0.5,
        "logloss_mean_std": 0.0,
    }


# reference (mgoe) and two models; macgnn lists its seeds in another order and lacks seed 3
MODELS = {
    "mgoe": _model({0: (0.80, 0.70), 1: (0.82, 0.72), 2: (0.81, 0.74), 3: (0.90, 0.90)}),
    "macgnn": _model({2: (0.84, 0.74), 0: (0.81, 0.70), 1: (0.81, 0.68)}),
    "mmoe": _model({0: (0.70, 0.60), 1: (0.70, 0.60), 2: (0.70, 0.60), 3: (0.70, 0.60)}),
}


def test_paired_differences_match_seeds_by_number_with_ddof_one():
    p = paired_differences(MODELS, "mgoe", TASKS)
    assert set(p) == {"macgnn", "mmoe"}
    m = p["macgnn"]
    assert m["seeds"] == [0, 1, 2]  # seed 3 only in the reference: left out
    # click: 0.81-0.80, 0.81-0.82, 0.84-0.81 = +0.01, -0.01, +0.03: mean 0.01, std (ddof 1) 0.02
    assert m["click"]["diffs"] == pytest.approx([0.01, -0.01, 0.03])
    assert m["click"]["mean"] == pytest.approx(0.01)
    assert m["click"]["se"] == pytest.approx(0.02 / math.sqrt(3))  # ddof 0 would give 0.0094
    assert m["click"]["wins"] == 2 and m["click"]["n"] == 3
    # buy: 0, -0.04, 0: no win (a tie is not a win), mean -0.04/3
    assert m["buy"]["diffs"] == pytest.approx([0.0, -0.04, 0.0]) and m["buy"]["wins"] == 0
    assert m["mean"]["diffs"] == pytest.approx([0.005, -0.025, 0.015])
    mm = p["mmoe"]["mean"]  # mean AUC 0.65 against 0.75, 0.77, 0.775, 0.90
    assert mm["diffs"] == pytest.approx([-0.1, -0.12, -0.125, -0.25]) and mm["wins"] == 0
    assert mm["n"] == 4 and mm["mean"] == pytest.approx(-0.14875)
    assert mm["se"] == pytest.approx(math.sqrt(sum((d + 0.14875) ** 2 for d in mm["diffs"]) / 3) / 2)
    with pytest.raises(KeyError, match="reference model 'ple'"):
        paired_differences(MODELS, "ple", TASKS)


def test_summarize_one_seed_and_nan():
    one = summarize([0.02])
    assert one["n"] == 1 and one["mean"] == 0.02 and math.isnan(one["se"]) and one["wins"] == 1
    some = summarize([0.01, math.nan, 0.03])
    assert some["n"] == 2 and some["mean"] == pytest.approx(0.02) and some["se"] == pytest.approx(0.01)


def test_table_compare_and_report_show_the_same_numbers(tmp_path, capsys):
    from bench.model_quality import main

    text = paired_table(paired_differences(MODELS, "mgoe", TASKS), TASKS, "mgoe")
    assert "+0.0100 ± 0.0115 (2/3)" in text and "0: +0.0050, 1: -0.0250, 2: +0.0150" in text
    paths = []
    for k, names in enumerate((["mgoe", "mmoe"], ["macgnn"])):
        path = tmp_path / f"r{k}.json"
        run = {"tasks": TASKS, "run_date": "2024-01-01", "models": {n: MODELS[n] for n in names}}
        if k == 0:
            run["oracle"] = {"auc": {"click": 0.9, "buy": 0.8}, "auc_mean": 0.85, "rows": 100, "split": "test"}
        path.write_text(json.dumps(run))
        paths.append(str(path))
    out = tmp_path / "merged.json"
    assert main(["compare", "--results", ",".join(paths), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired differences to mgoe" in printed and "+0.0100 ± 0.0115 (2/3)" in printed
    assert "oracle: test AUC click 0.9000, buy 0.8000; mean 0.8500" in printed
    merged = json.loads(out.read_text())
    assert merged["paired"]["reference"] == "mgoe"
    assert merged["paired"]["models"]["macgnn"]["click"]["wins"] == 2
    assert merged["oracle_gap"]["mmoe"]["mean"] == pytest.approx(0.85 - MODELS["mmoe"]["auc_mean"])
    assert main(["compare", "--results", paths[0], "--reference", "macgnn", "--json", str(out)]) == 0
    assert "no paired statistics: reference model 'macgnn'" in capsys.readouterr().out
    section = "\n".join(paired_lines({"models": MODELS, "tasks": TASKS}))
    assert "## Paired differences to mgoe (test AUC, same seeds)" in section and "(2/3)" in section
    one_seed = {n: {**r, "seeds": r["seeds"][:1]} for n, r in MODELS.items()}
    assert paired_lines({"models": one_seed, "tasks": TASKS}) == []  # one seed: no standard error to show


def test_ablation_table_signs_components_and_options(tmp_path, capsys):
    from bench.model_quality import COMPONENTS, OPTIONS, component_runs, main

    def runs(*values):  # the same AUC on both tasks
        return _model({s: (v, v) for s, v in enumerate(values)})

    no_adjust, norm = COMPONENTS["adjustment (Eq 22)"].label, OPTIONS["train.attention_norm=true"].label
    cascade_on = COMPONENTS["cascade (Eq 21)"].label  # off by default: its label is MGOE *with* it
    assert COMPONENTS["adjustment (Eq 22)"].default_on and not COMPONENTS["cascade (Eq 21)"].default_on
    models = {
        "mgoe": runs(0.70, 0.72, 0.71),
        no_adjust: runs(0.68, 0.71, 0.70),
        cascade_on: runs(0.69, 0.73, 0.70),
        norm: runs(0.71, 0.71, 0.73),
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"tasks": TASKS, "run_date": "2024-01-01", "models": models}))
    merged = tmp_path / "merged.json"
    assert main(["compare", "--results", str(path), "--json", str(merged)]) == 0
    table = tmp_path / "ablation.json"
    assert main(["ablation", "--results", f"{merged},{merged}", "--names", "a,b", "--json", str(table)]) == 0
    printed = capsys.readouterr().out
    effects = json.loads(table.read_text())["effects"]["a"]
    # the adjustment helps: MGOE - without = (0.02 + 0.01 + 0.01) / 3 on 3 of 3 seeds;
    # the option: (0.01 - 0.01 + 0.02) / 3
    adjust = effects["adjustment (Eq 22)"]
    assert adjust["mean"] == pytest.approx(0.04 / 3) and adjust["wins"] == 3
    # the cascade is off by default: with - without = (-0.01 + 0.01 - 0.01) / 3, 1 win of 3
    cascade = effects["cascade (Eq 21)"]
    assert cascade["mean"] == pytest.approx(-0.01 / 3) and cascade["wins"] == 1
    assert effects["train.attention_norm=true"]["mean"] == pytest.approx(0.02 / 3)
    assert effects["train.attention_norm=true"]["wins"] == 2
    assert "adjustment (Eq 22)" in printed and "+0.0133" in printed and "n/a" in printed  # rows not run: n/a
    assert "cascade (Eq 21) *" in printed and "-0.0033" in printed  # * marks a component off by default
    # every row is trained by exactly one run, with its overrides
    labels = [lbl for suffix, models_, _ in component_runs() for lbl in (f"{m}{suffix}" for m in models_.split(","))]
    assert sorted(labels) == sorted(row.label for row in [*COMPONENTS.values(), *OPTIONS.values()])


def _seed_runs(root: str, **by_seed: float) -> dict:
    seeds = [
        {"seed": int(k[1:]), "test": {"auc": {"a": v}, "logloss": {"a": 0.5}, "auc_mean": v, "logloss_mean": 0.5}}
        for k, v in by_seed.items()
    ]
    return {"model": "mgoe", "examples_root": root, "seeds": seeds}


def test_compare_merges_a_model_run_split_per_seed_and_refuses_ambiguous_merges(tmp_path, capsys):
    # issue 27: a comparison split into runs per seed is one result per model again in compare (seeds
    # concatenated, mean / std over all of them); the same seed twice, or another table, is one line, exit 2
    from bench.model_quality import main, merge_seeds

    merged = merge_seeds(_seed_runs("/t", s0=0.70, s1=0.72), _seed_runs("/t", s2=0.74), ["a"])
    assert [s["seed"] for s in merged["seeds"]] == [0, 1, 2]
    assert merged["auc_mean"] == pytest.approx(0.72) and merged["auc"]["a"]["values"] == [0.70, 0.72, 0.74]
    with pytest.raises(ValueError, match=r"seeds \[1\] are in two results"):
        merge_seeds(_seed_runs("/t", s0=0.7, s1=0.7), _seed_runs("/t", s1=0.7), ["a"])
    with pytest.raises(ValueError, match="different tables"):
        merge_seeds(_seed_runs("/t", s0=0.7), _seed_runs("/u", s1=0.7), ["a"])
    paths = []
    for i, run in enumerate([_seed_runs("/t", s0=0.7, s1=0.7), _seed_runs("/t", s1=0.7)]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({"tasks": ["a"], "models": {"mgoe": run}}))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--results", ",".join(map(str, paths)), "--json", str(tmp_path / "c.json")])
    assert exit_.value.code == 2 and "seeds [1] are in two results" in capsys.readouterr().err
