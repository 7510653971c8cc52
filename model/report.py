"""Markdown report with PNG plots (matplotlib, Agg backend) from a results dict of :mod:`model.train`.

Files written to ``out_dir``: ``report.md``, ``results.json``, ``training_curves.png`` (train loss and
validation mean AUC per validation check, every model and seed, against the epoch, or the optimizer step
when the run validated every ``train.eval_every`` steps; only when the results hold training histories) and
``auc_per_task.png`` (AUC per task per model on the evaluated split, mean with std error bars over seeds).
The results may also come back from JSON (:func:`load_results`): ``mgoe train`` / ``evaluate`` / ``demo
--json`` write them, ``mgoe report`` rebuilds the report from them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mgoe_spark.core.names import SPLITS
from model.evaluate import results_table, to_json  # noqa: E402

# Keys whose null (NaN written by :func:`model.evaluate.to_json`) reads back as NaN.
_NUMERIC = {
    "mean", "std", "values", "auc_mean", "auc_mean_std", "logloss_mean", "logloss_mean_std",
    "train_samples_per_s", "train_loss", "valid_auc_mean", "valid_logloss_mean", "seconds", "<metric>",
}  # fmt: skip
_PER_TASK = {"auc", "logloss", "valid_auc"}


def _restore_nan(x, key: str | None = None):
    if isinstance(x, dict):
        return {k: _restore_nan(v, "<metric>" if key in _PER_TASK else k) for k, v in x.items()}
    if isinstance(x, list):
        return [_restore_nan(v, key) for v in x]
    return math.nan if x is None and key in _NUMERIC else x


class ResultsError(ValueError):
    """The results file is missing, not JSON, or not results of mgoe train / evaluate / demo."""


def load_results(path: str | Path) -> dict:
    """Read a results JSON (``mgoe train|evaluate|demo --json``); nulls in metric fields become NaN again."""
    p = Path(path)
    hint = "pass the file written by mgoe train --json, mgoe evaluate --json or mgoe demo --json"
    if not p.is_file():
        raise ResultsError(f"results file '{path}' does not exist; {hint}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"results file '{path}' is not JSON ({exc}); {hint}") from None
    missing = [k for k in ("tasks", "models", "run_date") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ResultsError(f"'{path}' is not a results file (no {', '.join(missing)}); {hint}")
    for name, r in data["models"].items():
        absent = [k for k in ("auc", "logloss", "auc_mean", "logloss_mean", "seeds") if k not in r]
        if absent:
            raise ResultsError(f"'{path}': model {name!r} lacks {', '.join(absent)}; {hint}")
    return _restore_nan(data)


def label_rates(root: str, run_date: str, tasks: list[str]) -> dict:
    """Per split of ``root``'s training_examples (one run date): rows, each task's label rate, the
    cold-start share and the shares of rows with exactly one positive label (``one_hot``: every row in the
    ``events`` space) and with none (``no_label``: negatives, unclicked exposures).
    ``{split: {"rows": n, "cold_start": share, "one_hot": share, "no_label": share, "labels": {task: rate}}}``.

    Streams the ``split`` / ``labels`` / ``cold_start`` columns one row group at a time: O(rows) work,
    memory one row group.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from model.data import partition_files

    fs, files = partition_files(root, run_date)
    sums: dict[str, np.ndarray] = {}
    for f in files:
        pf = pq.ParquetFile(f, filesystem=fs)
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["split", "labels", "cold_start"])
            if t.num_rows == 0:
                continue
            labels = np.asarray(pc.list_flatten(t["labels"]).to_numpy(zero_copy_only=False), np.float64)
            labels = labels.reshape(t.num_rows, -1)
            split = np.asarray(t["split"].to_numpy(zero_copy_only=False))
            cold = np.asarray(t["cold_start"].to_numpy(zero_copy_only=False), np.float64)
            positives = (labels > 0.5).sum(axis=1)
            for name in np.unique(split):
                m = split == name
                acc = sums.setdefault(str(name), np.zeros(4 + labels.shape[1]))
                acc[:4] += [m.sum(), cold[m].sum(), (positives[m] == 1).sum(), (positives[m] == 0).sum()]
                acc[4:] += labels[m].sum(axis=0)
    out = {}
    for name in [s for s in SPLITS if s in sums] + sorted(set(sums) - set(SPLITS)):
        acc = sums[name]
        n = max(acc[0], 1.0)
        out[name] = {
            "rows": int(acc[0]),
            "cold_start": float(acc[1] / n),
            "one_hot": float(acc[2] / n),
            "no_label": float(acc[3] / n),
            "labels": {t: float(acc[4 + k] / n) for k, t in enumerate(tasks[: len(acc) - 4])},
        }
    return out


def sample_space(root: str, run_date: str, rates: dict | None = None) -> str:
    """The sample space (SPEC 5) of ``root``'s tables of ``run_date``: the ``sample_space`` row the features
    stage wrote to run_metrics; without one (tables built by another writer), inferred from ``rates``
    (:func:`label_rates`): ``events (inferred)`` when every row has exactly one positive label, else ``pairs or
    exposures (inferred)``. Reads the tiny run_metrics partition."""
    import pyarrow.parquet as pq

    from mgoe_spark.core.names import SAMPLE_SPACE_METRIC
    from model.data import partition_files

    try:
        fs, files = partition_files(root, run_date, "run_metrics")
        for f in files:
            t = pq.read_table(f, filesystem=fs, columns=["stage", "metric", "detail"]).to_pylist()
            found = [r["detail"] for r in t if r["stage"] == "features" and r["metric"] == SAMPLE_SPACE_METRIC]
            if found:
                return str(found[-1])
    except (OSError, ValueError, KeyError):  # no run_metrics table, or one without the columns
        pass
    if not rates:
        return "unknown"
    one_hot = all(v.get("one_hot") == 1.0 for v in rates.values())
    return "events (inferred)" if one_hot else "pairs or exposures (inferred)"


def label_rate_table(results: dict) -> str:
    """Text table: per table root read and split, its sample space, rows, each task's label rate and the
    cold-start share, and which models read that root. Empty string when the results carry no label rates."""
    rates = results.get("label_rates") or {}
    if not rates:
        return ""
    tasks = results["tasks"]
    spaces = results.get("sample_space") or {}
    readers: dict[str, list[str]] = {}
    for name, r in results["models"].items():
        readers.setdefault(r.get("examples_root"), []).append(name)
    head = ["table (models)", "space", "split", "rows"] + [f"rate {t}" for t in tasks] + ["cold start"]
    rows = [head]
    for root, per_split in rates.items():
        who, space = f"{root} ({', '.join(readers.get(root, []))})", spaces.get(root, "?")
        for split, v in per_split.items():
            rows.append(
                [who, space, split, f"{v['rows']:,}"]
                + [f"{100 * v['labels'].get(t, math.nan):.2f}%" for t in tasks]
                + [f"{100 * v['cold_start']:.2f}%"]
            )
            who = space = ""
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def eval_every(results: dict) -> int | None:
    """``train.eval_every`` of a training run's results (None: validated once per epoch, or not training
    results)."""
    return (results.get("train_config") or {}).get("eval_every")


def plot_curves(results: dict, path: Path) -> None:
    """Train loss and validation mean AUC at each validation check: against the epoch, or against the
    optimizer step when the run validated every ``train.eval_every`` steps."""
    every = eval_every(results)
    x_key, x_label = ("step", f"optimizer step (validation every {every})") if every else ("epoch", "epoch")
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, r) in enumerate(results["models"].items()):
        c = colors[k % len(colors)]
        for j, run in enumerate(r["seeds"]):
            x = [h[x_key] for h in run["history"]]
            label = name if j == 0 else None
            ax_loss.plot(x, [h["train_loss"] for h in run["history"]], color=c, marker="o", label=label)
            ax_auc.plot(x, [h["valid_auc_mean"] for h in run["history"]], color=c, marker="o", label=label)
    ax_loss.set(xlabel=x_label, ylabel="train loss (sum of task BCE)", title="Training loss")
    ax_auc.set(xlabel=x_label, ylabel="validation mean AUC", title="Validation mean AUC")
    ax_auc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_auc_per_task(results: dict, path: Path) -> None:
    tasks = results["tasks"]
    names = list(results["models"])
    x = np.arange(len(tasks))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * max(1, len(names)) / 2), 4))
    lo = 1.0
    for k, name in enumerate(names):
        r = results["models"][name]
        means = [r["auc"][t]["mean"] for t in tasks]
        stds = [0 if math.isnan(r["auc"][t]["std"]) else r["auc"][t]["std"] for t in tasks]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, means, width, yerr=stds, label=name, capsize=2)
        lo = min([lo] + [m for m in means if not math.isnan(m)])
    ax.set_xticks(x, tasks)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    split = results.get("split", "test")
    ax.set(ylabel=f"{split} AUC", title="AUC per task per model (mean ± std over seeds)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def oracle_line(oracle: dict, tasks: list[str]) -> str:
    """One line: the oracle's AUC per task and mean on its split (:func:`mgoe_spark.generate.oracle.oracle_auc`)."""
    cells = ", ".join(f"{t} {oracle['auc'].get(t, math.nan):.4f}" for t in tasks)
    return f"{oracle.get('split', 'test')} AUC {cells}; mean {oracle['auc_mean']:.4f} ({oracle['rows']:,} rows)"


def paired_lines(results: dict, reference: str | None = None) -> list[str]:
    """Markdown section: each model's per-seed AUC difference to ``reference`` (default: ``mgoe`` when
    present, else the first model), mean ± standard error (wins/seeds) per task and mean
    (:mod:`model.paired`). Empty unless there are two models and a model has two seeds or more."""
    from model.paired import default_reference, paired_differences, paired_table

    models = results["models"]
    reference = reference or default_reference(models)
    if len(models) < 2 or max(len(r["seeds"]) for r in models.values()) < 2:
        return []
    split = results.get("split", "test")
    paired = paired_differences(models, reference, results["tasks"], split)
    return [
        "",
        f"## Paired differences to {reference} ({split} AUC, same seeds)",
        "",
        "Per model and task: mean over seeds of AUC(model) - AUC(reference), ± its standard error "
        "(std over seeds, ddof 1, / sqrt(seeds)), (seeds where the model is above / seeds).",
        "",
        "```",
        paired_table(paired, results["tasks"], reference),
        "```",
    ]


def best_cell(run: dict, every: int | None) -> str:
    """A seed's best validation check: its epoch, and its optimizer step when validating every N steps."""
    step = run.get("best_step")
    return f"{run['best_epoch']} (step {step})" if every and step is not None else str(run["best_epoch"])


def write_report(results: dict, out_dir: str | Path) -> Path:
    """Write the report files; returns the path of ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(to_json(results))
    has_history = any(run.get("history") for r in results["models"].values() for run in r["seeds"])
    if has_history:
        plot_curves(results, out / "training_curves.png")
    plot_auc_per_task(results, out / "auc_per_task.png")
    tasks = results["tasks"]
    split = results.get("split", "test")
    lines = ["# MGOE evaluation report" if "checkpoint_dir" in results else "# MGOE training report", ""]
    lines.append(f"- examples: `{results.get('examples_root')}`, run date {results['run_date']}, split {split}")
    if "checkpoint_dir" in results:
        lines.append(f"- checkpoints: `{results['checkpoint_dir']}`")
    lines.append(f"- tasks (importance order): {', '.join(tasks)}")
    if spaces := results.get("sample_space"):
        lines.append(f"- sample space (SPEC 5): {', '.join(sorted(set(spaces.values())))}")
    if oracle := results.get("oracle"):
        lines.append(f"- oracle (the generator's true probabilities): {oracle_line(oracle, tasks)}")
    if meta := results.get("meta"):
        lines.append(
            f"- sizes: {meta['num_users']:,} users, {meta['num_items']:,} items, K_U={meta['k_user']}, "
            f"K_I={meta['k_item']}, hops={meta['hops']}, L={meta['recent_len']}"
        )
    every = eval_every(results)
    if tc := results.get("train_config"):
        stop = f"patience {tc['patience']}"
        if every:
            stop = f"validation every {every} steps and at each epoch's end, {stop} checks"
        lines.append(
            f"- training: batch {tc['batch_size']}, lr {tc['lr']}, weight decay {tc['weight_decay']}, "
            f"d={tc['embed_dim']}, tau={tc['tau']}, seeds {tc['seeds']}, up to {tc['epochs']} epochs ({stop})"
        )
    best_head = "best epochs (steps)" if every else "best epochs"
    lines += [
        "",
        f"## {split.capitalize()} metrics (mean ± std over seeds)",
        "",
        "| model | " + " | ".join(f"AUC {t}" for t in tasks) + f" | AUC mean | Logloss mean | {best_head} |",
        "|---|" + "---|" * (len(tasks) + 3),
    ]

    def f(m, s):
        return "n/a" if m is None or math.isnan(m) else f"{m:.4f} ± {s:.4f}"

    roots = {r.get("examples_root") for r in results["models"].values()}
    if len(roots) > 1:  # say which table each model read
        lines[-2] = lines[-2].replace(f" | {best_head} |", f" | {best_head} | table |")
        lines[-1] += "---|"
    for name, r in results["models"].items():
        cells = [f(r["auc"][t]["mean"], r["auc"][t]["std"]) for t in tasks]
        epochs = ", ".join(best_cell(s, every) for s in r["seeds"])
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {f(r['auc_mean'], r['auc_mean_std'])} | {f(r['logloss_mean'], r['logloss_mean_std'])} | {epochs} |"
            + (f" `{r.get('examples_root')}` |" if len(roots) > 1 else "")
        )
    lines += paired_lines(results)
    if rates := label_rate_table(results):
        lines += ["", "## Sample space, label rates and cold-start share per split", "", "```", rates, "```"]
    lines += ["", "## Plots", ""]
    if has_history:
        lines += ["![training curves](training_curves.png)", ""]
    lines += [
        "![AUC per task](auc_per_task.png)",
        "",
        "## Text table",
        "",
        "```",
        results_table(results, tasks),
        "```",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
