"""The ``mgoe`` command. Each subcommand is a job module in ``jobs/`` (see :mod:`jobs.common`).

Only the standard library is imported at module level: :func:`main` first runs :mod:`jobs.preflight`, so the
wrong interpreter (too old, or without the dependencies) gets a one-line hint instead of an ImportError.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jobs.preflight import problem

# Subcommand name -> job module. Order is the order `mgoe --help` lists them.
SUBCOMMANDS: dict[str, str] = {
    "demo": "jobs.demo",
    "generate": "jobs.generate",
    "ingest": "jobs.ingest",
    "nodes": "jobs.nodes",
    "features": "jobs.features",
    "build": "jobs.build",
    "train": "jobs.train",
    "evaluate": "jobs.evaluate",
    "report": "jobs.report",
    "quality": "jobs.quality",
}

DESCRIPTION = """\
MGOE: Macro Graph of Experts for multi-task recommendation.

Spark stages turn multi-behavior logs (click / fav / cart / buy ...) into a Macro Task Merging Graph and
its feature tables; a PyTorch trainer fits MGOE and baselines on them. Every subcommand takes
--config/--profile/--set/--run-date/--output; `mgoe <subcommand> --help` explains its own options.
"""


def build_parser() -> argparse.ArgumentParser:
    from jobs.common import add_common_args

    parser = argparse.ArgumentParser(
        prog="mgoe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subs = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subs.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure_parser(sub)
        add_common_args(sub)
        sub.set_defaults(_execute=module.execute)
    return parser


def main(argv: list[str] | None = None) -> int:
    wrong = problem()
    if wrong:
        print(f"mgoe: error: {wrong}", file=sys.stderr)
        return 2
    from jobs.common import run_guarded

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_execute", None):
        parser.print_help()
        return 2
    return run_guarded(args._execute, args)


if __name__ == "__main__":
    sys.exit(main())
