"""``mgoe demo``: the whole thing on the embedded default, on one machine.

Generates a synthetic multi-behavior log with planted user / item groups (``generator.*``), ingests it,
builds the MTMG (``nodes`` + ``features``), trains MGOE and MMoE (``--models``) over ``train.seeds``, prints
the sample space, the label rates and cold-start share per split, the per-task AUC / Logloss table and (in
the ``events`` space) the oracle's AUC, the generator's true probabilities scored as a model. A model with its own
table (``mgoe_pref``: with preference weights; ``macgnn``: one binary graph, unweighted k-means; see
``mgoe_spark.config.models.TABLE_VARIANTS``) gets that table built from the same log under
``<output>/tables_<model>`` and trains on it; the table prints which root each model read. It writes a
report (Markdown + PNG plots: cluster sizes, edge-weight distributions, training curves, AUC per task)
and, with ``--json``, the results as JSON (``models.<name>.auc_mean`` / ``logloss_mean``). Everything lands
under ``output.root`` (``--output``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.common import job_main
from mgoe_spark.core.metrics import StageSummary

HELP = "generate data, build the MTMG, train MGOE and MMoE, print AUC/Logloss and write a report"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("demo")
    g.add_argument("--models", metavar="A,B", default="mgoe,mmoe", help="models to train (default: mgoe,mmoe)")
    g.add_argument("--report", metavar="DIR", help="report directory (default: <output>/report/<run-date>)")
    g.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument(
        "--overwrite", action="store_true", help="replace <output>/raw/<run-date> even if generate did not write it"
    )


def execute(args: argparse.Namespace) -> int:
    from jobs.common import config_from_args
    from mgoe_spark.config import with_overrides
    from mgoe_spark.config.models import TABLE_VARIANTS
    from mgoe_spark.core.metrics import write_metrics
    from mgoe_spark.core.report import append_sections, metric_rows, pipeline_plots, step_sections
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.core.storage import TableStore
    from mgoe_spark.features.run import run_features
    from mgoe_spark.generate.run import default_out_dir, run_generate
    from mgoe_spark.ingest.run import run_ingest
    from mgoe_spark.nodes.run import run_nodes
    from model.run import run_training

    start = time.perf_counter()
    cfg = config_from_args(args)
    run_date = args.run_date
    report_dir = Path(args.report or f"{cfg.output.root}/report/{run_date}")
    from pyspark.sql import SparkSession

    ours = SparkSession.getActiveSession() is None  # a session the caller made (a notebook, the tests) stays
    # the JVM's own notices and log lines go to a file: the demo prints only its own lines
    spark = get_spark(cfg.spark, jvm_log=f"{cfg.output.root}/logs/spark-{run_date}.log")
    store = TableStore.of(spark, cfg)
    raw = default_out_dir(cfg, run_date)
    summaries: list[StageSummary] = []
    steps = [
        ("generate", lambda: run_generate(spark, cfg, raw, run_date, overwrite=args.overwrite)),
        ("ingest", lambda: run_ingest(spark, cfg, raw, run_date)),
        ("nodes", lambda: run_nodes(spark, cfg, run_date)),
        ("features", lambda: run_features(spark, cfg, run_date)),
    ]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    table_roots = {}
    for label in models:  # models that read their own table: the same log, their own pipeline config
        if label in TABLE_VARIANTS:
            vcfg = with_overrides(cfg, [*TABLE_VARIANTS[label][1], f"output.root={cfg.output.root}/tables_{label}"])
            table_roots[label] = vcfg.output.root
            steps += [
                (f"ingest ({label} table)", lambda v=vcfg: run_ingest(spark, v, raw, run_date)),
                (f"nodes ({label} table)", lambda v=vcfg: run_nodes(spark, v, run_date)),
                (f"features ({label} table)", lambda v=vcfg: run_features(spark, v, run_date)),
            ]
    for i, (name, step) in enumerate(steps, start=1):
        print(f"[{i}/{len(steps) + 1}] {name} ...", flush=True)
        summaries.append(step())
        if "(" in name:  # a variant table's stage: its own name in run_metrics and the results
            summaries[-1].stage = f"{summaries[-1].stage}_{name.split('(')[1].split()[0]}"
        print(summaries[-1].line(), flush=True)
    write_metrics(spark, cfg, summaries, run_date)
    oracle = _oracle(spark, cfg, run_date)
    step_lines = step_sections(metric_rows(store, run_date), report_dir)
    pipeline_lines = step_lines + pipeline_plots(spark, store, run_date, report_dir)
    if ours:
        spark.stop()  # free the JVM's memory and cores for the trainer

    print(f"[{len(steps) + 1}/{len(steps) + 1}] train {', '.join(models)} (seeds {cfg.train.seeds}) ...", flush=True)
    t0 = time.perf_counter()
    extra = {"table_roots": table_roots, "oracle": oracle}
    results = run_training(cfg, cfg.output.root, run_date, models, report_dir, progress=not args.quiet, **extra)
    train_seconds = time.perf_counter() - t0
    report = report_dir / "report.md"
    stage_lines = [s.line() for s in summaries] + [f"[train] seconds={train_seconds:,.1f}"]
    append_sections(report, stage_lines, pipeline_lines)

    results["pipeline"] = {s.stage: s.metrics for s in summaries} | {"train": {"seconds": round(train_seconds, 1)}}
    results["seconds_total"] = round(time.perf_counter() - start, 1)
    _print_and_write(results, args.json)
    print(f"\ndemo done in {results['seconds_total']:,.0f} s: tables under {cfg.output.root}/, report {report}")
    return 0


def _print_and_write(results: dict, json_path: str | None) -> None:
    """Print the sample space and label rates, the metric table and the oracle's AUC; write the JSON."""
    from model.evaluate import results_table, to_json
    from model.report import label_rate_table, oracle_line

    print()
    print(label_rate_table(results))
    print(results_table(results, results["tasks"]))
    if oracle := results.get("oracle"):
        print(f"oracle (the generator's true probabilities): {oracle_line(oracle, results['tasks'])}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(to_json(results))


def _oracle(spark, cfg, run_date: str) -> dict | None:
    """The oracle's AUC on the test rows (:func:`mgoe_spark.generate.oracle.oracle_auc`): the headroom of the
    comparison; ``None`` outside the ``events`` sample space, whose labels the oracle scores."""
    from mgoe_spark.generate.oracle import oracle_auc

    if cfg.samples.resolve(cfg.tasks.exposure) != "events":
        return None
    return oracle_auc(spark, cfg, run_date)


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
