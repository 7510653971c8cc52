"""Paired statistics of a model comparison (SPEC 5): every model against a reference model, seed by seed.

Two models trained with the same seed see the same data order and initial draws where they share
parameters, so their per-seed AUC difference ``d_s = AUC_model(s) - AUC_reference(s)`` removes the
seed-to-seed variation both share; its mean over ``n`` seeds has standard error ``SE = std(d, ddof=1) /
sqrt(n)`` (nan for one seed), and ``wins`` counts the seeds with ``d_s > 0``. A margin is read as "more than 2
SE": on 5 seeds that is close to a paired t-test at the 5-10 % level, the convention of the issue (not a
formal test). Seeds are matched by their number, never by position; a seed missing from either model is left
out. Pure Python: no torch, no Spark.

>>> runs = lambda *v: {"seeds": [{"seed": s, "test": {"auc": {"click": x}, "auc_mean": x}} for s, x in enumerate(v)]}
>>> p = paired_differences({"a": runs(0.80, 0.82, 0.81), "b": runs(0.81, 0.81, 0.84)}, "a", ["click"])
>>> [round(x, 4) for x in p["b"]["mean"]["diffs"]], round(p["b"]["mean"]["mean"], 4), p["b"]["mean"]["wins"]
([0.01, -0.01, 0.03], 0.01, 2)
"""

from __future__ import annotations

import math

MEAN = "mean"
"""The key of the mean-over-tasks AUC beside the per-task keys."""


def _per_seed(result: dict, tasks: list[str], split: str) -> dict[int, dict[str, float]]:
    """seed -> {task: AUC, "mean": mean AUC} of one model's per-seed runs on ``split``."""
    out = {}
    for run in result.get("seeds", []):
        metrics = run.get(split) or {}
        values = {t: metrics.get("auc", {}).get(t, math.nan) for t in tasks}
        values[MEAN] = metrics.get("auc_mean", math.nan)
        out[int(run["seed"])] = {k: math.nan if v is None else float(v) for k, v in values.items()}
    return out


def summarize(diffs: list[float]) -> dict:
    """``{"diffs", "n", "mean", "se", "wins"}`` of per-seed differences (nan ones left out of every number)."""
    d = [x for x in diffs if not math.isnan(x)]
    n = len(d)
    mean = sum(d) / n if n else math.nan
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n) if n >= 2 else math.nan
    return {"diffs": list(diffs), "n": n, "mean": mean, "se": se, "wins": sum(x > 0 for x in d)}


def paired_differences(models: dict, reference: str, tasks: list[str], split: str = "test") -> dict:
    """Per model other than ``reference`` (result label -> trainer result, as in ``results["models"]``):
    ``{"seeds": [matched seeds], task: summary, ..., "mean": summary}`` with :func:`summarize` of the per-seed
    AUC differences to ``reference`` on ``split``. Raises KeyError when the reference is absent."""
    if reference not in models:
        raise KeyError(f"reference model {reference!r} is not among the results ({', '.join(models)})")
    ref = _per_seed(models[reference], tasks, split)
    out = {}
    for label, result in models.items():
        if label == reference:
            continue
        mine = _per_seed(result, tasks, split)
        seeds = sorted(set(mine) & set(ref))
        row: dict = {"seeds": seeds}
        for key in [*tasks, MEAN]:
            row[key] = summarize([mine[s][key] - ref[s][key] for s in seeds])
        out[label] = row
    return out


def _cell(s: dict) -> str:
    if not s["n"] or math.isnan(s["mean"]):
        return "n/a"
    se = "n/a" if math.isnan(s["se"]) else f"{s['se']:.4f}"
    return f"{s['mean']:+.4f} ± {se} ({s['wins']}/{s['n']})"


def paired_table(paired: dict, tasks: list[str], reference: str) -> str:
    """Fixed-width text: per model, per task and mean, ``mean difference ± SE (wins/seeds)`` to the reference,
    then the per-seed differences of the mean AUC."""
    head = ["model - " + reference] + [f"ΔAUC {t}" for t in tasks] + ["ΔAUC mean", "per-seed Δ mean (seed: Δ)"]
    rows = [head]
    for label, row in paired.items():
        per_seed = ", ".join(
            f"{s}: {d:+.4f}" for s, d in zip(row["seeds"], row[MEAN]["diffs"], strict=True) if not math.isnan(d)
        )
        rows.append([label] + [_cell(row[t]) for t in tasks] + [_cell(row[MEAN]), per_seed])
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def default_reference(models: dict, preferred: str = "mgoe") -> str | None:
    """``preferred`` when it is among ``models``, else the first model; ``None`` for no models."""
    return preferred if preferred in models else next(iter(models), None)
