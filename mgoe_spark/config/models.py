"""The model registry: every model name the trainer accepts, in order, with a one-line description.

The one list of model names. :mod:`mgoe_spark.config` checks ``train.models`` against it, ``mgoe train``
checks ``--models`` against it, and :func:`model.baselines.build_model` maps each name to its class
(a test checks that the two have the same names). No torch or Spark here: reading the names is cheap.
"""

from __future__ import annotations

MODELS: dict[str, str] = {
    "mgoe": "MGOE (SPEC 6)",
    "mgoe_no_adjust": "MGOE w/o macro task adjustment (gamma = 0)",
    "mgoe_no_cascade": "MGOE w/o cascading readout (lambda = 0)",
    "mgoe_no_pref": "MGOE w/o preference weights (its own table: weights.enabled=false, the default since issue 27)",
    "mgoe_pref": "MGOE with preference weights (its own table: weights.enabled=true)",
    "mgoe_binary_edges": "MGOE w/o score edges (its own table: edges.edge_matrix=binary, the default since issue 27)",
    "mgoe_score_edges": "MGOE with score edges (its own table: edges.edge_matrix=score)",
    "mgoe_pref_scores": "MGOE with merging preference scores in the node vectors (its own table: scores.binary=false)",
    "mmoe": "MMoE",
    "mmoe_full": "MMoE on MGOE's full inputs (macro edges, own macros, recent neighbors)",
    "ple": "PLE (one CGC level)",
    "esmm": "ESMM (CTR x CVR over the first two tasks)",
    "macgnn": "single-graph MacGNN-style model (its own table: one binary graph, unweighted k-means; the default's)",
    "grec": "GRec-style task-routed sparse MoE",
}
"""Model name -> description, in the order reports list them."""


TABLE_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mgoe_no_pref": ("mgoe", ("weights.enabled=false",)),
    "mgoe_pref": ("mgoe", ("weights.enabled=true",)),
    "mgoe_binary_edges": ("mgoe", ("edges.edge_matrix=binary",)),
    "mgoe_score_edges": ("mgoe", ("edges.edge_matrix=score",)),
    "mgoe_pref_scores": ("mgoe", ("scores.binary=false",)),
    "macgnn": ("macgnn", ("scores.binary=true", "weights.enabled=false", "edges.edge_matrix=binary")),
}
"""Result labels that read their own table: label -> (model, config overrides that build that table).
``mgoe_no_pref`` is MGOE on tables without preference weights (the "w/o preference" ablation; the same as the
default table since issue 27 measured the weights helping on none of its three logs, kept for older runs and
roots), ``mgoe_pref`` on tables with them (Eq 8, ``weights.enabled=true``),
``mgoe_binary_edges`` on 0/1 macro edges instead of Eq 10's score sums (the "w/o score edges" one, also the
default table since issue 27), ``mgoe_score_edges`` on the score sums (``edges.edge_matrix=score``),
``mgoe_pref_scores`` on node vectors from Eq 6-7's merging preference scores (``scores.binary=false``; the
default is binary since issue 27); ``macgnn`` reads MacGNN's inputs (one binary graph, unweighted k-means:
since issue 27 the same table as the default). Every other label reads the default table."""


def model_of(label: str) -> str:
    """The registry model a result label trains (``mgoe_no_pref`` -> ``mgoe``)."""
    return TABLE_VARIANTS[label][0] if label in TABLE_VARIANTS else label
