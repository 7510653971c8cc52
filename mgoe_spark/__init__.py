"""mgoe_spark: the Spark side of MGOE, one package per pipeline stage, in the order a run uses them.

- :mod:`.config`: the typed settings every stage reads (Spark-free; the trainer imports it too);
- :mod:`.core`: shared names, user errors, the SparkSession factory, table storage, run metrics;
- :mod:`.generate`: the synthetic log (the embedded default data) and its ground truth;
- :mod:`.ingest`: stage 0, a raw log -> interactions, vocabularies, rejects;
- :mod:`.windows`: the feature / sample windows of a run date (chosen once, recorded as a table);
- :mod:`.nodes`: stage 1, pair scores, node vectors and weights, weighted k-means -> macro nodes;
- :mod:`.features`: stage 2, macro edges, recent neighbors, task lookup, samples -> training examples;
- :mod:`.quality`: the data-quality gates between stages.

A stage package has one ``run.py`` (reads, persists, writes, metrics: ``run_<stage>(spark, cfg, run_date)``)
and pure step modules (DataFrame -> DataFrame, no I/O); ``jobs/`` only parses arguments and calls a run.
"""

__version__ = "0.1.0"
