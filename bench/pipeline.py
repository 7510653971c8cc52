"""End-to-end build benchmark: ``python -m bench.pipeline --json PATH [--sizes 1000000,4000000,16000000]``.

For each size (number of generated click events; the funnel adds ~16% more events), generates the log,
times its ingest (``ingest_seconds``, ``ingest_rows_per_s``, reported apart from the build), then times the
build stages ``nodes`` and ``features`` on local Spark (``--master``, default local[2]), and every step of
them (``seconds_by_step``: the ``step_seconds`` rows the stages record in run_metrics), with the load
average at the start and end of each build. Reports seconds per stage, events/s, the log-log slope of total
time vs events (``scaling_exponent``) and the driver's peak RSS (Python driver + its Spark JVM, from /proc VmHWM).
Users and items grow with the events (``--events-per-user``), so a flat driver RSS means the driver does not
hold per-user data. Prints a table and writes JSON. ``--event-log DIR`` also records Spark event logs and
adds ``spark_by_step`` (per size and step: jobs, stages, tasks, task seconds; :mod:`bench.spark_events`), which
says how much of a step's wall time is task work and how much per-job overhead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _jvm_pid(spark) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def run(
    sizes: list[int],
    master: str,
    events_per_user: int,
    out_root: str,
    reuse_inputs: bool = False,
    on_size=None,
    event_log: str | None = None,
) -> dict:
    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.core.storage import TableStore
    from mgoe_spark.features.run import run_features
    from mgoe_spark.generate.run import run_generate
    from mgoe_spark.ingest.run import run_ingest
    from mgoe_spark.nodes.run import run_nodes
    from schemas import INTERACTIONS

    result: dict = {
        "sizes": sizes, "seconds_total": [], "seconds_by_stage": [], "events_per_s": [], "events": [],
        "driver_peak_rss_mb": [], "jvm_peak_rss_mb": [], "users": [], "items": [], "master": master,
        "ingest_seconds": [], "ingest_rows_per_s": [], "stage_metrics": [],
        "seconds_by_step": [], "load_average": [],
    }  # fmt: skip
    spark_conf = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8"}
    if event_log:
        from bench.spark_events import SPARK_CONF

        Path(event_log).mkdir(parents=True, exist_ok=True)
        spark_conf |= {**SPARK_CONF, "spark.eventLog.dir": Path(event_log).resolve().as_uri()}
        result["spark_by_step"] = []
    for n in sizes:
        users = max(1000, n // events_per_user)
        overrides = [
            f"spark.master={master}",
            "spark.conf={" + ", ".join(f"{k}: '{v}'" for k, v in spark_conf.items()) + "}",
            f"generator.events={n}",
            f"generator.users={users}",
            f"generator.items={max(500, users // 2)}",
            "generator.user_groups=20",
            "generator.item_groups=20",
            f"output.root={out_root}/n{n}",
        ]
        cfg = load_config(overrides=overrides)
        spark = get_spark(cfg.spark, app_name=f"bench-pipeline-{n}")
        date = "2026-01-01"
        raw = f"{out_root}/raw{n}"
        store = TableStore.of(spark, cfg)
        if reuse_inputs and date in store.run_dates(INTERACTIONS):
            events = store.read(INTERACTIONS, date).count()
            result["ingest_seconds"].append(None)
            result["ingest_rows_per_s"].append(None)
            ingest_steps = {}
        else:
            run_generate(spark, cfg, raw, date)
            t_ingest = time.perf_counter()
            ingest = run_ingest(spark, cfg, raw, date)
            seconds = time.perf_counter() - t_ingest
            result["ingest_seconds"].append(round(seconds, 2))
            result["ingest_rows_per_s"].append(round(ingest.metrics["rows_in"] / seconds, 1))
            ingest_steps = {f"ingest: {k}": v for k, v in ingest.steps.items()}
            events = int(ingest.metrics["rows_out"])
        stages, metrics, steps = {}, {}, dict(ingest_steps)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        for name, fn in (("nodes", run_nodes), ("features", run_features)):
            t = time.perf_counter()
            summary = fn(spark, cfg, date)
            stages[name] = round(time.perf_counter() - t, 2)
            metrics[name] = summary.metrics
            steps.update({f"{name}: {k}": v for k, v in summary.steps.items()})
        result["stage_metrics"].append(metrics)
        result["seconds_by_step"].append(steps)
        result["load_average"].append([round(load_before, 2), round(os.getloadavg()[0], 2)])
        total = time.perf_counter() - t0
        result["seconds_total"].append(round(total, 2))
        result["seconds_by_stage"].append(stages)
        result["events"].append(events)
        result["events_per_s"].append(round(events / total, 1))
        result["users"].append(users)
        result["items"].append(max(500, users // 2))
        result["driver_peak_rss_mb"].append(round(_vm_hwm_mb(os.getpid()), 1))
        result["jvm_peak_rss_mb"].append(round(_vm_hwm_mb(_jvm_pid(spark)), 1))
        app_id = spark.sparkContext.applicationId
        spark.stop()  # flushes the event log
        if event_log:
            from bench.spark_events import summarize_app

            by_desc = summarize_app(event_log, app_id)
            prefix = "mgoe "
            result["spark_by_step"].append({d[len(prefix) :]: v for d, v in by_desc.items() if d.startswith(prefix)})
        if on_size is not None:
            on_size(result)  # partial results survive a later size failing
    if len(set(result["events"])) >= 2:
        xs = [math.log(e) for e in result["events"]]
        ys = [math.log(t) for t in result["seconds_total"]]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        result["scaling_exponent"] = round(slope, 3)
    else:
        result["scaling_exponent"] = None
    return result


def step_table(result: dict) -> str:
    """The per-step seconds of every size as a text table (steps in the order the stages ran them)."""
    names: list[str] = []
    for steps in result["seconds_by_step"]:
        names += [n for n in steps if n not in names]
    width = max([len(n) for n in names] + [4])
    lines = [f"{'step':<{width}} " + " ".join(f"{n:>11,}" for n in result["sizes"][: len(result["seconds_by_step"])])]
    for name in names:
        cells = [steps.get(name) for steps in result["seconds_by_step"]]
        lines.append(f"{name:<{width}} " + " ".join(f"{'-' if c is None else f'{c:.1f}':>11}" for c in cells))
    rates = " ".join(f"{'-' if r is None else f'{r:,.0f}':>11}" for r in result["ingest_rows_per_s"])
    lines.append(f"{'ingest rows/s':<{width}} {rates}")
    loads = " ".join(f"{f'{a:.1f}/{b:.1f}':>11}" for a, b in result["load_average"])
    lines.append(f"{'load avg (start/end)':<{width}} {loads}")
    return "\n".join(lines)


def spark_table(result: dict) -> str:
    """Per step of the last size: wall seconds, jobs, stages, tasks, task seconds (from the event log)."""
    steps, spark = result["seconds_by_step"][-1], result["spark_by_step"][-1]
    width = max([len(n) for n in steps] + [4])
    lines = [f"{'step':<{width}} {'seconds':>8} {'jobs':>5} {'stages':>6} {'tasks':>6} {'task s':>7}"]
    for name, sec in steps.items():
        r = spark.get(name, {})
        jobs, stages, tasks, task_s = (r.get(k, 0) for k in ("jobs", "stages", "tasks", "task_seconds"))
        lines.append(f"{name:<{width}} {sec:>8.1f} {jobs:>5} {stages:>6} {tasks:>6} {task_s:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, metavar="PATH")
    parser.add_argument("--sizes", default="1000000,4000000,16000000")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--events-per-user", type=int, default=50)
    parser.add_argument("--work-dir", help="where tables go (default: a temporary directory, deleted)")
    parser.add_argument(
        "--reuse-inputs",
        action="store_true",
        help="with --work-dir: skip generate + ingest for a size whose interactions table is already there",
    )
    parser.add_argument(
        "--event-log",
        metavar="DIR",
        help="write Spark event logs here and add 'spark_by_step': jobs, stages, tasks, task seconds per step",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        partial = Path(f"{args.json}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)

        def save(r: dict) -> None:
            partial.write_text(json.dumps(r, indent=2))

        work = args.work_dir or tmp
        result = run(sizes, args.master, args.events_per_user, work, args.reuse_inputs, save, args.event_log)
        partial.unlink(missing_ok=True)
    header = f"{'clicks':>11} {'events':>11} {'users':>9} {'nodes s':>8} {'features s':>10} {'total s':>8} "
    header += f"{'events/s':>9} {'driver MB':>9} {'JVM MB':>8}"
    print(header)
    for i, n in enumerate(sizes):
        st = result["seconds_by_stage"][i]
        print(
            f"{n:>11,} {result['events'][i]:>11,} {result['users'][i]:>9,} {st['nodes']:>8.1f} "
            f"{st['features']:>10.1f} {result['seconds_total'][i]:>8.1f} {result['events_per_s'][i]:>9,.0f} "
            f"{result['driver_peak_rss_mb'][i]:>9.0f} {result['jvm_peak_rss_mb'][i]:>8.0f}"
        )
    print(f"scaling exponent (log-log slope of total seconds vs events): {result['scaling_exponent']}")
    print(step_table(result))
    if result.get("spark_by_step"):
        print(spark_table(result))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
