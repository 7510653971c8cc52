"""Metrics: per-task AUC (exact, tie-aware) and Logloss, their averages, and tables of results.

AUC is the Mann-Whitney statistic: the probability that a random positive scores above a random negative,
ties counting one half. Computed from average ranks after one sort: O(n log n) time, O(n) memory for the
n predictions of a split (T floats per row, far smaller than the table itself).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import nn

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Tie-aware ROC AUC; ``nan`` when only one class is present. labels (n,) in {0, 1}, scores (n,)."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    pos = labels > 0.5
    n_pos = int(pos.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    # average rank (1-based) of each tie group
    boundary = np.concatenate([[True], s[1:] != s[:-1]])
    group = np.cumsum(boundary) - 1
    starts = np.flatnonzero(boundary)
    ends = np.concatenate([starts[1:], [len(s)]])
    avg_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(s))
    ranks[order] = avg_rank[group]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [1e-7, 1 - 1e-7]."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), EPS, 1 - EPS)
    if len(labels) == 0:
        return math.nan
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _nan_mean(values) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def task_metrics(labels: np.ndarray, probs: np.ndarray, tasks: list[str] | tuple[str, ...]) -> dict:
    """labels, probs (n, T) -> {"auc": {task: x}, "logloss": {...}, "auc_mean", "logloss_mean", "rows",
    "auc_given_first": {task: x}, "auc_given_first_mean"}.

    ``auc_given_first`` is each later task's AUC on the rows whose first task (click) is positive (ESMM's
    CVR AUC on the click space): it measures the task-specific ranking alone, which the plain AUC mixes with
    the click ranking when most negatives are sampled, never-clicked items. Means are over the tasks whose
    AUC is defined (both classes present).
    """
    aucs = {t: auc(labels[:, k], probs[:, k]) for k, t in enumerate(tasks)}
    lls = {t: logloss(labels[:, k], probs[:, k]) for k, t in enumerate(tasks)}
    first = labels[:, 0] > 0.5 if len(tasks) else np.zeros(0, bool)
    given = {t: auc(labels[first, k], probs[first, k]) for k, t in enumerate(tasks) if k > 0}
    return {
        "auc": aucs,
        "logloss": lls,
        "auc_mean": _nan_mean(aucs.values()),
        "logloss_mean": _nan_mean(lls.values()),
        "auc_given_first": given,
        "auc_given_first_mean": _nan_mean(given.values()),
        "rows": int(labels.shape[0]),
    }


@torch.no_grad()
def predict(model: nn.Module, batches) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over an iterable of batches -> (labels (n, T), probabilities (n, T))."""
    was_training = model.training
    model.eval()
    labels, probs = [], []
    device = next(iter(model.parameters())).device
    try:
        for batch in batches:
            labels.append(batch["labels"].numpy())
            if device.type != "cpu":
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            probs.append(torch.sigmoid(model(batch)).cpu().numpy())
    finally:
        model.train(was_training)
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(labels), np.concatenate(probs)


def evaluate(model: nn.Module, batches, tasks) -> dict:
    labels, probs = predict(model, batches)
    if labels.shape[0] == 0:
        return {"auc": {}, "logloss": {}, "auc_mean": math.nan, "logloss_mean": math.nan, "rows": 0}
    return task_metrics(labels, probs, tasks)


def _defined(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _fmt(mean: float, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.4f}" if std is None else f"{mean:.4f}±{std:.4f}"


def results_table(results: dict, tasks) -> str:
    """Fixed-width text table: one row per model, AUC and Logloss per task and mean (mean±std over seeds), and
    the mean AUC of the later tasks on the rows whose first task is positive (``auc_given_first``; left out
    when no model has it, as in the ``events`` sample space)."""
    given = len(tasks) > 1 and all("auc_given_first_mean" in r for r in results["models"].values())
    # in the events space no row has two behaviors, so a later task is never positive on a clicked row
    given = given and any(_defined(r["auc_given_first_mean"]) for r in results["models"].values())
    head = ["model"] + [f"AUC {t}" for t in tasks] + ["AUC mean"]
    head += [f"AUC mean | {tasks[0]}"] if given else []
    head += [f"LL {t}" for t in tasks] + ["LL mean"]
    rows = [head]
    for name, r in results["models"].items():
        row = [name]
        row += [_fmt(r["auc"][t]["mean"], r["auc"][t]["std"]) for t in tasks]
        row.append(_fmt(r["auc_mean"], r["auc_mean_std"]))
        if given:
            row.append(_fmt(r["auc_given_first_mean"], r.get("auc_given_first_mean_std")))
        row += [_fmt(r["logloss"][t]["mean"], r["logloss"][t]["std"]) for t in tasks]
        row.append(_fmt(r["logloss_mean"], r["logloss_mean_std"]))
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def to_json(obj) -> str:
    """JSON with NaN written as null (strict JSON)."""

    def clean(x):
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    return json.dumps(clean(obj), indent=2, sort_keys=False)
