"""Markdown report with PNG plots (matplotlib, Agg backend) from a results dict of :mod:`model.train`.

Files written to ``out_dir``: ``report.md``, ``results.json``, ``training_curves.png`` (train loss and
validation mean AUC per epoch, every model and seed) and ``auc_per_task.png`` (test AUC per task per model,
mean with std error bars over seeds).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.evaluate import results_table, to_json  # noqa: E402


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
    ax.set(ylabel="test AUC", title="AUC per task per model (mean ± std over seeds)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out_dir: str | Path) -> Path:
    """Write the report files; returns the path of ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(to_json(results))
    plot_curves(results, out / "training_curves.png")
    plot_auc_per_task(results, out / "auc_per_task.png")
    tasks = results["tasks"]
    meta = results["meta"]
    tc = results["train_config"]
    lines = [
        "# MGOE training report",
        "",
        f"- examples: `{results['examples_root']}`, run date {results['run_date']}",
        f"- tasks (importance order): {', '.join(tasks)}",
        f"- sizes: {meta['num_users']:,} users, {meta['num_items']:,} items, K_U={meta['k_user']}, "
        f"K_I={meta['k_item']}, hops={meta['hops']}, L={meta['recent_len']}",
        f"- training: batch {tc['batch_size']}, lr {tc['lr']}, weight decay {tc['weight_decay']}, "
        f"d={tc['embed_dim']}, tau={tc['tau']}, seeds {tc['seeds']}, up to {tc['epochs']} epochs "
        f"(patience {tc['patience']})",
        "",
        "## Test metrics (mean ± std over seeds)",
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
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](training_curves.png)",
        "",
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
