"""What the TRAINING_EXAMPLES layout costs to encode, in core-microseconds per event (issue 10's bound).

    python -m bench.examples_write --work-dir DIR [--clicks 1000000] [--repeat 2] [--json PATH]

``DIR`` is a ``bench.pipeline --work-dir`` folder (``DIR/n<clicks>`` holds a built run). The examples are
rebuilt once from the written feature tables, conformed to the contract, spread over 4 x cores partitions
and cached; then each variant writes the same cached rows (no sort, so only encoding and I/O are timed):

- ``noop``: the rows are read from the cache and dropped (the floor: scan of the cache);
- ``parquet``: the contract layout with today's writer settings (zstd, dictionary on);
- ``parquet_no_dictionary``: the same without dictionary encoding;
- ``binary_blobs``: every list column replaced by one binary value of the same byte count per row (constant
  bytes, so a lower bound of what a blob layout would cost; it is not the contract).

Each figure is the JVM's CPU time (user + system, from /proc) during the write, so it is core-seconds, not
wall seconds, and it does not depend on how busy the machine is. ``budget`` is what issue 10's goal
(50k events/s on local[2]) allows the whole build per event: 2 cores / 50k = 40 core-us.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

BUDGET_CORE_US = 2 / 50_000 * 1e6
"""Core-microseconds per event the whole build may spend at issue 10's goal (2 cores, 50k events/s)."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _blobs(df, schema):
    """Each list column -> one binary value per row of the same byte count (4 bytes per element)."""
    from pyspark.sql import functions as F

    cols = []
    for c in schema.columns:
        n = _elements(c)
        cols.append(F.col(c.name) if n is None else F.repeat(F.lit("abcd"), n).cast("binary").alias(c.name))
    return df.select(*cols)


def _elements(column):
    """The number of leaf values of a list column (a Spark Column), or None for a scalar column."""
    from pyspark.sql import functions as F

    if column.type.startswith("list<list<"):
        return F.aggregate(column.name, F.lit(0), lambda acc, x: acc + F.size(x))
    if column.type.startswith("list<"):
        return F.size(column.name)
    return None


def run(work_dir: str, clicks: int, repeat: int) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.core.storage import TableStore, conform
    from mgoe_spark.features.build import examples_of
    from schemas import ASSIGNMENTS, INTERACTIONS, MACRO_EDGES, RECENT_NEIGHBORS, SAMPLES, TASK_LOOKUP
    from schemas import TRAINING_EXAMPLES as EX

    cfg = load_config(overrides=[
        "spark.master=local[2]", "spark.conf={spark.ui.enabled: 'false'}", f"output.root={work_dir}/n{clicks}",
    ])  # fmt: skip
    spark = get_spark(cfg.spark, app_name="bench-examples-write")
    store = TableStore.of(spark, cfg)
    date = store.run_dates(EX)[-1]

    def read(schema):
        return store.read(schema, date).drop("run_date")

    tables = {name: read(s) for name, s in (
        ("assignments", ASSIGNMENTS), ("macro_edges", MACRO_EDGES),
        ("recent_neighbors", RECENT_NEIGHBORS), ("task_lookup", TASK_LOOKUP),
    )}  # fmt: skip
    events = read(INTERACTIONS).count()
    examples = conform(examples_of(cfg, read(SAMPLES), tables), EX).drop("run_date")
    cached = examples.repartition(4 * (os.cpu_count() or 2)).persist(StorageLevel.MEMORY_AND_DISK)
    rows = cached.count()
    per_row = sum(F.lit(1) if _elements(c) is None else _elements(c) for c in EX.columns)
    values = cached.select(per_row.alias("v")).agg(F.sum("v")).first()[0]
    blobs = _blobs(cached, EX).persist(StorageLevel.MEMORY_AND_DISK)
    blobs.count()
    jvm = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    out = tempfile.mkdtemp(prefix="bench-examples-write-")
    variants = {
        "noop": lambda p: cached.write.format("noop").mode("overwrite").save(),
        "parquet": lambda p: cached.write.parquet(p),
        "parquet_no_dictionary": lambda p: cached.write.option("parquet.enable.dictionary", "false").parquet(p),
        "binary_blobs": lambda p: blobs.write.parquet(p),
    }
    result: dict = {"clicks": clicks, "events": events, "rows": rows, "values": int(values),
                    "budget_core_us_per_event": BUDGET_CORE_US, "variants": {}}  # fmt: skip
    for name in variants:
        result["variants"][name] = {"core_s": [], "wall_s": [], "mb": None, "load": []}
    for _ in range(repeat):
        for name, write in variants.items():
            path = f"{out}/{name}"
            shutil.rmtree(path, ignore_errors=True)
            cpu, t = _cpu_seconds(jvm), time.perf_counter()
            write(path)
            entry = result["variants"][name]
            entry["wall_s"].append(round(time.perf_counter() - t, 2))
            entry["core_s"].append(round(_cpu_seconds(jvm) - cpu, 2))
            entry["load"].append(round(os.getloadavg()[0], 2))
            if os.path.isdir(path):
                entry["mb"] = round(sum(f.stat().st_size for f in Path(path).glob("*.parquet")) / 1e6, 1)
    shutil.rmtree(out, ignore_errors=True)
    for entry in result["variants"].values():
        best = min(entry["core_s"])
        entry["core_us_per_event"] = round(best / events * 1e6, 1)
        entry["ns_per_value"] = round(best / result["values"] * 1e9, 1)
    spark.stop()
    return result


def table(result: dict) -> str:
    lines = [
        f"{result['rows']:,} example rows, {result['values']:,} values, {result['events']:,} events; "
        f"goal budget for the whole build: {result['budget_core_us_per_event']:.0f} core-us/event",
        f"{'variant':24s} {'core-s':>8s} {'wall s':>8s} {'MB':>8s} {'core-us/event':>14s} {'ns/value':>9s}",
    ]
    for name, e in result["variants"].items():
        mb = f"{e['mb']:.1f}" if e["mb"] is not None else "-"
        lines.append(
            f"{name:24s} {min(e['core_s']):8.1f} {min(e['wall_s']):8.1f} {mb:>8s} "
            f"{e['core_us_per_event']:14.1f} {e['ns_per_value']:9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.examples_write", description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", required=True, help="a bench.pipeline --work-dir with a built run")
    parser.add_argument("--clicks", type=int, default=1_000_000, help="which size of that work dir")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if not Path(args.work_dir, f"n{args.clicks}", "training_examples").is_dir():
        parser.error(f"no built run under {args.work_dir}/n{args.clicks}: run bench.pipeline --work-dir first")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run(args.work_dir, args.clicks, args.repeat)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
