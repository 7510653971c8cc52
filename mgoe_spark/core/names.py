"""The names every stage, the quality gates and the trainer share: one definition each.

>>> SIDES, SPLITS, SNAPSHOTS
(('user', 'item'), ('train', 'valid', 'test'), ('train', 'valid', 'test'))
>>> WRITTEN_BY["centroids"]
'mgoe nodes'
"""

from __future__ import annotations

USER, ITEM = "user", "item"
SIDES = (USER, ITEM)
"""The two node types of the bipartite graph, in the order every stage loops over them."""

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)
"""Sample splits (SPEC 3): train rows read the train snapshot's features, test rows the test snapshot's, and
valid rows the train snapshot's (``windows.validation=split``) or their own (``window``)."""
SNAPSHOTS = (TRAIN, VALID, TEST)
"""Feature snapshots (SPEC 3) in cutoff order: features at the training cutoff c1, at the validation cutoff
cv (only with ``windows.validation=window``) and at the test cutoff c2."""

SAMPLE_SPACE_METRIC = "sample_space"
"""run_metrics row of the ``features`` stage whose ``detail`` names the sample space (SPEC 5) of the run
date's samples and training_examples: ``events``, ``exposures`` or ``pairs``."""

STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "ingest": ("interactions", "vocab_users", "vocab_items", "rejects"),
    "nodes": ("windows", "pair_scores", "node_vectors", "node_weights", "centroids", "kmeans_stats"),
    "features": ("macro_edges", "recent_neighbors", "task_lookup", "samples", "training_examples"),
}
"""The tables each stage writes (``assignments``: nodes writes the train snapshot, features both)."""

WRITTEN_BY: dict[str, str] = {t: f"mgoe {stage}" for stage, tables in STAGE_TABLES.items() for t in tables}
"""Table name -> the command that writes it (named in the hint of a missing-table error)."""
