"""Where a Spark run's time goes, per step, from its event log (``spark.eventLog.enabled``).

Every pipeline step sets the Spark job description ``mgoe <stage>: <step>`` (:func:`jobs.common.step`), so
the event log ties each job, stage and task to its step. :func:`summarize` reads the log of one
application (plain JSON lines; compressed logs are refused with a hint) and returns per step: jobs,
stages run, tasks, the sum of task wall times and of executor run times (seconds). On ``local[N]``,
``task_seconds / N`` next to the step's wall time says how much of the wall time is task work and how much
is per-job / per-stage overhead (scheduling, planning, result handling); ``tasks`` says how many task
launches the step paid for. Cost: one pass over the log, O(stages + steps) memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPARK_CONF = {"spark.eventLog.enabled": "true", "spark.eventLog.compress": "false"}
"""Spark settings that make a run write an uncompressed event log (plus ``spark.eventLog.dir``)."""


def event_files(log_dir: str | Path, app_id: str) -> list[Path]:
    """The event-log files of ``app_id`` under ``log_dir``: one file, or a rolling log's parts in order."""
    root = Path(log_dir)
    rolling = sorted(root.glob(f"eventlog_v2_{app_id}*/events_*"), key=lambda p: int(p.name.split("_")[1]))
    single = [p for p in root.glob(f"{app_id}*") if p.is_file()]
    files = rolling or single
    if not files:
        raise FileNotFoundError(f"no event log of {app_id} under {root}")
    bad = [p for p in files if p.suffix in {".zstd", ".lz4", ".snappy", ".lzf"}]
    if bad:
        raise ValueError(f"{bad[0]} is compressed: run with spark.eventLog.compress=false")
    return files


def _events(files: Iterable[Path]) -> Iterable[dict]:
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def summarize(events: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Event-log events -> {job description: {jobs, stages, tasks, task_seconds, run_seconds}}.

    Jobs without a description are grouped under ``""``. ``stages`` counts stages that ran (skipped ones,
    whose shuffle output was reused, are not counted); ``task_seconds`` sums task launch-to-finish times,
    ``run_seconds`` the executors' run times."""
    job_of_stage: dict[int, str] = {}
    out: dict[str, dict[str, float]] = {}

    def row(desc: str) -> dict[str, float]:
        return out.setdefault(desc, {"jobs": 0, "stages": 0, "tasks": 0, "task_seconds": 0.0, "run_seconds": 0.0})

    for e in events:
        kind = e.get("Event")
        if kind == "SparkListenerJobStart":
            desc = (e.get("Properties") or {}).get("spark.job.description") or ""
            row(desc)["jobs"] += 1
            for info in e.get("Stage Infos", []):
                job_of_stage[info["Stage ID"]] = desc
        elif kind == "SparkListenerStageCompleted":
            sid = e["Stage Info"]["Stage ID"]
            if sid in job_of_stage:
                row(job_of_stage[sid])["stages"] += 1
        elif kind == "SparkListenerTaskEnd":
            sid = e.get("Stage ID")
            if sid not in job_of_stage:
                continue
            r = row(job_of_stage[sid])
            info, metrics = e.get("Task Info") or {}, e.get("Task Metrics") or {}
            r["tasks"] += 1
            r["task_seconds"] += max(info.get("Finish Time", 0) - info.get("Launch Time", 0), 0) / 1000
            r["run_seconds"] += metrics.get("Executor Run Time", 0) / 1000
    for r in out.values():
        r["task_seconds"] = round(r["task_seconds"], 2)
        r["run_seconds"] = round(r["run_seconds"], 2)
    return out


def summarize_app(log_dir: str | Path, app_id: str) -> dict[str, dict[str, float]]:
    """:func:`summarize` of the event log that application ``app_id`` wrote under ``log_dir``."""
    return summarize(_events(event_files(log_dir, app_id)))
