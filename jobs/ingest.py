"""``mgoe ingest``: a raw multi-behavior log -> interactions, rejects, vocab_users, vocab_items (SPEC 7, 8).

Reads the input (Taobao / Tenrec / generic CSV: as text lines; generic Parquet: as rows), parses it with
:mod:`mgoe_spark.ingest.parse`, and writes the four tables for the run date. The vocabularies are append-only
across run dates, in any ingest order (a backfill of an earlier date keeps the ids later dates gave): see
:func:`mgoe_spark.ingest.run.current_vocab`.
Prints one summary line and writes it to ``run_metrics``.

The stage itself is :mod:`mgoe_spark.ingest.run`.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import config_from_args, job_main
from mgoe_spark.config import INPUT_FORMATS
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.metrics import write_metrics
from mgoe_spark.ingest.run import run_ingest

HELP = "read a raw multi-behavior log into interactions, rejects and id vocabularies"
DESCRIPTION = """\
Read a raw multi-behavior log into the interactions, rejects, vocab_users and vocab_items tables of the run
date (SPEC 7, 8). Vocabularies are append-only: ids given by any earlier ingest (of an earlier or a later run
date) are kept and new ids appended; ingest one run date at a time into one output root.

Formats (input.format / --format): taobao (UserBehavior CSV, no header), tenrec (QB-video CSV with header;
file order is time order), generic_csv / generic_parquet (columns named in the config's input section).
Malformed rows go to the rejects table with the raw line and a reason; exact duplicates are removed and
counted. The first input.check_rows records are parsed before anything is written: when more than
quality.max_reject_fraction of them are rejected (a wrong --config), ingest stops with one line. Example:

  mgoe ingest --config configs/taobao_userbehavior.yaml --input UserBehavior.csv --run-date 2017-12-03
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="PATH", help="raw log file, directory or glob (default: input.path)")
    parser.add_argument("--format", choices=INPUT_FORMATS, help="input format (default: input.format)")


def execute(args: argparse.Namespace) -> int:
    if args.format:
        args.overrides = [*args.overrides, f"input.format={args.format}"]
    cfg = config_from_args(args)
    input_path = args.input or cfg.input.path
    if not input_path:
        raise UserError("no input given: pass --input PATH or set input.path in the config")
    from mgoe_spark.core.session import get_spark

    spark = get_spark(cfg.spark)
    summary = run_ingest(spark, cfg, input_path, args.run_date)
    write_metrics(spark, cfg, [summary], args.run_date)
    print(summary.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
