"""Per-step timings: every step() block labels its Spark jobs and becomes a step_seconds run_metrics row."""

from __future__ import annotations

from mgoe_spark.core.metrics import STEP_SECONDS, StageSummary, step


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


def _job(jid: int, desc: str | None, stages: list[int]) -> dict:
    props = {"spark.job.description": desc} if desc else {}
    return {"Event": "SparkListenerJobStart", "Job ID": jid, "Properties": props,
            "Stage Infos": [{"Stage ID": s} for s in stages]}  # fmt: skip


def _task(stage: int, launch: int, finish: int, run_ms: int) -> dict:
    return {"Event": "SparkListenerTaskEnd", "Stage ID": stage,
            "Task Info": {"Launch Time": launch, "Finish Time": finish},
            "Task Metrics": {"Executor Run Time": run_ms}}  # fmt: skip


def test_spark_events_summarize_per_step():
    from bench.spark_events import summarize

    done = lambda s: {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": s}}  # noqa: E731
    events = [
        _job(0, "mgoe nodes: sketch user", [0, 1]),
        _task(0, 1000, 1500, 400), _task(0, 1000, 2000, 900), done(0),  # stage 1 skipped: no tasks, no end
        _job(1, "mgoe nodes: sketch user", [2]),
        _task(2, 3000, 3250, 200), done(2),
        _job(2, None, [3]),
        _task(3, 0, 100, 50), done(3),
        {"Event": "SparkListenerTaskEnd", "Stage ID": 99},  # a stage of no known job: ignored
    ]  # fmt: skip
    got = summarize(events)
    assert got["mgoe nodes: sketch user"] == {
        "jobs": 2, "stages": 2, "tasks": 3, "task_seconds": 1.75, "run_seconds": 1.5,
    }  # fmt: skip
    assert got[""] == {"jobs": 1, "stages": 1, "tasks": 1, "task_seconds": 0.1, "run_seconds": 0.05}


def test_spark_event_logs_of_a_real_run(tmp_path):
    """A real application's uncompressed event log is found (single or rolling) and its steps summarized."""
    import subprocess
    import sys
    import textwrap

    from bench.spark_events import event_files, summarize_app

    log = tmp_path / "ev"
    log.mkdir()
    code = textwrap.dedent(f"""
        from mgoe_spark.config import SparkSettings
        from mgoe_spark.core.session import get_spark
        from bench.spark_events import SPARK_CONF
        conf = {{**SPARK_CONF, "spark.eventLog.dir": "{log.as_uri()}", "spark.ui.enabled": "false"}}
        spark = get_spark(SparkSettings(master="local[1]", conf=conf), app_name="ev")
        spark.sparkContext.setJobDescription("mgoe t: count")
        spark.range(100).repartition(3).count()
        print(spark.sparkContext.applicationId)
        spark.stop()
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    app = run.stdout.strip().splitlines()[-1]
    assert event_files(log, app)
    got = summarize_app(log, app)["mgoe t: count"]
    assert got["jobs"] >= 1 and got["tasks"] >= 3 and got["stages"] >= 2
