"""The pipeline's part of a report, read from the run date's tables: cluster sizes and macro edge-weight
histograms as PNGs (only K-sized and histogram-bin-sized aggregates reach the driver), the stage summary
lines of ``run_metrics`` and its step timings (a table and a plot of where the time went). ``mgoe report
--tables`` and ``mgoe demo`` append them to the trainer's report (:mod:`model.report`).
"""

from __future__ import annotations

from pathlib import Path

from mgoe_spark.core.metrics import StageSummary
from mgoe_spark.core.names import SIDES

# Stage lines are listed in pipeline order; stages not named here follow alphabetically.
STAGE_ORDER = ("generate", "ingest", "nodes", "features", "build", "quality", "train")


def macro_id_ticks(ax, ids: list[int], max_labels: int = 25) -> None:
    """Label a macro-id axis with integer ticks only: every id when there are few, else integer steps."""
    from matplotlib.ticker import MaxNLocator

    if 0 < len(ids) <= max_labels:
        ax.set_xticks(sorted(ids))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=max_labels // 2, integer=True))


def pipeline_plots(spark, store, run_date: str, out_dir: Path) -> list[str]:
    """Cluster sizes and edge-weight histograms as PNGs; returns Markdown lines. Only k-sized or
    bin-sized aggregates reach the driver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyspark.sql import functions as F

    from schemas import CENTROIDS, MACRO_EDGES

    out_dir.mkdir(parents=True, exist_ok=True)
    centroids = store.read(CENTROIDS, run_date).select("side", "macro_id", "size", "weight").collect()  # 2k rows
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    lines = ["## Macro nodes", ""]
    for ax, side in zip(axes, SIDES, strict=True):
        rows = sorted((r for r in centroids if r["side"] == side), key=lambda r: r["macro_id"])
        sizes = [r["size"] for r in rows]
        ax.bar([r["macro_id"] for r in rows], sizes, color="#4C72B0" if side == "user" else "#DD8452")
        ax.set_title(f"{side} macro nodes (K={len(rows)})")
        macro_id_ticks(ax, [r["macro_id"] for r in rows])
        ax.set_xlabel("macro id")
        ax.set_ylabel("nodes")
        mean = sum(sizes) / max(len(sizes), 1)
        lines.append(
            f"- {side}s: K={len(rows)}, sizes min {min(sizes):,} / mean {mean:,.0f} / max {max(sizes):,} "
            f"(imbalance {max(sizes) / max(mean, 1e-12):.2f})"
        )
    fig.tight_layout()
    fig.savefig(out_dir / "cluster_sizes.png", dpi=110)
    plt.close(fig)
    lines += ["", "![cluster sizes](cluster_sizes.png)", ""]

    edges = store.read(MACRO_EDGES, run_date).where(F.col("snapshot") == "train")
    bins = (
        edges.select("side", "hop", F.explode("weights").alias("w"))
        .where(F.col("w") > 0)
        .groupBy("side", "hop", F.floor(F.log10("w") * 4).alias("bin"))
        .count()
        .collect()  # (sides x hops x ~40 bins) rows
    )
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key in sorted({(r["side"], r["hop"]) for r in bins}):
        pts = sorted((r["bin"] / 4, r["count"]) for r in bins if (r["side"], r["hop"]) == key)
        ax.plot([10**x for x, _ in pts], [c for _, c in pts], marker=".", label=f"{key[0]} hop {key[1]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("macro edge weight (non-zero)")
    ax.set_ylabel("count")
    ax.set_title("macro edge weight distribution (train snapshot)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "edge_weights.png", dpi=110)
    plt.close(fig)
    lines += ["## Macro edges", "", "![edge weights](edge_weights.png)", ""]
    return lines


def metric_rows(store, run_date: str) -> list:
    """The ``run_metrics`` rows of ``run_date`` (stage, metric, value, detail); [] when the partition does not
    exist. A tiny table (stages x metrics + steps), read once for the stage lines and the step table."""
    from schemas import RUN_METRICS

    if run_date not in store.run_dates(RUN_METRICS):
        return []
    return store.read(RUN_METRICS, run_date).select("stage", "metric", "value", "detail").collect()


def stage_lines(rows: list) -> list[str]:
    """The one-line summaries of every stage in :func:`metric_rows` (detail rows left out), in pipeline
    order; [] without rows."""
    summaries: dict[str, StageSummary] = {}
    for r in rows:
        if r["detail"] is None:
            summaries.setdefault(r["stage"], StageSummary(r["stage"])).add(r["metric"], r["value"])
    return [summaries[s].line() for s in sorted(summaries, key=_stage_key)]


def step_sections(rows: list, out_dir: Path, top: int = 15) -> list[str]:
    """The "where the time went" section: every timed step in :func:`metric_rows` (its ``step_seconds``
    rows) as a Markdown table -- stage, step, seconds, share of its stage -- in pipeline order,
    slowest step first within a stage, and a bar plot of the ``top`` slowest steps (``step_seconds.png``);
    [] without steps.
    O(stages x steps) rows reach the driver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mgoe_spark.core.metrics import STEP_SECONDS

    steps = [(r["stage"], r["detail"], float(r["value"])) for r in rows if r["metric"] == STEP_SECONDS and r["detail"]]
    if not steps:
        return []
    stage_seconds = {r["stage"]: float(r["value"]) for r in rows if r["metric"] == "seconds" and r["detail"] is None}
    steps.sort(key=lambda x: (_stage_key(x[0]), -x[2], x[1]))
    lines = ["## Where the time went", "", "| stage | step | seconds | share of stage |", "|---|---|---:|---:|"]
    for stage, name, sec in steps:
        total = stage_seconds.get(stage)
        share = f"{sec / total:.0%}" if total else ""
        lines.append(f"| {stage} | {name} | {sec:.2f} | {share} |")
    slowest = sorted(steps, key=lambda x: -x[2])[:top][::-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(slowest) + 1.2))
    ax.barh([f"{stage}: {name}" for stage, name, _ in slowest], [sec for *_, sec in slowest], color="tab:blue")
    ax.set_xlabel("seconds")
    ax.set_title(f"the {len(slowest)} slowest steps")
    fig.tight_layout()
    fig.savefig(out_dir / "step_seconds.png", dpi=110)
    plt.close(fig)
    return [*lines, "", "![step seconds](step_seconds.png)", ""]


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def append_sections(report: Path, lines: list[str], pipeline_lines: list[str]) -> None:
    """Append the "Pipeline run" stage lines and the pipeline plots' Markdown to ``report``."""
    extra = (["## Pipeline run", ""] + [f"- `{line}`" for line in lines] + [""]) if lines else []
    if extra or pipeline_lines:
        report.write_text(report.read_text() + "\n" + "\n".join(extra + pipeline_lines))
