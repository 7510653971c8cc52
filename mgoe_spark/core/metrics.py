"""Run metrics: what each stage counted and how long each step took, printed as one line per stage and
written to the ``run_metrics`` table.

- :class:`StageSummary`: counts, detail rows and notes of one stage;
- :func:`stage` / :func:`step`: label a stage's (a step's) Spark jobs in the Spark UI and time them; a step's
  label is both its Spark job description and its ``step_seconds`` row, so the UI and the table agree;
- :func:`write_metrics`: record summaries in the run date's ``run_metrics`` partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StageSummary:
    """Counts and timings of one stage; printed as one line and written to the run_metrics table."""

    stage: str
    metrics: dict[str, float] = field(default_factory=dict)
    details: list[tuple[str, float, str]] = field(default_factory=list)
    """(metric, value, detail) rows, e.g. ("rejects", 12, "unknown behavior 'xyz'")."""
    notes: dict[str, str] = field(default_factory=dict)
    """Text for people, printed after the metrics (e.g. the windows as dates); not in run_metrics."""

    def note(self, name: str, text: str) -> None:
        self.notes[name] = text

    def add(self, metric: str, value: float, detail: str | None = None) -> None:
        if detail is None:
            self.metrics[metric] = float(value)
        else:
            self.details.append((metric, float(value), detail))

    @property
    def steps(self) -> dict[str, float]:
        """Step name -> seconds of the :func:`step` blocks run so far (detail rows ``step_seconds``)."""
        return {d: v for m, v, d in self.details if m == STEP_SECONDS}

    def line(self) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in self.metrics.items()]
        notes = "".join(f" | {k}: {v}" for k, v in self.notes.items())
        return f"[{self.stage}] " + " ".join(parts) + notes

    def rows(self) -> list[tuple[str, str, float, str | None]]:
        out = [(self.stage, k, v, None) for k, v in self.metrics.items()]
        return out + [(self.stage, m, v, d) for m, v, d in self.details]


def _fmt(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.2f}"


STEP_SECONDS = "step_seconds"
"""run_metrics metric of a step's wall time; its ``detail`` names the step."""


@contextmanager
def stage(spark, summary: StageSummary, description: str) -> Iterator[StageSummary]:
    """Label the Spark jobs of a stage (visible in the Spark UI) and time it into ``summary``."""
    sc = spark.sparkContext
    sc.setJobGroup(summary.stage, description, interruptOnCancel=False)
    sc.setJobDescription(f"mgoe {summary.stage}: {description}")
    start = time.perf_counter()
    try:
        yield summary
    finally:
        summary.add("seconds", round(time.perf_counter() - start, 2))
        sc.setJobDescription(None)


@contextmanager
def step(spark, summary: StageSummary, name: str) -> Iterator[None]:
    """One timed step of a stage: its Spark jobs are described as ``mgoe <stage>: <name>`` (Spark UI) and
    its wall time becomes a ``step_seconds`` row of run_metrics with ``detail = name``. Spark is lazy, so a
    step must end with an action (a write, or ``count()`` of a persisted frame) for its time to be its own."""
    sc = spark.sparkContext
    previous = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(f"mgoe {summary.stage}: {name}")
    start = time.perf_counter()
    try:
        yield
    finally:
        summary.add(STEP_SECONDS, round(time.perf_counter() - start, 2), detail=name)
        sc.setJobDescription(previous)


def write_metrics(spark, cfg, summaries: list[StageSummary], run_date: str) -> None:
    """Record ``summaries`` in the run_metrics partition of ``run_date``: rows of other stages already there
    are kept, rows of these stages are replaced (so each job of a run can add its own). Tiny table."""
    from pyspark.sql import functions as F

    from mgoe_spark.core.storage import TableStore
    from schemas import RUN_METRICS

    store = TableStore.of(spark, cfg)
    stages = {s.stage for s in summaries}
    rows = [r for s in summaries for r in s.rows()]
    if run_date in store.run_dates(RUN_METRICS):
        kept = store.read(RUN_METRICS, run_date).where(~F.col("stage").isin(*stages)).drop("run_date").collect()
        rows = [tuple(r) for r in kept] + rows
    df = spark.createDataFrame(rows, RUN_METRICS.spark(with_partition=False))
    store.write(df.coalesce(1), RUN_METRICS, run_date)
