"""The synthetic multi-behavior log, in the order a run uses its modules:

- :mod:`.events`: the generative model (planted user / item groups, Zipf popularity, a group-dependent
  funnel) as Spark columns; pure;
- :mod:`.oracle`: the true per-pair label probabilities of the ``events`` sample space, their table and
  the AUC they reach (the headroom of a model comparison);
- :mod:`.run`: :func:`~.run.run_generate` writes the log as Taobao CSV, atomically, and the ground truth
  tables.
"""
