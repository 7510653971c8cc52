"""Benchmark the synthetic generator: generate N click events (plus their funnel) and write them as CSV.

    python -m bench.generate --events 10000000 --json bench_generate.json

Uses the default profile (20k users, 10k items, 4 tasks) with ``generator.events = N``, on ``local[2]``
unless ``--master`` says otherwise. Times :func:`jobs.generate.run_generate` (the CSV write and the
ground-truth tables), prints a table, writes JSON ``{events, seconds, events_per_s, ...}`` and deletes the
output unless ``--keep``. ``jvm_cpu_s`` is the CPU time (user + sys) the Spark JVM spent during the run,
read from /proc (Linux only): on a shared machine it says how much work was done, whatever the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def _jvm_cpu_seconds(spark) -> float | None:
    """User + sys CPU seconds of the local Spark JVM (the py4j gateway process), or None if unknown."""
    try:
        pid = spark.sparkContext._gateway.proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        # fields[11:15] = utime, stime, cutime, cstime (stat fields 14-17)
        return sum(int(v) for v in fields[11:15]) / ticks
    except (AttributeError, OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="click events (generator.events)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON here")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    parser.add_argument("--out", metavar="DIR", help="output root (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated output")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.generate.run import run_generate

    cfg = load_config(overrides=[f"generator.events={args.events}", f"spark.master={args.master}", *args.overrides])
    cfg.spark.conf.setdefault("spark.ui.enabled", "false")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mgoe_bench_generate_"))
    cfg.output.root = str(root)
    spark = get_spark(cfg.spark, app_name="mgoe-bench-generate")
    cpu0 = _jvm_cpu_seconds(spark)
    start = time.perf_counter()
    summary = run_generate(spark, cfg, str(root / "raw"), "2000-01-01")
    seconds = time.perf_counter() - start
    cpu1 = _jvm_cpu_seconds(spark)
    csv_bytes = sum(p.stat().st_size for p in (root / "raw").glob("part-*"))
    spark.stop()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)

    rows = int(summary.metrics["events"])
    result = {
        "events": args.events,
        "rows": rows,
        "seconds": round(seconds, 2),
        "events_per_s": round(args.events / seconds),
        "rows_per_s": round(rows / seconds),
        "csv_mb": round(csv_bytes / 2**20, 1),
        "jvm_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
        "master": args.master,
        "partitions": cfg.generator.partitions,
        "per_task": {t: int(summary.metrics[f"events_{t}"]) for t in cfg.tasks.order},
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for key, value in result.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
