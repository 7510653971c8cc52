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
from types import ModuleType

from mgoe_spark.config import PROFILES, MgoeConfig, load_config
from mgoe_spark.core.errors import UserError


def add_common_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("configuration")
    g.add_argument("--config", metavar="PATH", help="YAML config file (see configs/)")
    g.add_argument("--profile", choices=PROFILES, help="built-in profile (default: default)")
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


def job_main(module: ModuleType, argv: list[str] | None = None) -> int:
    """Run a job module as a standalone program (spark-submit entry point)."""
    parser = argparse.ArgumentParser(prog=f"{module.__name__.rsplit('.', 1)[-1]}.py", description=module.HELP)
    module.configure_parser(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_guarded(module.execute, args)


def user_error_line(exc: BaseException) -> str | None:
    """The ``mgoe: error: ...`` line for an exception a user's data, config or environment caused (a
    :class:`~mgoe_spark.core.errors.UserError`, whose type carries the hint); None for anything else (a bug:
    let its traceback show)."""
    if isinstance(exc, UserError):
        return f"mgoe: error: {exc.user_message()}"
    return None


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


def execute_stages(args: argparse.Namespace, names: list[str], input_path: str | None = None) -> int:
    """The ``execute`` of ``nodes``, ``features`` and ``build``: optional ingest of ``input_path``, then the
    stages ``names`` in order on one SparkSession, one summary line each, then the run metrics."""
    from mgoe_spark.core.metrics import write_metrics
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.features.run import run_features
    from mgoe_spark.ingest.run import run_ingest
    from mgoe_spark.nodes.run import run_nodes

    stages = {"nodes": run_nodes, "features": run_features}
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark)
    summaries = []
    if input_path:
        summaries.append(run_ingest(spark, cfg, input_path, args.run_date))
        print(summaries[-1].line(), flush=True)
    for name in names:
        summaries.append(stages[name](spark, cfg, args.run_date))
        print(summaries[-1].line(), flush=True)
    write_metrics(spark, cfg, summaries, args.run_date)
    return 0
