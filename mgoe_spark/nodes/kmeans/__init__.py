"""Weighted k-means with FAISS on Spark partitions (SPEC 4.4, Eq 9).

Objective (Eq 9): minimise ``sum_v w_v ||z_v - mu_c(v)||^2``; a centroid is the weighted mean
``mu_k = sum_{v in k} w_v z_v / sum_{v in k} w_v``. Input: a DataFrame ``(node_id int64, vector array<float>
of length r, weight double)``.

Modules, in the order a fit uses them:

- :mod:`.blocks`: worker-side code (Arrow -> numpy blocks, FAISS assignment, per-partition sums);
- :mod:`.engines` / :mod:`.resident`: where the blocks live during a fit: a cached RDD with one Spark job per
  iteration (default: Spark's channels only), or, opt-in, resident in the Python workers of one Spark job per
  fit that exchange sums with the driver over an authenticated socket (:mod:`.frames`; falls back to jobs);
- :mod:`.loop`: input checks, k-means++ init, update and stop rules, the one update loop of both engines;
- :mod:`.model`: :class:`WeightedKMeans` (fit, assign, id matching, save / load, table rows);
- :mod:`.fingerprint`: which settings define the vector space (warm starts only within one).

Only k x r sized things ever reach the driver (plus the bounded init sample). Determinism: every random
choice is a hash of (seed, node id) or a seeded numpy generator on the driver, blocks are cut per input
partition, and the per-block sums are added as exact fixed-point integers, so the same input DataFrame and
seed give the same centroids and assignments whichever engine runs and however many task slots there are.
"""

from mgoe_spark.nodes.kmeans.blocks import ASSIGN_SCHEMA, hash_uniform, minibatch_mask
from mgoe_spark.nodes.kmeans.fingerprint import space_fingerprint
from mgoe_spark.nodes.kmeans.loop import IterationStats, kmeans_plusplus, match_to_previous
from mgoe_spark.nodes.kmeans.model import WeightedKMeans, warm_start_candidate

__all__ = [
    "ASSIGN_SCHEMA",
    "IterationStats",
    "WeightedKMeans",
    "hash_uniform",
    "kmeans_plusplus",
    "match_to_previous",
    "minibatch_mask",
    "space_fingerprint",
    "warm_start_candidate",
]
