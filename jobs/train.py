"""``mgoe train``: train MGOE and baselines on a training_examples table; print, save JSON and a report.

Reads ``<examples-root>/training_examples`` (Parquet partitions or a Delta table) for one run date,
streams it by row groups (never loading the table), trains every model for every seed in
``train.seeds``, and prints per-task AUC / Logloss (mean ± std over seeds). Pure PyTorch: no Spark needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jobs.common import config_from_args, job_main
from mgoe_spark.core.errors import UserError

HELP = "train MGOE and baselines on the training_examples table; metrics, report, checkpoints"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--examples-root", metavar="URI", help="table root holding training_examples (default: output.root)")
    g.add_argument(
        "--models", metavar="A,B", help="comma-separated models (default: train.models); e.g. mgoe,mmoe,ple,esmm"
    )
    g.add_argument(
        "--no-pref-root",
        metavar="URI",
        help="also train MGOE as 'mgoe_no_pref' on this table root (built with weights.enabled=false)",
    )
    g.add_argument(
        "--table-root",
        metavar="MODEL=URI",
        action="append",
        default=[],
        help="train MODEL on its own table root (repeatable), e.g. macgnn=/tables_macgnn mgoe_no_pref=/no_pref",
    )
    g.add_argument("--report", metavar="DIR", help="write report.md, results.json and plots here")
    g.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    g.add_argument(
        "--export", metavar="DIR", help="export each model's best seed-0 checkpoint (torch.export, .pt2) here"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel training processes on this machine (default: train.nproc); under torchrun "
        "(torchrun --nproc-per-node N -m jobs.train ...) the ranks come from torchrun instead",
    )
    g.add_argument("--device", choices=("cpu", "cuda"), help="train on the CPU or a CUDA GPU (default: train.device)")


RANK_ARGS_ENV = "MGOE_TRAIN_ARGS"
"""Environment variable through which ``--nproc`` hands its parsed arguments (JSON) to the ranks it starts."""


def _rank_args(args: argparse.Namespace, nproc: int) -> str:
    data = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    data["nproc"] = nproc
    return json.dumps(data)


def _check_local_outputs(args: argparse.Namespace) -> None:
    """The report, JSON and export paths are written with plain file I/O: a URI there would become a local
    folder named ``s3a:`` (or similar) in the working directory, lost with it."""
    for flag in ("report", "json", "export"):
        value = getattr(args, flag, None)
        if value and "://" in value:
            raise UserError(
                f"--{flag} {value!r} is a URI, but it is written with plain file I/O: give a local or mounted "
                "path (the Airflow DAG: set MGOE_REPORT_ROOT when the output root is remote)"
            )


def execute(args: argparse.Namespace) -> int:
    _check_local_outputs(args)
    cfg = config_from_args(args, writes_output=False)
    from model.data import configure_storage

    configure_storage(cfg.output.storage_options)  # object-store settings of the table reads
    if args.nproc is not None:
        cfg.train.nproc = args.nproc
    if args.device is not None:
        cfg.train.device = args.device
    if cfg.train.nproc < 1:
        raise UserError("--nproc must be >= 1")
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if cfg.train.nproc > 1 and not launched:
        from model.data import resolve_run_date

        root = args.examples_root or cfg.output.root
        resolve_run_date(root, None)  # fail here, once, on a missing table rather than in every rank
        from model.distributed import launch

        return launch([], cfg.train.nproc, {RANK_ARGS_ENV: _rank_args(args, cfg.train.nproc)})
    if not launched:
        return _execute(args, cfg)
    return _execute_rank(args, cfg)


def _execute_rank(args: argparse.Namespace, cfg) -> int:
    """One rank of a data-parallel run: join the group; any failure is one line (peer loss: exit code 3)."""
    from model import distributed as dist
    from model.data import DataError

    launched_by_mgoe = os.environ.get("MGOE_LAUNCHED") == "1"
    rank = int(os.environ.get("RANK", "0"))
    clean = False
    try:
        dist.init_from_env(cfg.train.device, cfg.train.dist_timeout_s)
        code = _execute(args, cfg)
        clean = True
        return code
    except (UserError, DataError, dist.DistributedError) as exc:
        print(f"mgoe: error: rank {rank}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a rank's failure must be one line, not a traceback per rank
        if dist.is_peer_failure(exc):
            if launched_by_mgoe:
                return dist.LOST_PEER_EXIT  # the launcher reports which rank went away
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"mgoe: error: rank {rank}: lost contact with another rank ({first[:200]})", file=sys.stderr)
            return 1
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"mgoe: error: rank {rank}: {type(exc).__name__}: {first[:300]}", file=sys.stderr)
        return 1
    finally:
        dist.shutdown(clean)


def _execute(args: argparse.Namespace, cfg) -> int:
    from model import distributed as dist
    from model.evaluate import results_table, to_json
    from model.report import label_rate_table
    from model.run import export_all, run_training  # torch: only when training

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        try:
            dist.init_from_env(cfg.train.device, cfg.train.dist_timeout_s)
        except dist.DistributedError as exc:
            raise UserError(str(exc)) from None
    main = dist.context().is_main
    root = args.examples_root or cfg.output.root
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    # --run-date defaults to today; when the table has no partition for today and the date was not
    # chosen explicitly (it equals today's default), train on the latest partition instead.
    import datetime as dt

    from model.data import available_run_dates

    dates = available_run_dates(root)
    run_date = args.run_date
    if run_date not in dates and run_date == dt.date.today().isoformat():
        run_date = None
    table_roots = {}
    for item in args.table_root:
        model, sep, uri = item.partition("=")
        if not sep or not model.strip() or not uri.strip():
            raise UserError(f"--table-root {item!r} must look like MODEL=URI, e.g. macgnn=/data/tables_macgnn")
        table_roots[model.strip()] = uri.strip()
    results = run_training(
        cfg,
        root,
        run_date,
        models,
        args.report if main else None,
        no_pref_root=args.no_pref_root,
        progress=not args.quiet,
        table_roots=table_roots,
    )
    if not main:
        return 0
    print(f"training_examples {results['examples_root']} run date {results['run_date']}")
    print(label_rate_table(results))
    print(results_table(results, results["tasks"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(to_json(results))
    if args.report:
        print(f"report: {Path(args.report) / 'report.md'}")
    if args.export:
        export_all(results, args.export)
    return 0


if __name__ == "__main__":
    if RANK_ARGS_ENV in os.environ:  # a rank started by --nproc: the arguments the user gave mgoe train
        from jobs.common import run_guarded

        raise SystemExit(run_guarded(execute, argparse.Namespace(**json.loads(os.environ[RANK_ARGS_ENV]))))
    raise SystemExit(job_main(sys.modules[__name__]))
