"""``mgoe features`` / ``spark-submit jobs/features.py``: MTMG stage 2 for a run date.

Needs ``mgoe nodes`` for the same run date. Builds both feature snapshots (training cutoff c1 and test
cutoff c2, with the clustering fitted at c1: known nodes keep their macro id, new nodes go to the nearest
centroid), then macro edges (k hops), recent neighbors, the task lookup, samples and the training examples.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import execute_stages, job_main

HELP = "MTMG stage 2: macro edges, recent neighbors, task lookup, samples, training examples"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    del parser  # only the common options


def execute(args: argparse.Namespace) -> int:
    return execute_stages(args, ["features"])


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
