"""What every stage shares, in the order a stage uses it:

- :mod:`.names`: the shared names (sides, splits, snapshots, which stage writes which table);
- :mod:`.errors`: :class:`~.errors.UserError`, the mistakes a user can fix, each carrying its own hint;
- :mod:`.session`: the one SparkSession factory and the environment checks before it;
- :mod:`.rand`: seeded, partition-independent random numbers (a hash of seed and key columns);
- :mod:`.arrow_sums`: sorted segment sums over Arrow batches inside the Python workers;
- :mod:`.storage`: :class:`~.storage.TableStore`, atomic per-run-date reads and writes (Parquet or Delta);
- :mod:`.metrics`: :class:`~.metrics.StageSummary`, stage and step timing, the run_metrics table;
- :mod:`.report`: the pipeline's part of a report (cluster sizes, edge weights, stage lines, step seconds).

Importing this package imports nothing heavy; :mod:`.errors` and :mod:`.names` are Spark-free (the trainer
uses them).
"""
