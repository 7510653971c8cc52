"""Data-quality gate between pipeline stages: reads the run date's tables, checks them, records the results.

``spark-submit jobs/quality.py --gate nodes --run-date 2026-11-23 --config my.yaml --output URI``

Runs one gate of :mod:`mgoe_spark.quality.gates` and prints one line per check. Exit code 0 when every
check passed, 3 when one failed (``--warn-only``: always 0), 2 for a user error such as a missing table.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import config_from_args, job_main
from mgoe_spark.core.metrics import StageSummary, stage
from mgoe_spark.core.session import get_spark
from mgoe_spark.core.storage import TableStore
from mgoe_spark.quality.gates import GATES, record, run_gate

HELP = "check the run date's tables after a stage (row counts, unique keys, finite weights, no empty macro node)"

QUALITY_FAILED = 3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gate", required=True, choices=sorted(GATES), help="which stage's outputs to check")
    parser.add_argument(
        "--warn-only", action="store_true", help="report failed checks but exit 0 (do not stop the pipeline)"
    )


def execute(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, app_name=f"mgoe-quality-{args.gate}")
    summary = StageSummary(f"quality:{args.gate}")
    with stage(spark, summary, f"quality gate after {args.gate} for {args.run_date}"):
        results = run_gate(spark, args.gate, cfg, args.run_date)
        record(TableStore.of(spark, cfg), args.gate, results, args.run_date)
    failed = [r for r in results if not r.passed]
    for r in results:
        print(f"[quality:{args.gate}] {r.line()}")
    summary.add("checks", len(results))
    summary.add("failed", len(failed))
    print(summary.line())
    if failed:
        names = ", ".join(f"{r.table}.{r.check}={r.value:g}" for r in failed)
        print(f"mgoe: quality gate '{args.gate}' failed {len(failed)} check(s): {names}", file=sys.stderr)
        return 0 if args.warn_only else QUALITY_FAILED
    return 0


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
