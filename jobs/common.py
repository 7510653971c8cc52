"""What every job shares: common arguments, config from arguments, user-facing errors, run summaries.

A job module (``jobs/<name>.py``) provides::

    HELP = "one line for `mgoe --help`"
    def configure_parser(parser: argparse.ArgumentParser) -> None: ...   # its own arguments
    def execute(args: argparse.Namespace) -> int: ...                    # returns an exit code
    if __name__ == "__main__": raise SystemExit(job_main(sys.modules[__name__]))

so it runs both as ``mgoe <name> ...`` and as ``spark-submit jobs/<name>.py ...`` with the same arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

from mgoe_spark.config import ConfigError, MgoeConfig, load_config


class UserError(Exception):
    """A mistake the user can fix (bad path, empty input, ...). Printed as one line with a hint."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("configuration")
    g.add_argument("--config", metavar="PATH", help="YAML config file (see configs/)")
    g.add_argument("--profile", choices=["default", "test"], help="built-in profile (default: default)")
    g.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, e.g. --set kmeans.k_user=64 (repeatable)",
    )
    g.add_argument(
        "--run-date",
        metavar="YYYY-MM-DD",
        default=dt.date.today().isoformat(),
        help="run date: the partition the outputs are written to (default: today)",
    )
    g.add_argument("--output", metavar="URI", help="output root for all tables (overrides output.root)")


def parse_run_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UserError(f"--run-date {text!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-23") from None


def config_from_args(args: argparse.Namespace, writes_output: bool = True) -> MgoeConfig:
    """The config the arguments describe. ``writes_output``: the job writes tables under ``output.root``,
    so a local root is checked to be writable first (a clear error now, not a Spark stack trace later)."""
    overrides = list(args.overrides)
    if getattr(args, "output", None):
        overrides.append(f"output.root={args.output}")
    args.run_date = parse_run_date(args.run_date)
    # An empty --config (e.g. an unset Airflow param) means no config file.
    cfg = load_config(args.config or None, args.profile, overrides)
    if writes_output:
        check_writable(cfg.output.root)
    return cfg


def check_writable(root: str) -> None:
    """Create ``root`` (a local path or ``file://`` URI) and write and remove a probe file in it; UserError
    naming the path and the OS reason if that fails. Other schemes (hdfs://, s3://, ...) are not probed:
    their permissions are the cluster's business and a probe would cost a round trip per job."""
    if "://" in root and not root.startswith("file://"):
        return
    path = root.removeprefix("file://")
    probe = os.path.join(path, f".mgoe-write-probe-{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and exc.filename not in (path, probe) else ""
        raise UserError(
            f"output root '{root}' is not writable: {reason}{where}; pass --output DIR (or set output.root) "
            "to a directory you can write"
        ) from None


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

    from jobs.storage import TableStore
    from schemas import RUN_METRICS

    store = TableStore.of(spark, cfg)
    stages = {s.stage for s in summaries}
    rows = [r for s in summaries for r in s.rows()]
    if run_date in store.run_dates(RUN_METRICS):
        kept = store.read(RUN_METRICS, run_date).where(~F.col("stage").isin(*stages)).drop("run_date").collect()
        rows = [tuple(r) for r in kept] + rows
    df = spark.createDataFrame(rows, RUN_METRICS.spark(with_partition=False))
    store.write(df.coalesce(1), RUN_METRICS, run_date)


def job_main(module: ModuleType, argv: list[str] | None = None) -> int:
    """Run a job module as a standalone program (spark-submit entry point)."""
    parser = argparse.ArgumentParser(prog=f"{module.__name__.rsplit('.', 1)[-1]}.py", description=module.HELP)
    module.configure_parser(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_guarded(module.execute, args)


# ValueErrors that the user's data can trigger in modules whose exceptions are plain ValueError: the raising
# function (module, name) -> the hint printed after the message. Any other ValueError is a bug and keeps its
# traceback.
DATA_VALUE_ERRORS: dict[tuple[str, str], str] = {
    ("mgoe_spark.ingest", "_parse_text"): "check input.format and the input.*_column settings against the file",
    ("mgoe_spark.ingest", "parse_generic_parquet"): "check input.format and the input.*_column settings",
    ("mgoe_spark.ingest", "tenrec_layout"): "name Tenrec's 0/1 columns in input.task_columns",
}
# Which command writes each table (named in the hint of a missing-table error).
WRITTEN_BY = {
    **dict.fromkeys(("interactions", "vocab_users", "vocab_items", "rejects"), "mgoe ingest"),
    **dict.fromkeys(
        ("windows", "pair_scores", "node_vectors", "node_weights", "centroids", "kmeans_stats"), "mgoe nodes"
    ),
    **dict.fromkeys(
        ("macro_edges", "recent_neighbors", "task_lookup", "samples", "training_examples"), "mgoe features"
    ),
}
KMEANS_INPUT_HINT = "check the input log and the feature window (windows.*), or lower kmeans.k_*"
TRAINER_DATA_HINT = "build the examples first (`mgoe build --run-date D --output ROOT`) or point --examples-root there"


def one_line(text: str) -> str:
    """``text`` on one line (a multi-line message would break the one-line contract)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def user_error_line(exc: BaseException) -> str | None:
    """The ``mgoe: error: ...`` line for an exception a user's data, config or environment caused, with a
    hint; None for anything else (a bug: let its traceback show)."""
    from jobs.storage import StorageError, TableNotFound
    from mgoe_spark.session import EnvironmentProblem
    from mgoe_spark.windows import WindowError

    message = one_line(exc)
    if isinstance(exc, ConfigError | UserError | EnvironmentProblem | TableNotFound | StorageError | WindowError):
        if isinstance(exc, TableNotFound):
            table = next((t for t in WRITTEN_BY if f"table '{t}'" in message), None)
            if table:
                message = f"{message} (`{WRITTEN_BY[table]} --run-date D` writes it)"
        if isinstance(exc, UserError) and _is_trainer_data_error(exc.__context__) and "--examples-root" not in message:
            message = f"{message}; {TRAINER_DATA_HINT}"
        return f"mgoe: error: {message}"
    if _is_trainer_data_error(exc):
        return f"mgoe: error: {message}; {TRAINER_DATA_HINT}"
    if _is_kmeans_input_error(exc):
        return f"mgoe: error: {message}; {KMEANS_INPUT_HINT}"
    if isinstance(exc, ValueError):
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = (tb.tb_frame.f_globals.get("__name__", ""), tb.tb_frame.f_code.co_name)
            if where in DATA_VALUE_ERRORS:
                return f"mgoe: error: {message}; {DATA_VALUE_ERRORS[where]}"
    return None


def _is_kmeans_input_error(exc: BaseException) -> bool:
    loop = sys.modules.get("mgoe_spark.kmeans.loop")  # loaded only by the stages that cluster
    return loop is not None and isinstance(exc, loop.FitInputError)


def _is_trainer_data_error(exc: BaseException | None) -> bool:
    if exc is None or "model.data" not in sys.modules:  # the trainer is not loaded by the Spark jobs
        return False
    return isinstance(exc, sys.modules["model.data"].DataError)


def run_guarded(fn, args: argparse.Namespace) -> int:
    """Call ``fn(args)``; user mistakes become one line on stderr and exit code 2, not a stack trace."""
    try:
        return int(fn(args) or 0)
    except Exception as exc:
        line = user_error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
