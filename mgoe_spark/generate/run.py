"""The synthetic log (the embedded default data) and its ground truth, written for a run date.

- the raw log as headerless Taobao UserBehavior CSV (``user_id,item_id,category_id,behavior,ts``) to an
  output directory, atomically: the files are written to a hidden sibling directory and renamed into place,
  so a killed job leaves no partial log and a re-run replaces the old one. The directory gets a
  :data:`GENERATED_MARKER` file; a non-empty directory without it (one ``generate`` did not write) is
  refused unless ``overwrite`` is set (:func:`check_replaceable`), so a mistyped ``--out`` deletes nothing;
- the planted groups as the ``ground_truth_users`` / ``ground_truth_items`` tables (run-date partition);
- the oracle: per generated (user, item) pair the true probability of each task's label in the ``events``
  sample space, the ``ground_truth_pairs`` table (:mod:`mgoe_spark.generate.oracle`).

The generative model is :mod:`mgoe_spark.generate.events`. Cost: one map-only pass over the generated rows
(no shuffle); the counts per task are collected during the write (a Spark ``Observation``), not by a second
pass. The oracle table: the click pass again plus one shuffle (distinct pairs).
"""

from __future__ import annotations

import uuid

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from mgoe_spark.config import MgoeConfig
from mgoe_spark.core.errors import UserError
from mgoe_spark.core.metrics import StageSummary, stage
from mgoe_spark.core.storage import TableStore, _fs, swap_directory
from mgoe_spark.generate.events import behavior_names, generate_events, ground_truth
from mgoe_spark.generate.oracle import ground_truth_pairs
from schemas import GROUND_TRUTH_ITEMS, GROUND_TRUTH_PAIRS, GROUND_TRUTH_USERS

GENERATED_MARKER = "_MGOE_GENERATED"
"""An empty file ``generate`` writes into every log directory it publishes: the proof that a later run may
replace the directory. (A leading ``_`` hides it from Spark's and Hadoop's file readers, so ingest skips it.)"""


def default_out_dir(cfg: MgoeConfig, run_date: str) -> str:
    return f"{cfg.output.root.rstrip('/')}/raw/{run_date}"


def check_replaceable(spark: SparkSession, out_dir: str, overwrite: bool = False) -> None:
    """UserError unless ``out_dir`` may be replaced by a new log: it is missing, an empty directory, a
    directory holding :data:`GENERATED_MARKER`, or ``overwrite`` is set (and it is a directory). Called
    before anything is generated or written. Cost: O(1) file-system calls (plus one listing of the
    directory's top level when it has no marker)."""
    fs, target = _fs(spark, out_dir)
    if not fs.exists(target):
        return
    if not fs.getFileStatus(target).isDirectory():
        raise UserError(f"--out {out_dir} is an existing file; give a directory path")
    marker = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target, GENERATED_MARKER)
    if overwrite or fs.exists(marker) or len(fs.listStatus(target)) == 0:
        return
    raise UserError(
        f"--out {out_dir} is a non-empty directory that `mgoe generate` did not write (no {GENERATED_MARKER} "
        "file) and would be replaced as a whole; pass --overwrite to replace it, or choose a new or empty directory"
    )


def write_csv_atomically(df: DataFrame, out_dir: str) -> None:
    """Write ``df`` as headerless CSV files into ``out_dir``, replacing it as a whole (write to a hidden
    sibling, add :data:`GENERATED_MARKER`, then swap it in with
    :func:`mgoe_spark.core.storage.swap_directory`). The caller checks first (:func:`check_replaceable`)."""
    spark = df.sparkSession
    fs, target = _fs(spark, out_dir)
    parent, name = target.getParent().toString(), target.getName()
    token = uuid.uuid4().hex[:12]
    staging = f"{parent}/_{name}.staging-{token}"
    df.write.mode("error").option("header", False).csv(staging)
    fs.create(spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"{staging}/{GENERATED_MARKER}"), False).close()
    swap_directory(spark, staging, target.toString(), f"{parent}/_{name}.trash-{token}")


def run_generate(
    spark: SparkSession, cfg: MgoeConfig, out_dir: str, run_date: str, *, overwrite: bool = False
) -> StageSummary:
    """Generate the log into ``out_dir`` (CSV) and the ground truth (tables under ``output.root``).

    ``overwrite``: replace ``out_dir`` even if ``generate`` did not write it (see :func:`check_replaceable`).
    Returns the summary: ``events`` (all rows), ``events_<task>`` per task, ``users``, ``items``, ``seconds``.
    """
    try:
        behaviors = behavior_names(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_replaceable(spark, out_dir, overwrite)
    summary = StageSummary("generate")
    with stage(spark, summary, f"synthetic log -> {out_dir}"):
        obs = Observation("generate_counts")
        counts = [F.count(F.lit(1)).alias("events")] + [
            F.count_if(F.col("behavior") == F.lit(b)).alias(f"events_{t}")
            for t, b in zip(cfg.tasks.order, behaviors, strict=True)
        ]
        write_csv_atomically(generate_events(spark, cfg).observe(obs, *counts), out_dir)
        for key, value in obs.get.items():
            summary.add(key, value)
        users, items = ground_truth(spark, cfg)
        store = TableStore.of(spark, cfg)
        with store.transaction(run_date, stage="generate"):  # the ground truth's tables appear together
            store.write(users, GROUND_TRUTH_USERS, run_date)
            store.write(items, GROUND_TRUTH_ITEMS, run_date)
            store.write(ground_truth_pairs(spark, cfg), GROUND_TRUTH_PAIRS, run_date)
        summary.add("users", cfg.generator.users)
        summary.add("items", cfg.generator.items)
    return summary
