"""``mgoe report``: rebuild the report (Markdown + PNG plots) from a results JSON.

Takes the JSON that ``mgoe train --json``, ``mgoe evaluate --json`` or ``mgoe demo --json`` wrote and writes
``report.md``, ``auc_per_task.png`` and (when the results hold training histories) ``training_curves.png``
to ``--out``. With ``--tables ROOT`` it also reads the pipeline tables of the run date under ROOT (Spark):
cluster sizes and macro edge-weight histograms as PNGs (only K-sized and histogram-bin-sized aggregates
reach the driver), the stage summary lines of the ``run_metrics`` table and its step timings (a table and a
plot of where the time went). Without ``--tables``, the stage lines a demo's results carry are used. Example::

  mgoe report --results results.json --out reports/2017-12-03 --tables OUT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import config_from_args, job_main
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.metrics import StageSummary
from mgoe_spark.core.report import append_sections, metric_rows, pipeline_plots, stage_lines, step_sections

HELP = "rebuild the Markdown + PNG report from a results JSON of train / evaluate / demo (--json)"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("report")
    g.add_argument("--results", metavar="PATH", required=True, help="results JSON of mgoe train/evaluate/demo --json")
    g.add_argument("--out", metavar="DIR", required=True, help="directory for report.md and the PNGs")
    g.add_argument(
        "--tables",
        metavar="URI",
        help="table root of the pipeline run: add cluster-size and edge-weight plots and the run_metrics lines",
    )


def execute(args: argparse.Namespace) -> int:
    import datetime as dt

    from model.report import ResultsError, load_results, write_report

    explicit_date = args.run_date != dt.date.today().isoformat()
    cfg = config_from_args(args, writes_output=False)
    try:
        results = load_results(args.results)
    except ResultsError as exc:
        raise UserError(str(exc)) from None
    out = Path(args.out)
    try:
        report = write_report(results, out)
    except OSError as exc:
        raise UserError(f"cannot write the report to '{out}': {exc.strerror or exc}; pass --out DIR") from None
    pipeline = results.get("pipeline") or {}
    lines = [StageSummary(name, dict(metrics)).line() for name, metrics in pipeline.items()]
    plot_lines: list[str] = []
    if args.tables:
        from mgoe_spark.core.session import get_spark
        from mgoe_spark.core.storage import TableStore

        # The run date of the results, unless --run-date names another one.
        run_date = args.run_date if explicit_date else results["run_date"]
        spark = get_spark(cfg.spark)
        store = TableStore(spark, args.tables, cfg.output.format)
        rows = metric_rows(store, run_date)
        lines = stage_lines(rows) or lines
        plot_lines = step_sections(rows, out) + pipeline_plots(spark, store, run_date, out)
    append_sections(report, lines, plot_lines)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
