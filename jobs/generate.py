"""``mgoe generate``: write the synthetic multi-behavior log (the embedded default data) and its ground truth.

Writes

- the raw log as headerless Taobao UserBehavior CSV (``user_id,item_id,category_id,behavior,ts``) to
  ``--out`` (default ``<output.root>/raw/<run_date>``), atomically: the files are written to a hidden
  sibling directory and renamed into place, so a killed job leaves no partial log and a re-run replaces
  the old one; a non-empty directory that generate did not write (no ``_MGOE_GENERATED`` file in it) is
  refused unless ``--overwrite`` is given;
- the planted groups as the ``ground_truth_users`` / ``ground_truth_items`` tables (run-date partition).

The generative model and its parameters (config section ``generator``) are documented in
:mod:`mgoe_spark.generate.events`. Cost: one map-only pass over the generated rows (no shuffle); the counts per
task are collected during the write (a Spark ``Observation``), not by a second pass.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import config_from_args, job_main
from mgoe_spark.generate.run import default_out_dir, run_generate

HELP = "write the synthetic multi-behavior log (Taobao CSV) with planted user/item groups"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="directory for the raw CSV log (default: <output.root>/raw/<run_date>); a log generate wrote there "
        "before is replaced, any other non-empty directory only with --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even if it is a non-empty directory generate did not write",
    )


def execute(args: argparse.Namespace) -> int:
    from mgoe_spark.core.session import get_spark

    cfg = config_from_args(args)
    out_dir = args.out or default_out_dir(cfg, args.run_date)
    spark = get_spark(cfg.spark)
    summary = run_generate(spark, cfg, out_dir, args.run_date, overwrite=args.overwrite)
    print(f"{summary.line()} out={out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
