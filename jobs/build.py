"""``mgoe build`` / ``spark-submit jobs/build.py``: the whole MTMG build for a run date in one Spark job.

With ``--input PATH`` it ingests the raw log first (format ``input.format``); without it, it reads the
interactions table of ``--run-date`` that ``mgoe ingest`` wrote. Then stage 1 (``mgoe nodes``) and stage 2
(``mgoe features``). All tables land under ``output.root`` (``--output``), partitioned by run date.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import execute_stages, job_main

HELP = "the whole MTMG build: [ingest ->] nodes -> features, for one run date"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="PATH", help="raw log to ingest first (default: use ingested tables)")


def execute(args: argparse.Namespace) -> int:
    return execute_stages(args, ["nodes", "features"], input_path=args.input)


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
