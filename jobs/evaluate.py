"""``mgoe evaluate``: score saved checkpoints on a split of a training_examples table; print, save JSON.

Loads every ``<model>-seed<S>.pt`` checkpoint (with its ``.json`` sidecar) that ``mgoe train --report DIR``
saved under ``DIR/checkpoints``, checks that it fits the table (tasks, K_U / K_I, hops, neighbor length,
vocabulary sizes), scores it on ``--split`` of ``<examples-root>/training_examples`` for the run date, and
prints per-task AUC / Logloss (mean ± std over the seeds found). ``--json`` writes results shaped like
``mgoe train --json``'s (``models.<name>.auc_mean`` / ``logloss_mean`` / per task); ``mgoe report`` turns
them into a report. Pure PyTorch: no Spark needed. Example::

  mgoe evaluate --checkpoints reports/ --examples-root OUT --run-date 2017-12-03 --split test --json eval.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import config_from_args, job_main

HELP = "score the checkpoints of a `mgoe train --report DIR` run on a split of a training_examples table"
DESCRIPTION = __doc__


def configure_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("evaluation")
    g.add_argument(
        "--checkpoints",
        metavar="DIR",
        required=True,
        help="the --report DIR of a `mgoe train` run (its checkpoints/ folder is used) or a checkpoint folder",
    )
    g.add_argument("--examples-root", metavar="URI", help="table root holding training_examples (default: output.root)")
    g.add_argument("--split", choices=["test", "valid", "train"], default="test", help="split to score (default: test)")
    g.add_argument("--models", metavar="A,B", help="only these checkpoint names (default: every one found)")
    g.add_argument("--json", metavar="PATH", help="write the results as JSON here")


def checkpoint_dir(path: str) -> Path:
    """``DIR/checkpoints`` when ``DIR`` is a report directory, else ``DIR``."""
    p = Path(path)
    return p / "checkpoints" if (p / "checkpoints").is_dir() else p


def execute(args: argparse.Namespace) -> int:
    import datetime as dt

    from model.data import available_run_dates
    from model.evaluate import results_table, to_json
    from model.train import evaluate_checkpoints

    cfg = config_from_args(args, writes_output=False)
    from model.data import configure_storage

    configure_storage(cfg.output.storage_options)  # object-store settings of the table reads
    root = args.examples_root or cfg.output.root
    # As in `mgoe train`: the default --run-date (today) falls back to the latest partition.
    run_date = args.run_date
    if run_date not in available_run_dates(root) and run_date == dt.date.today().isoformat():
        run_date = None
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    results = evaluate_checkpoints(
        checkpoint_dir(args.checkpoints),
        root,
        run_date,
        args.split,
        batch_size=cfg.train.eval_batch_size,
        threads=cfg.train.threads,
        models=models,
    )
    print(f"training_examples {results['examples_root']} run date {results['run_date']} split {args.split}")
    print(results_table(results, results["tasks"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(to_json(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(job_main(sys.modules[__name__]))
