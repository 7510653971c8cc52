"""Per-step timings: every step() block labels its Spark jobs and becomes a step_seconds run_metrics row."""

from __future__ import annotations

from jobs.common import STEP_SECONDS, StageSummary, step


def test_step_labels_jobs_and_records_its_seconds(spark):
    sc = spark.sparkContext
    sc.setJobDescription("outer")
    summary = StageSummary("features")
    seen = []
    with step(spark, summary, "macro edges"):
        seen.append(sc.getLocalProperty("spark.job.description"))
        spark.range(10).count()
    with step(spark, summary, "write samples"):
        pass
    assert seen == ["mgoe features: macro edges"]
    assert sc.getLocalProperty("spark.job.description") == "outer"  # restored after the step
    assert list(summary.steps) == ["macro edges", "write samples"]
    assert all(v >= 0 for v in summary.steps.values())
    rows = [r for r in summary.rows() if r[1] == STEP_SECONDS]
    assert [(r[0], r[3]) for r in rows] == [("features", "macro edges"), ("features", "write samples")]
    assert "step_seconds" not in summary.line()  # the one-line summary stays short
    sc.setJobDescription(None)
