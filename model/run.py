"""The trainer's run: train the configured models on a training_examples table, then write the report.

:func:`run_training` is what ``mgoe train`` and ``mgoe demo`` call (and the tests); :func:`export_all` exports
the trained checkpoints. Pure PyTorch and pyarrow: no Spark.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgoe_spark.config.models import MODELS, TABLE_VARIANTS, model_of
from mgoe_spark.core.errors import UserError
from model.data import ExampleStream, TableMeta
from model.export import export_model
from model.report import label_rates, sample_space, write_report
from model.train import load_checkpoint, train_models


def run_training(
    cfg,
    examples_root: str,
    run_date: str | None,
    models: list[str] | None = None,
    report_dir: str | Path | None = None,
    *,
    no_pref_root: str | None = None,
    progress: bool = True,
    table_roots: dict[str, str] | None = None,
    oracle: dict | None = None,
) -> dict:
    """Train ``models`` (default ``cfg.train.models``) and return the results dict.

    ``results["models"][name]`` has ``auc_mean`` / ``auc_mean_std`` / ``logloss_mean`` / ``logloss_mean_std``
    (test split, over seeds), ``auc[task]`` / ``logloss[task]`` as {mean, std, values}, and per-seed runs.
    With ``report_dir``, also writes the Markdown report, plots, results.json and checkpoints there.
    ``table_roots``: model -> its own table root (``--table-root MODEL=URI``); ``results["label_rates"]``
    holds each read table's label rates and cold-start share per split, ``results["sample_space"]`` its sample
    space (SPEC 5).
    """
    models = list(models or cfg.train.models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(cfg.train.threads)
    ckpt = Path(report_dir) / "checkpoints" if report_dir else None
    roots = dict(table_roots or {})
    if no_pref_root:  # the older spelling of --table-root mgoe_no_pref=URI
        roots["mgoe_no_pref"] = no_pref_root
        models = models if "mgoe_no_pref" in models else [*models, "mgoe_no_pref"]
    for label in models:  # an ablation that differs from its model by its table only needs that table
        if label in TABLE_VARIANTS and model_of(label) != label and label not in roots:
            built_with = " ".join(TABLE_VARIANTS[label][1])
            raise UserError(
                f"{label} is {model_of(label).upper()} on a table built with {built_with}: pass --table-root "
                f"{label}=URI (mgoe demo builds it for you)"
            )
    results = train_models(cfg, examples_root, run_date, models, ckpt, None, progress, table_roots=roots)
    read = dict.fromkeys(r["examples_root"] for r in results["models"].values())
    results["label_rates"] = {root: label_rates(root, results["run_date"], results["tasks"]) for root in read}
    results["sample_space"] = {
        root: sample_space(root, results["run_date"], results["label_rates"][root]) for root in read
    }
    if oracle:  # the generator's true probabilities scored on the same split (the comparison's headroom)
        results["oracle"] = oracle
    if report_dir:
        write_report(results, report_dir)
    return results


def export_all(results: dict, out_dir: str) -> None:
    """Export each trained model's seed-0 checkpoint (torch.export, ``<name>.pt2``) into ``out_dir``."""
    for name, r in results["models"].items():
        run = r["seeds"][0]
        model, info = load_checkpoint(run["checkpoint"])
        meta = TableMeta(**{**info["meta"], "tasks": tuple(info["meta"]["tasks"])})
        stream = ExampleStream(r["examples_root"], results["run_date"], "test", meta, batch_size=256)
        example = next(iter(stream))
        path = export_model(model, example, Path(out_dir) / f"{name}.pt2", info)
        print(f"exported {name} -> {path}")
