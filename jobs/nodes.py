"""``mgoe nodes`` / ``spark-submit jobs/nodes.py``: MTMG stage 1 for a run date.

Reads the interactions of ``--run-date``, takes the feature window up to the training cutoff, computes the
pair scores (Eq 6-7), sketched node vectors, preference weights (Eq 8; all 1 unless ``weights.enabled``) and
fits weighted k-means with FAISS on every partition (Eq 9) for users and items. Writes pair_scores,
node_vectors, node_weights, centroids, kmeans_stats and assignments (snapshot 'train'). Warm-starts from the
previous run's centroids when ``kmeans.warm_start`` is on, so macro ids keep their meaning from day to day.
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import execute_stages, job_main

HELP = "MTMG stage 1: pair scores, node vectors, weights, weighted k-means -> macro nodes"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    del parser  # only the common options


def execute(args: argparse.Namespace) -> int:
    return execute_stages(args, ["nodes"])


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
