"""The data-quality gates between stages, in the order a gate uses its modules:

- :mod:`.checks`: generic table checks (row counts, unique keys, nulls, finite floats, empty macro nodes),
  one aggregation pass per table;
- :mod:`.gates`: which checks each stage's tables must pass, and the ``quality_checks`` record.
"""
