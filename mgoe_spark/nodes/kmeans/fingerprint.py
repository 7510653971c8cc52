"""The fingerprint of a node-vector space: which settings make yesterday's centroids comparable with today's.

Node vectors (SPEC 4.2) are sketched rows of S S^T / S^T S: their coordinates depend on the sketch's random
projection (the ``sketch`` sub-seed of the config seed), the sketch settings (r, normalization, distribution),
the pair scores (task order, beta) and, through the weighted objective (Eq 9), on the node-weight settings.
Centroids fitted under other settings live in another space: a warm start from them, and the Hungarian id
matching that follows, would return "stable" macro ids that mean nothing. Each fit stores this fingerprint
with its centroids (CENTROIDS.fingerprint); a warm start only happens when it is equal. O(1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgoe_spark.config import MgoeConfig

SCHEME = 1  # bump when the inputs below change meaning


def space_fingerprint(cfg: MgoeConfig, side: str) -> str:
    """16 hex digits identifying the vector space of ``side``'s node vectors under ``cfg``."""
    spec = {
        "scheme": SCHEME,
        "side": side,
        "sketch": dataclasses.asdict(cfg.sketch),
        "sketch_seed": cfg.sub_seed("sketch"),
        "scores": dataclasses.asdict(cfg.scores),
        "tasks": list(cfg.tasks.order),
        "weights": dataclasses.asdict(cfg.weights),
        "weights_seed": cfg.sub_seed("weights"),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
