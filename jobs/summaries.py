"""Run summaries of the feature stages: row counts in / out, cluster sizes, split sizes, seconds.

Everything is counted in ONE Spark job per call (the frames are tagged and unioned, then a grouped count),
and the driver receives one number per frame and K numbers per side for the cluster sizes. Counting
re-evaluates the lazy frames, so call it on persisted / written-then-read frames in production runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common import StageSummary


def count_rows(frames: Mapping[str, DataFrame]) -> dict[str, int]:
    """Row count of every frame, in one Spark job. Frames with no rows count 0."""
    tagged = None
    for name, df in frames.items():
        part = df.select(F.lit(name).alias("_frame"))
        tagged = part if tagged is None else tagged.unionByName(part)
    if tagged is None:
        return {}
    counts = {r["_frame"]: int(r["count"]) for r in tagged.groupBy("_frame").count().collect()}
    return {name: counts.get(name, 0) for name in frames}


def stage_summary(
    stage: str,
    *,
    inputs: Mapping[str, DataFrame] | None = None,
    outputs: Mapping[str, DataFrame] | None = None,
    assignments: DataFrame | None = None,
    seconds: float | None = None,
    summary: StageSummary | None = None,
) -> StageSummary:
    """Fill ``summary`` (or a new StageSummary) with ``rows_in.<name>``, ``rows_out.<name>``, and for
    ``assignments`` (ASSIGNMENTS) per side: ``clusters.<side>``, ``cluster_imbalance.<side>``
    (max size / mean size) and one ``cluster_size`` detail row per macro node; ``seconds`` if given."""
    summary = summary or StageSummary(stage)
    ins, outs = dict(inputs or {}), dict(outputs or {})
    counts = count_rows({**{f"in:{k}": v for k, v in ins.items()}, **{f"out:{k}": v for k, v in outs.items()}})
    for name in ins:
        summary.add(f"rows_in.{name}", counts[f"in:{name}"])
    for name in outs:
        summary.add(f"rows_out.{name}", counts[f"out:{name}"])
    if assignments is not None:
        sizes = assignments.groupBy("side", "macro_id").count().collect()  # K rows per side
        by_side: dict[str, list[tuple[int, int]]] = {}
        for r in sizes:
            by_side.setdefault(r["side"], []).append((int(r["macro_id"]), int(r["count"])))
        for side, pairs in sorted(by_side.items()):
            values = [n for _, n in pairs]
            summary.add(f"clusters.{side}", len(values))
            summary.add(f"cluster_imbalance.{side}", round(max(values) / (sum(values) / len(values)), 4))
            for macro, n in sorted(pairs):
                summary.add("cluster_size", n, f"{side} macro {macro}")
    if seconds is not None:
        summary.add("seconds", round(float(seconds), 2))
    return summary


def features_summary(features, interactions: DataFrame, seconds: float | None = None) -> StageSummary:
    """Summary of :func:`mgoe_spark.features.build_features`' result: events in, rows of every output
    table, samples per split and cold-start rows, cluster sizes of the training snapshot."""
    samples = features.samples
    outputs = dict(features.tables())
    for split in ("train", "valid", "test"):
        outputs[f"samples_{split}"] = samples.where(F.col("split") == split)
    outputs["samples_cold_start"] = samples.where(F.col("cold_start"))
    summary = StageSummary("features")
    summary.add("train_cutoff", features.windows.train_cutoff)
    summary.add("test_cutoff", features.windows.test_cutoff)
    return stage_summary(
        "features",
        inputs={"interactions": interactions},
        outputs=outputs,
        assignments=features.tagged["assignments"].where(F.col("snapshot") == "train"),
        seconds=seconds,
        summary=summary,
    )
