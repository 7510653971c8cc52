"""Model quality benchmark (issue 13): every model on its own table, seeds, mean +- std, label rates.

``python -m bench.model_quality tables --out DIR [--profile P] [--config F --input LOG] [overrides...]`` generates
the log once (or ingests ``--input``, a real log read with ``--config``, which then has no oracle) and
builds the default table under ``DIR/default`` plus each table variant of
:data:`mgoe_spark.config.models.TABLE_VARIANTS` (``mgoe_no_pref``: weights off; ``macgnn``: one binary graph,
unweighted k-means) under ``DIR/<variant>``, from the same raw log.

``python -m bench.model_quality train --out DIR --json PATH [--models A,B] [overrides...]`` trains every
model over ``train.seeds`` (variants on their own tables) and writes the results JSON (the trainer's
results dict plus ``label_rates`` per table and the load average before / after) and prints the label-rate
and metric tables.

``python -m bench.model_quality compare --results A.json,B.json [--reference mgoe] [--json PATH]`` merges
train-phase results (models of several runs on the same tables; a model in several of them, over other
seeds, becomes one result over all its seeds: :func:`merge_seeds`) and prints the metric table, the paired
statistics (:mod:`model.paired`: per model the per-seed AUC difference to ``--reference``, its mean, standard
error and wins out of seeds, per task and mean; issue 27), the oracle's AUC and each model's gap to it when
the tables came from the generator in the ``events`` space, and issue 27's goal checks (:func:`goal_checks`:
MGOE above MacGNN-style, MMoE and MMoE on MGOE's inputs by more than 2 standard errors of the paired
difference; they replace issue 13's unpaired margins in units of seed std's, and its checks against ablation
aliases that now equal the default). ``--select valid`` first keeps, per model, the
variant run (the same model under several ``--suffix`` labels, e.g. a weight-decay grid) with the best mean
validation AUC (:func:`select_on_valid`), so each model gets its own setting without looking at test.

The tables phase also writes ``DIR/oracle.json`` (:func:`mgoe_spark.generate.oracle.oracle_auc` on the
default table's test rows) when the default table is in the ``events`` space; the train phase copies it
into its results as ``oracle``.

Issue 27's options (items 5-6; not defaults): the paired rows come from train-phase runs with ``--suffix``,
paired with ``mgoe`` of the default run by ``compare`` (``--reference macgnn`` for the MacGNN row):
``--models mgoe --suffix [attention_norm] train.attention_norm=true``, ``[gate_full]
train.gate_input=full``, ``[lookup_tasks] train.lookup_norm=tasks``, ``--models macgnn --suffix
[own_macro] train.macgnn_own_macro=true``, and the model ``mmoe_full`` (MMoE on MGOE's inputs) beside
``mmoe``. The same rows on the planted table: :data:`bench.model_ablation.SETTINGS`.
``python -m bench.model_quality components --out DIR --json STEM.json [--config F] [overrides...]`` trains
every ablation row of :data:`COMPONENTS` (MGOE with each component toggled from its default: merging preference
scores, preference weights and score edges on their own tables, built with ``tables --variants
mgoe_pref_scores,mgoe_pref,mgoe_score_edges``) and :data:`OPTIONS`,
one results JSON per run (resumable); ``compare`` merges them with the default run's ``mgoe``, and
``python -m bench.model_quality ablation --results G.json,T.json,R.json --names generator,taobao,rr`` prints
the one ablation table: a row per component and option, a column per data set, the paired effect on the mean
test AUC (``mean ± SE (wins/seeds)``).

Cost: the tables phase is three pipeline runs (nodes + features) over one generated log; the train phase
is models x seeds x epochs streamed passes, plus a pass over the valid split per validation check (each
epoch, and every ``train.eval_every`` steps when set). Run it in the background and watch its log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

RUN_DATE = "2017-12-04"


def _cfg(args, root: str, extra: tuple[str, ...] = ()):
    from mgoe_spark.config import load_config

    overrides = [*args.overrides, *extra, f"output.root={root}"]
    return load_config(args.config or None, profile=args.profile, overrides=overrides)


def build_tables(args) -> dict:
    from mgoe_spark.config.models import TABLE_VARIANTS
    from mgoe_spark.core.metrics import write_metrics
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.features.run import run_features
    from mgoe_spark.generate.run import default_out_dir, run_generate
    from mgoe_spark.ingest.run import run_ingest
    from mgoe_spark.nodes.run import run_nodes

    out = Path(args.out)
    base = _cfg(args, str(out / "default"))
    spark = get_spark(base.spark)
    raw = args.input or default_out_dir(base, RUN_DATE)
    lines = {}
    t0 = time.perf_counter()
    if not args.input and not Path(raw).is_dir():
        print(run_generate(spark, base, raw, RUN_DATE).line(), flush=True)
    variants = {"default": ()} | {label: overrides for label, (_, overrides) in TABLE_VARIANTS.items()}
    only = [v.strip() for v in args.variants.split(",") if v.strip()] or list(variants)
    for label in only:
        overrides = variants[label]
        cfg = _cfg(args, str(out / label), overrides)
        summaries = []
        for step in (
            lambda c=cfg: run_ingest(spark, c, raw, RUN_DATE),
            lambda c=cfg: run_nodes(spark, c, RUN_DATE),
            lambda c=cfg: run_features(spark, c, RUN_DATE),
        ):
            summaries.append(s := step())
            print(f"({label}) {s.line()}", flush=True)
            lines[f"{label}:{s.stage}"] = s.metrics
        write_metrics(spark, cfg, summaries, RUN_DATE)  # run_metrics: the trainer reads the sample space there
    if not args.input and "default" in only and base.samples.resolve(base.tasks.exposure) == "events":
        from mgoe_spark.generate.oracle import oracle_auc

        lines["oracle"] = oracle_auc(spark, base, RUN_DATE)
        (out / "oracle.json").write_text(json.dumps(lines["oracle"], indent=2))
        print(f"oracle: {lines['oracle']}", flush=True)
    spark.stop()
    lines["seconds"] = round(time.perf_counter() - t0, 1)
    (out / f"tables-{'-'.join(only)}.json").write_text(json.dumps(lines, indent=2))
    return lines


def train(args) -> dict:
    from mgoe_spark.config.models import TABLE_VARIANTS
    from model.evaluate import results_table, to_json
    from model.report import label_rate_table
    from model.run import run_training

    out = Path(args.out)
    cfg = _cfg(args, str(out / "default"))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    roots = {m: str(out / m) for m in models if m in TABLE_VARIANTS}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = run_training(cfg, str(out / "default"), RUN_DATE, models, None, progress=True, table_roots=roots)
    if args.suffix:  # a variant run (its overrides in the label), mergeable beside the default run
        results["models"] = {f"{label}{args.suffix}": r for label, r in results["models"].items()}
    if (out / "oracle.json").is_file():
        results["oracle"] = json.loads((out / "oracle.json").read_text())
    results["overrides"] = list(args.overrides)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(label_rate_table(results))
    print(results_table(results, results["tasks"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(to_json(results))
    return results


class Row(NamedTuple):
    """One ablation row: the result label that differs from MGOE's defaults in this row only, its train
    overrides, and whether the component is on in the defaults (the label is then MGOE *without* it)."""

    label: str
    overrides: tuple[str, ...] = ()
    default_on: bool = True


COMPONENTS: dict[str, Row] = {
    "merging preference scores (Eq 6-7)": Row("mgoe_pref_scores", (), default_on=False),
    "preference weights (Eq 3-5)": Row("mgoe_pref", (), default_on=False),
    "score edges (Eq 10)": Row("mgoe_score_edges", (), default_on=False),
    "own macro embeddings (Eq 11)": Row("mgoe[own_macro_off]", ("train.own_macro=false",)),
    "macro attention (Eq 14-16)": Row("mgoe[attention_on]", ("train.attention=logit",), default_on=False),
    "bottom gates (Eq 12-13)": Row("mgoe[gates_on]", ("train.gate_input=micro",), default_on=False),
    "cascade (Eq 21)": Row("mgoe[cascade_on]", ("train.cascade=true",), default_on=False),
    "adjustment (Eq 22)": Row("mgoe_no_adjust"),
}
"""Issue 27's ablation rows: MGOE component -> :class:`Row`. A label in
:data:`~mgoe_spark.config.models.TABLE_VARIANTS` reads its own table; ``mgoe[x]`` is ``--models mgoe --suffix
[x]`` with the overrides. A component's effect is MGOE with it minus MGOE without it, paired by seed:
``AUC(mgoe) - AUC(label)`` for a component on by default, ``AUC(label) - AUC(mgoe)`` for one off by default
(issue 27 switched off the preference weights, the q.k attention term and the cascade: they helped on none
of the three logs, ``bench/results/model_quality_ablation_events_window15.txt``; then the score edges, which
helped on none under those defaults, ``model_quality_ablation_events_defaults27.txt``; then the merging
preference scores of the k-means node vectors, ``*_defaults27b_binary_scores_10seeds.json``, and the bottom
gates, which helped on none in ``model_quality_ablation_events_defaults27c.txt`` and over 10 seeds)."""

OPTIONS: dict[str, Row] = {
    "train.attention_norm=true": Row(
        "mgoe[attention_norm]", ("train.attention=logit", "train.attention_norm=true"), default_on=False
    ),
    "train.attention_scale_init=0": Row(
        "mgoe[att_init0]",
        ("train.attention=logit", "train.attention_norm=true", "train.attention_scale_init=0"),
        default_on=False,
    ),
    "train.attention_key=macro": Row(
        "mgoe[attention_key]",
        ("train.attention=logit", "train.attention_norm=true", "train.attention_key=macro"),
        default_on=False,
    ),
    "train.gate_input=full": Row("mgoe[gate_full]", ("train.gate_input=full",), False),
    "train.lookup_norm=tasks": Row("mgoe[lookup_tasks]", ("train.lookup_norm=tasks",), False),
    "train.neighbor_input=all": Row("mgoe[neighbors_all]", ("train.neighbor_input=all",), False),
    "train.macro_neighbors=edges": Row("mgoe[edges]", ("train.macro_neighbors=edges",), False),
}
"""Issue 27 item 6's options (off by default): option -> :class:`Row` of MGOE with it; the effect is
``AUC(label) - AUC(mgoe)``. ``attention_norm`` acts on the q.k term, so its row turns the attention on too;
``attention_scale_init=0`` is the same attention with its temperature learned from 0 (starts as off), and
``attention_key=macro`` the same attention keyed on the target's own macro embedding instead of its id."""


def component_runs() -> list[tuple[str, str, tuple[str, ...]]]:
    """The train-phase runs behind :data:`COMPONENTS` and :data:`OPTIONS`: (suffix or "", models, overrides),
    the table-only and model ablations in one run, each ``mgoe[x]`` row in a run of its own."""
    plain = [row.label for row in [*COMPONENTS.values(), *OPTIONS.values()] if "[" not in row.label]
    runs = [("", ",".join(plain), ())]
    for label, overrides, _ in [*COMPONENTS.values(), *OPTIONS.values()]:
        if "[" in label:
            runs.append((label[label.index("[") :], base_model(label), overrides))
    return runs


def components(args) -> list[str]:
    """Train every ablation run of :func:`component_runs` on ``--out``'s tables (``mgoe`` itself comes from
    the default run), one results JSON each under ``--json``'s stem (``<stem>_components<suffix>.json``),
    skipping a run whose JSON exists (resume). Returns the JSON paths, for ``compare`` with the ``mgoe`` run."""
    stem = str(Path(args.json).with_suffix(""))
    paths = []
    for suffix, models, overrides in component_runs():
        path = f"{stem}_components{suffix.replace('[', '_').replace(']', '')}.json"
        paths.append(path)
        if Path(path).is_file():
            continue
        run = argparse.Namespace(**{**vars(args), "models": models, "suffix": suffix, "json": path})
        run.overrides = [*args.overrides, *overrides]
        train(run)
    print("compare with the default run's mgoe: --results MGOE.json," + ",".join(paths))
    return paths


def ablation_rows(paired: dict) -> dict[str, dict]:
    """Component / option name -> its effect summary (mean, se, wins, n of the mean AUC), sign-corrected: the
    effect is MGOE with the component or option minus MGOE without it, whichever of the two is the default
    (:class:`Row`). Rows whose label is not among ``paired`` (a compare JSON's ``paired["models"]``, paired with
    the default ``mgoe``) are left out."""
    out = {}
    for table in (COMPONENTS, OPTIONS):
        for name, row in table.items():
            if row.label in paired:
                m = paired[row.label]["mean"]
                sign = -1.0 if row.default_on else 1.0
                wins = m["wins"] if sign > 0 else m["n"] - m["wins"]
                out[name] = {"mean": sign * m["mean"], "se": m["se"], "wins": wins, "n": m["n"]}
    return out


def ablation(args) -> dict:
    """One table, a row per component and option, a column per data set: the paired effect on the mean test
    AUC from each ``--results`` compare JSON (reference ``mgoe``), named by ``--names``."""
    names = [n.strip() for n in args.names.split(",")]
    paths = [x.strip() for x in args.results.split(",") if x.strip()]
    if len(names) != len(paths):
        raise SystemExit("ablation: --names needs one name per --results file")
    cols = {}
    for n, path in zip(names, paths, strict=True):
        cols[n] = ablation_rows(json.loads(Path(path).read_text())["paired"]["models"])
    heads = ("component (effect = with - without; * = off by default)", "option (effect = with - MGOE)")
    lines = [["row", *names]]
    for head, table in zip(heads, (COMPONENTS, OPTIONS), strict=True):
        lines.append([head, *[""] * len(names)])
        for name, row in table.items():
            cells = []
            for n in names:
                e = cols[n].get(name)
                cells.append("n/a" if e is None else f"{e['mean']:+.4f} ± {e['se']:.4f} ({e['wins']}/{e['n']})")
            star = " *" if table is COMPONENTS and not row.default_on else ""
            lines.append([f"  {name}{star}", *cells])
    widths = [max(len(r[c]) for r in lines) for c in range(len(lines[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines))
    result = {"datasets": dict(zip(names, paths, strict=True)), "effects": cols}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


GOALS = (("mgoe", "macgnn"), ("mgoe", "mmoe"), ("mgoe", "mmoe_full"))
"""Issue 27's goal pairs (better, worse): MGOE above the MacGNN-style model (own tables), MMoE and MMoE on
MGOE's inputs, each by more than 2 standard errors of the paired per-seed difference (the generator's goal
names ``macgnn`` and ``mmoe_full``, the real logs' ``macgnn`` and ``mmoe``)."""


def goal_checks(models: dict, tasks: list[str], sigmas: float = 2.0) -> list[dict]:
    """One row per :data:`GOALS` pair present in ``models`` (result label -> trainer result): the paired mean
    difference of mean test AUC over matched seeds (:func:`model.paired.paired_differences`), its standard
    error, wins out of seeds, and ``met`` = margin > ``sigmas`` x SE (never met on fewer than 2 seeds).

    >>> runs = lambda *v: {"seeds": [{"seed": s, "test": {"auc": {"a": x}, "auc_mean": x}} for s, x in enumerate(v)]}
    >>> [r["met"] for r in goal_checks({"mgoe": runs(0.72, 0.74, 0.73), "macgnn": runs(0.70, 0.73, 0.71)}, ["a"])]
    [True]
    """
    from model.paired import MEAN, paired_differences

    rows = []
    for better, worse in GOALS:
        if better in models and worse in models:
            d = paired_differences({better: models[better], worse: models[worse]}, worse, tasks)[better][MEAN]
            met = d["n"] >= 2 and d["mean"] > sigmas * d["se"]
            row = {"better": better, "worse": worse, "margin": d["mean"], "se": d["se"], "n": d["n"]}
            rows.append({**row, "wins": d["wins"], "met": bool(met)})
    return rows


def base_model(label: str) -> str:
    """A result label without its variant suffix: ``mgoe[wd=1e-4]`` -> ``mgoe``."""
    return label.split("[", 1)[0]


def valid_auc_mean(result: dict) -> float:
    """Mean over seeds of a result's validation mean AUC (at each seed's best validation check: an epoch's
    end, or a step with ``train.eval_every``)."""
    seeds = result["seeds"]
    return sum(s["valid"]["auc_mean"] for s in seeds) / len(seeds)


def select_on_valid(models: dict) -> tuple[dict, dict]:
    """Per base model, the variant (e.g. one weight decay of a grid) with the best mean validation AUC: the
    test split plays no part in the choice. Returns (base model -> chosen result, base model -> {"chosen":
    label, "valid_auc_mean": {label: mean}})."""
    groups: dict[str, dict[str, dict]] = {}
    for label, result in models.items():
        groups.setdefault(base_model(label), {})[label] = result
    chosen, report = {}, {}
    for base, variants in groups.items():
        scores = {label: valid_auc_mean(r) for label, r in variants.items()}
        best = max(scores, key=lambda label: (scores[label], label == base))
        chosen[base] = {**variants[best], "selected_variant": best}
        report[base] = {"chosen": best, "valid_auc_mean": scores}
    return chosen, report


def print_paired(merged: dict, reference: str) -> None:
    """Add ``merged["paired"]`` (:func:`model.paired.paired_differences` to ``reference``) and print its table;
    says so and adds nothing when the reference model is not among the results."""
    from model.paired import paired_differences, paired_table

    if reference not in merged["models"]:
        print(f"no paired statistics: reference model {reference!r} is not among {', '.join(merged['models'])}")
        return
    merged["paired"] = {
        "reference": reference,
        "models": paired_differences(merged["models"], reference, merged["tasks"]),
    }
    print(f"paired differences to {reference} (test AUC; mean ± standard error over seeds, (wins/seeds)):")
    print(paired_table(merged["paired"]["models"], merged["tasks"], reference))
    print()


def print_oracle(merged: dict) -> None:
    """Print the oracle's AUC (when a source carries one) and each model's gap to it, per task and mean;
    adds ``merged["oracle_gap"]``: label -> {task: oracle - model mean AUC, "mean": ...}."""
    from model.report import oracle_line

    oracle = merged.get("oracle")
    if not oracle:
        return
    tasks = merged["tasks"]
    print(f"oracle: {oracle_line(oracle, tasks)}")
    gaps = {}
    for label, r in merged["models"].items():
        gaps[label] = {t: oracle["auc"][t] - r["auc"][t]["mean"] for t in tasks}
        gaps[label]["mean"] = oracle["auc_mean"] - r["auc_mean"]
        cells = "  ".join(f"{t} {gaps[label][t]:.4f}" for t in [*tasks, "mean"])
        print(f"{label:>16} gap to the oracle: {cells}")
    merged["oracle_gap"] = gaps
    print()


def merge_seeds(first: dict, second: dict, tasks: list[str]) -> dict:
    """One model's results over the seeds of two runs (a comparison split per seed, issue 27): the union of
    their per-seed runs, re-aggregated (:func:`model.train.aggregate`). Runs of the same seeds, or on another
    table, are refused with one line: their per-seed numbers would be ambiguous."""
    from model.train import aggregate

    root = (first.get("examples_root"), second.get("examples_root"))
    if root[0] != root[1]:
        raise ValueError(f"{first.get('model')}: runs on different tables ({root[0]} and {root[1]}) cannot merge")
    seen = {s["seed"] for s in first["seeds"]} & {s["seed"] for s in second["seeds"]}
    if seen:
        raise ValueError(f"{first.get('model')}: seeds {sorted(seen)} are in two results; pass each seed once")
    runs = sorted([*first["seeds"], *second["seeds"]], key=lambda s: s["seed"])
    return {**first, **aggregate(runs, tasks)}


def compare(args) -> dict:
    from model.evaluate import results_table, to_json

    merged: dict = {}
    for path in [p.strip() for p in args.results.split(",") if p.strip()]:
        r = json.loads(Path(path).read_text())
        if not merged:
            merged = {**r, "models": {}, "sources": []}
        for label, result in r["models"].items():
            old = merged["models"].get(label)
            merged["models"][label] = result if old is None else merge_seeds(old, result, merged["tasks"])
        merged["sources"].append({"path": path, "seconds": r.get("seconds"), "load_average": r.get("load_average")})
    if args.select == "valid":
        merged["models"], merged["selection"] = select_on_valid(merged["models"])
        for base, sel in merged["selection"].items():
            others = ", ".join(f"{label} {v:.4f}" for label, v in sorted(sel["valid_auc_mean"].items()))
            print(f"{base:>16}: chose {sel['chosen']} on valid mean AUC ({others})")
    merged["goal_checks"] = goal_checks(merged["models"], merged["tasks"])
    print(results_table(merged, merged["tasks"]))
    print()
    print_paired(merged, args.reference)
    print_oracle(merged)
    for c in merged["goal_checks"]:
        verdict = "met" if c["met"] else "NOT met"
        paired = f"{c['margin']:+.4f} ± {c['se']:.4f} ({c['wins']}/{c['n']})"
        print(f"{c['better']:>16} > {c['worse']:<16} paired margin {paired}, goal > 2 SE: {verdict}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(to_json(merged))
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", choices=["tables", "train", "compare", "components", "ablation"])
    p.add_argument("--out", default="", help="directory of the tables (one root per variant)")
    p.add_argument("--results", default="", help="compare phase: train-phase result JSONs, comma-separated")
    p.add_argument("--profile", default="default")
    p.add_argument(
        "--config", default="", help="a config file under the profile (e.g. configs/taobao_fav_cart_buy.yaml)"
    )
    p.add_argument(
        "--input", default="", help="tables phase: a real log to ingest instead of a generated one (no oracle)"
    )
    p.add_argument(
        "--variants", default="", help="tables phase: only these tables (default and TABLE_VARIANTS' labels)"
    )
    p.add_argument("--names", default="", help="ablation phase: a data-set name per --results file")
    p.add_argument("--json", default="bench/results/model_quality.json")
    p.add_argument(
        "--select",
        choices=["none", "valid"],
        default="none",
        help="compare phase: 'valid' keeps, per model, the variant (suffix) with the best validation mean AUC",
    )
    p.add_argument(
        "--reference", default="mgoe", help="compare phase: the model every other is paired with, seed by seed"
    )
    p.add_argument("--suffix", default="", help="train phase: append this to every result label (e.g. [tower])")
    p.add_argument("--models", default="mgoe,macgnn,mmoe,mmoe_full", help="train phase (default: issue 27's goals)")
    p.add_argument("overrides", nargs="*", help="config overrides a.b=value")
    args = p.parse_intermixed_args(argv)
    if args.phase not in ("compare", "ablation") and not args.out:
        p.error(f"the {args.phase} phase needs --out DIR")
    if args.phase in ("compare", "ablation"):
        paths = [x.strip() for x in args.results.split(",") if x.strip()]
        missing = [x for x in paths if not Path(x).is_file()]
        if not paths or missing:
            p.error(f"--results: {', '.join(missing) or 'none given'}: need train-phase result JSON files")
    if args.phase == "compare":
        try:
            compare(args)
        except ValueError as e:  # results that cannot merge: one line, exit 2
            p.error(str(e))
        return 0
    {"tables": build_tables, "train": train, "components": components, "ablation": ablation}[args.phase](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
