"""The time windows of a run date (SPEC 3), in the order a run uses its modules:

- :mod:`.cutoffs`: the training and test cutoffs (quantile or date mode), the feature-window filter and the
  split of samples; pure;
- :mod:`.table`: the cutoffs chosen once by ``nodes`` and recorded as the ``windows`` table, read back by
  ``features`` and the quality gates.
"""
