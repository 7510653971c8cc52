"""Markdown report with PNG plots (matplotlib, Agg backend) from a results dict of :mod:`model.train`.

Files written to ``out_dir``: ``report.md``, ``results.json``, ``training_curves.png`` (train loss and
validation mean AUC per epoch, every model and seed; only when the results hold training histories) and
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


def plot_curves(results: dict, path: Path) -> None:
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, r) in enumerate(results["models"].items()):
        c = colors[k % len(colors)]
        for j, run in enumerate(r["seeds"]):
            ep = [h["epoch"] for h in run["history"]]
            label = name if j == 0 else None
            ax_loss.plot(ep, [h["train_loss"] for h in run["history"]], color=c, marker="o", label=label)
            ax_auc.plot(ep, [h["valid_auc_mean"] for h in run["history"]], color=c, marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss (sum of task BCE)", title="Training loss")
    ax_auc.set(xlabel="epoch", ylabel="validation mean AUC", title="Validation mean AUC")
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
    if meta := results.get("meta"):
        lines.append(
            f"- sizes: {meta['num_users']:,} users, {meta['num_items']:,} items, K_U={meta['k_user']}, "
            f"K_I={meta['k_item']}, hops={meta['hops']}, L={meta['recent_len']}"
        )
    if tc := results.get("train_config"):
        lines.append(
            f"- training: batch {tc['batch_size']}, lr {tc['lr']}, weight decay {tc['weight_decay']}, "
            f"d={tc['embed_dim']}, tau={tc['tau']}, seeds {tc['seeds']}, up to {tc['epochs']} epochs "
            f"(patience {tc['patience']})"
        )
    lines += [
        "",
        f"## {split.capitalize()} metrics (mean ± std over seeds)",
        "",
        "| model | " + " | ".join(f"AUC {t}" for t in tasks) + " | AUC mean | Logloss mean | best epochs |",
        "|---|" + "---|" * (len(tasks) + 3),
    ]

    def f(m, s):
        return "n/a" if m is None or math.isnan(m) else f"{m:.4f} ± {s:.4f}"

    for name, r in results["models"].items():
        cells = [f(r["auc"][t]["mean"], r["auc"][t]["std"]) for t in tasks]
        epochs = ", ".join(str(s["best_epoch"]) for s in r["seeds"])
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {f(r['auc_mean'], r['auc_mean_std'])} | {f(r['logloss_mean'], r['logloss_mean_std'])} | {epochs} |"
        )
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
