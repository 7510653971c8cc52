"""Training harness (SPEC 6): the same loop, loss, early stopping and metrics for MGOE and every baseline.

For each model and seed: the id embedding tables get sparse gradients and a sparse optimizer that updates
(and L2-decays, ``train.weight_decay``) only the rows a batch looked up (``train.sparse_optimizer``, see
:mod:`model.sparse_optim`); the other weights Adam (``train.lr``) with weight decay, biases / Dice alpha /
lambda / gamma Adam without. Loss = sum of per-task BCE (+ ``train.l1`` * L1), one streamed pass over the
train split per epoch (full batches of a windowed shuffle, see :class:`model.data.ExampleStream`),
validation mean AUC after each epoch (and every ``train.eval_every`` optimizer steps when set), early
stopping after ``train.patience`` checks without improvement, the best state kept as a checkpoint
(``torch.save(state_dict)`` + a JSON sidecar; loaded back with ``weights_only=True``) and scored on the test
split. Results are aggregated over ``train.seeds`` (mean and population std).

Deterministic for a seed: the model init (``torch.manual_seed``), the loader order (seeded per epoch) and
the thread count (``train.threads``) are fixed; the CPU kernels used are deterministic.

Data parallel (``mgoe train --nproc N`` or torchrun, :mod:`model.distributed`): each rank streams its own
row-group shard; gradients are averaged; metrics are computed on the gathered predictions; rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mgoe_spark.config import TrainSettings
from mgoe_spark.core.names import SPLITS
from model import distributed as dist
from model.baselines import build_model
from model.data import DataError, ExampleStream, TableMeta, make_loader, read_meta, resolve_run_date
from model.evaluate import evaluate, predict, task_metrics
from model.mgoe import MicroEmbeddings, ModelOptions, multitask_bce
from model.sparse_optim import Optimizers, build_optimizers, dense_parameters


def save_checkpoint(model: nn.Module, path: str | Path, info: dict) -> None:
    """state_dict (tensors only) at ``path`` and ``info`` (JSON) at ``path + '.json'``, each written to a
    temporary file beside it and renamed over it: a crash or a full disk mid-save leaves the previous
    checkpoint whole. Cost: one fsync and one rename per file."""
    atomic_write(Path(path), lambda fh: torch.save(model.state_dict(), fh))
    text = json.dumps(info, indent=2, default=str).encode()
    atomic_write(Path(f"{path}.json"), lambda fh: fh.write(text))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a new hidden file in ``path``'s folder, fsync it, then rename it to ``path``; on any
    failure the temporary file is removed and ``path`` is as it was."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # "x": a new file, with the umask's mode
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, meta: TableMeta | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from the JSON sidecar and load the tensors with ``weights_only=True``."""
    info = json.loads(Path(f"{path}.json").read_text())
    meta = meta or TableMeta.from_json(json.dumps(info["meta"]))
    model = build_model(info["model"], meta, ModelOptions(**info["options"]))
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    model.eval()
    return model, info


def _streams(cfg, root: str, run_date: str, meta: TableMeta, seed: int, ctx: dist.Context):
    """Train / valid / test streams of this rank: its row-group shard; the global batch is split over ranks."""
    t = cfg.train
    shard = {"rank": ctx.rank, "world": ctx.world}
    train = ExampleStream(
        root,
        run_date,
        "train",
        meta,
        max(1, t.batch_size // ctx.world),
        shuffle=True,
        shuffle_buffer=t.shuffle_buffer,
        seed=seed,
        row_groups_per_window=t.shuffle_row_groups,
        **shard,
    )
    valid = ExampleStream(root, run_date, "valid", meta, t.eval_batch_size, **shard)
    test = ExampleStream(root, run_date, "test", meta, t.eval_batch_size, **shard)
    return train, valid, test


def _evaluate(model: nn.Module, stream: ExampleStream, tasks: list[str], ctx: dist.Context) -> dict:
    """Metrics over the whole split: each rank scores its shard, predictions are gathered (exact AUC)."""
    dist.sync_buffers(model, ctx.world)
    labels, probs = predict(model, make_loader(stream))
    if ctx.world > 1:
        labels = dist.gather_rows(labels.reshape(len(labels), -1), ctx.world, ctx.device)
        probs = dist.gather_rows(probs.reshape(len(probs), -1), ctx.world, ctx.device)
    if labels.shape[0] == 0:
        return {"auc": {}, "logloss": {}, "auc_mean": math.nan, "logloss_mean": math.nan, "rows": 0}
    return task_metrics(labels, probs, tasks)


def _to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return batch if device == "cpu" else {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def drop_ids(batch: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Id dropout (training only): each row's own ``user_id`` and ``item_id`` become the padding id 0,
    independently with probability ``p``, so that row is scored from its macro and neighbor features alone,
    as a cold-start row of the test split is. Draws from torch's global generator (seeded per run)."""
    if p <= 0:
        return batch
    out = dict(batch)
    for key in ("user_id", "item_id"):
        ids = batch[key]
        out[key] = ids.masked_fill(torch.rand(ids.shape, device=ids.device) < p, 0)
    return out


def build_training(name: str, cfg, meta: TableMeta, device: str = "cpu"):
    """(model, optimizers) as the harness trains them: sparse id tables, decayed weights, plain vectors."""
    t = cfg.train
    model = build_model(name, meta, ModelOptions.from_train_settings(t)).to(device)
    if not t.sparse_embeddings:  # the dense reference: dense gradients, Adam + decay over every parameter
        for mod in model.modules():
            if isinstance(mod, nn.Embedding):
                mod.sparse, mod.padding_idx = False, 0  # as before: padding row masked in the lookups
        return model, Optimizers([torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)])
    optim = build_optimizers(model, t.lr, t.weight_decay, t.l1, t.sparse_optimizer, t.sparse_lr)
    return model, optim


@dataclass
class _Run:
    """What the epochs of one training run share: the model, its optimizers and loss inputs, this rank."""

    name: str
    seed: int
    t: TrainSettings
    ctx: dist.Context
    model: nn.Module
    optim: Optimizers
    weights: torch.Tensor | None
    """Per-task loss weights (``train.task_weights``), None for equal weights."""
    dense: list[nn.Parameter]
    """The parameters whose L1 goes into the loss (the sparse id tables get theirs from their optimizer)."""
    progress: bool


def _start_run(name: str, cfg, meta: TableMeta, seed: int, ctx: dist.Context, progress: bool) -> _Run:
    """Fix the thread count, seed torch's global generator with ``seed`` and build the model and optimizers
    (the model init draws from that generator: everything after it is reproducible for the seed)."""
    t = cfg.train
    torch.set_num_threads(max(1, t.threads // ctx.world) if ctx.device == "cpu" else t.threads)
    torch.manual_seed(seed)
    model, optim = build_training(name, cfg, meta, ctx.device)
    weights = torch.tensor(t.task_weights, dtype=torch.float32, device=ctx.device) if t.task_weights else None
    dense = dense_parameters(model) if t.sparse_embeddings else list(model.parameters())
    return _Run(name, seed, t, ctx, model, optim, weights, dense, progress and ctx.is_main)


def _epoch_steps(run: _Run, train_s: ExampleStream) -> int | None:
    """Steps of this epoch: None (the whole shard) on one rank, else the batches every rank has (ranks must
    take the same number of steps); at most ``train.max_steps_per_epoch``."""
    t = run.t
    steps = train_s.common_batches_per_epoch(t.loader_workers) if run.ctx.world > 1 else None
    if t.max_steps_per_epoch is not None:
        steps = t.max_steps_per_epoch if steps is None else min(steps, t.max_steps_per_epoch)
    return steps


def _train_step(run: _Run, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """One optimizer step on a batch: loss = sum_t w_t BCE_t (+ the model's auxiliary loss) + l1 * sum |p|
    over the dense parameters, gradients averaged over ranks. Returns (loss, rows). Id dropout draws from
    torch's global generator, before the forward pass."""
    t, model = run.t, run.model
    batch = drop_ids(_to_device(batch, run.ctx.device), t.id_dropout)
    logits = model(batch)
    loss = multitask_bce(logits, batch["labels"], run.weights)
    if hasattr(model, "auxiliary_loss"):  # e.g. GRec's load-balancing loss
        loss = loss + model.auxiliary_loss()
    if t.l1 > 0:  # sparse id tables: their L1 is applied by their optimizer, on the looked-up rows
        loss = loss + t.l1 * sum(p.abs().sum() for p in run.dense)
    run.optim.zero_grad(set_to_none=True)
    loss.backward()
    dist.sync_gradients(model, run.ctx.world)
    run.optim.step()
    return loss.item(), len(batch["labels"])


def _train_steps(run: _Run, train_s: ExampleStream, epoch: int) -> Iterator[tuple[float, int]]:
    """The optimizer steps of one streamed pass over this rank's train shard (seeded per epoch), at most
    :func:`_epoch_steps`: yields (loss, rows) after each step. The caller may stop early (a mid-epoch early
    stop); closing the generator closes the progress bar."""
    t = run.t
    train_s.set_epoch(epoch)
    steps = _epoch_steps(run, train_s)
    run.model.train()
    recent: deque[float] = deque(maxlen=20)
    bar = tqdm(
        make_loader(train_s, t.loader_workers),
        desc=f"{run.name} seed {run.seed} epoch {epoch + 1}/{t.epochs}",
        disable=not run.progress,
        leave=False,
        unit="batch",
        total=steps,
    )
    try:
        for step, batch in enumerate(bar):
            if steps is not None and step >= steps:
                break
            loss, n = _train_step(run, batch)
            recent.append(loss)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
            yield loss, n
    finally:
        bar.close()


@dataclass
class _Fit:
    """Where one run's training stands: its validation checks so far and the early-stopping state."""

    history: list[dict] = field(default_factory=list)
    """One record per validation check (:func:`_check_record`)."""
    best: float = -math.inf
    best_epoch: int = -1
    best_step: int = -1
    bad: int = 0
    """Checks in a row without improvement."""
    step: int = 0
    """Optimizer steps so far, over all epochs."""
    checked_at: int = -1
    """``step`` at the latest check (-1: none yet)."""
    losses: list[float] = field(default_factory=list)
    """Train loss of each step since the latest check."""
    rows: int = 0
    """Train rows so far, over all ranks."""
    clock: float = field(default_factory=time.perf_counter)
    """When training resumed after the latest check (validation time is not training time)."""

    @property
    def train_seconds(self) -> float:
        return float(sum(h["seconds"] for h in self.history))


def _check_record(run: _Run, epoch: int, fit: _Fit, valid: dict, elapsed: float) -> dict:
    """The history entry of a validation check: epoch (1-based), global step, mean train loss over the steps
    since the previous check, validation metrics, training seconds since the previous check; printed when
    showing progress."""
    score = valid["auc_mean"]
    record = {
        "epoch": epoch + 1,
        "step": fit.step,
        "train_loss": float(np.mean(fit.losses)) if fit.losses else math.nan,
        "valid_auc_mean": score,
        "valid_logloss_mean": valid["logloss_mean"],
        "valid_auc": valid["auc"],
        "seconds": elapsed,
    }
    if run.progress:
        at = "" if run.t.eval_every is None else f" step {fit.step}"
        tqdm.write(
            f"{run.name} seed {run.seed} epoch {epoch + 1}/{run.t.epochs}{at}: train loss {record['train_loss']:.4f}, "
            f"valid mean AUC {score:.4f} ({elapsed:.0f} s)"
        )
    return record


def _improved(score: float, best: float) -> bool:
    """A better validation mean AUC; with no valid rows (or one class only, score NaN) the latest check counts
    as improved until some check has a score, rather than never saving."""
    return (not math.isnan(score) and score > best) or (math.isnan(score) and best == -math.inf)


@dataclass
class _Validation:
    """What a validation check needs besides the run: the valid stream, tasks, checkpoint path and sidecar."""

    stream: ExampleStream
    tasks: list[str]
    checkpoint: str | Path
    info: dict


def _check(run: _Run, fit: _Fit, epoch: int, val: _Validation) -> bool:
    """One validation check: metrics on the valid split, a history record, rank 0 checkpoints an improvement.
    Returns True when ``train.patience`` checks in a row have not improved (stop). Every rank runs it at the
    same step (collective) and gets the same answer: the score comes from the gathered predictions.
    Cost: one pass over the valid split (each rank its shard), memory O(valid rows x T) for the exact AUC."""
    elapsed = time.perf_counter() - fit.clock
    valid = _evaluate(run.model, val.stream, val.tasks, run.ctx)
    fit.history.append(_check_record(run, epoch, fit, valid, elapsed))
    fit.losses, fit.checked_at = [], fit.step
    score = valid["auc_mean"]
    if _improved(score, fit.best):
        fit.best = score if not math.isnan(score) else -math.inf
        fit.best_epoch, fit.best_step, fit.bad = epoch + 1, fit.step, 0
        if run.ctx.is_main:
            at = {"epoch": epoch + 1, "step": fit.step, "valid": valid}
            save_checkpoint(run.model, val.checkpoint, {**val.info, **at})
    else:
        fit.bad += 1
    fit.clock = time.perf_counter()
    return fit.bad >= run.t.patience


def _train_epoch(run: _Run, fit: _Fit, train_s: ExampleStream, epoch: int, val: _Validation) -> bool:
    """Train one epoch, with a validation check after every ``train.eval_every``-th step (counted over all
    epochs); True when one of them stopped the run (early stopping, mid-epoch)."""
    every = run.t.eval_every
    with contextlib.closing(_train_steps(run, train_s, epoch)) as steps:
        for loss, rows in steps:
            fit.step += 1
            fit.losses.append(loss)
            fit.rows += rows * run.ctx.world
            if every is not None and fit.step % every == 0 and _check(run, fit, epoch, val):
                return True
    return False


def _fit(run: _Run, train_s: ExampleStream, val: _Validation) -> _Fit:
    """The epochs with validation checks and early stopping: a check at each epoch's end (skipped when a
    ``train.eval_every`` check just ran at that step) and every ``train.eval_every`` steps; stop after
    ``train.patience`` checks without improvement; rank 0 checkpoints each improvement.
    Cost: the train passes plus one pass over the valid split per check."""
    fit = _Fit()
    for epoch in range(run.t.epochs):
        if _train_epoch(run, fit, train_s, epoch, val):
            break
        end_due = run.t.eval_every is None or fit.checked_at != fit.step
        if end_due and _check(run, fit, epoch, val):
            break
    return fit


def _restore_best(run: _Run, checkpoint: str | Path) -> None:
    """Load the best state from rank 0's checkpoint and broadcast it to every rank (sparse id tables: check
    their padding row stayed zero)."""
    model, ctx = run.model, run.ctx
    if ctx.is_main:
        model.load_state_dict(torch.load(checkpoint, weights_only=True, map_location=ctx.device))
    dist.broadcast_state(model, ctx.world)
    if run.t.sparse_embeddings and isinstance(getattr(model, "micro", None), MicroEmbeddings):
        model.micro.check_padding()


def train_one(
    name: str,
    cfg,
    root: str,
    run_date: str,
    meta: TableMeta,
    seed: int,
    checkpoint: str | Path,
    progress: bool = True,
) -> dict:
    """Train ``name`` with ``seed``; returns history (one record per validation check), best epoch and step,
    valid and test metrics, throughput.

    Data parallel when the process group is up (:mod:`model.distributed`): every rank streams its row-group
    shard with ``batch_size / world`` rows per step, takes the same number of steps, and averages gradients;
    rank 0 writes the checkpoint, and the best state is broadcast from it before testing.
    """
    ctx = dist.context()
    run = _start_run(name, cfg, meta, seed, ctx, progress)
    opts = ModelOptions.from_train_settings(cfg.train)
    train_s, valid_s, test_s = _streams(cfg, root, run_date, meta, seed, ctx)
    tasks = list(meta.tasks)
    info = {"model": name, "seed": seed, "meta": asdict(meta), "options": asdict(opts)}
    fit = _fit(run, train_s, _Validation(valid_s, tasks, checkpoint, info))
    train_seconds = fit.train_seconds
    _restore_best(run, checkpoint)
    test = _evaluate(run.model, test_s, tasks, ctx)
    valid = _evaluate(run.model, valid_s, tasks, ctx)
    return {
        "seed": seed,
        "best_epoch": fit.best_epoch,
        "best_step": fit.best_step,
        "history": fit.history,
        "valid": valid,
        "test": test,
        "checkpoint": str(checkpoint),
        "train_samples_per_s": fit.rows / train_seconds if train_seconds > 0 else math.nan,
        "nproc": ctx.world,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def aggregate(runs: list[dict], tasks: list[str], split: str = "test") -> dict:
    """Per-seed metrics of ``split`` -> mean and std over seeds (per task and averaged)."""
    out: dict = {"auc": {}, "logloss": {}, "seeds": runs}
    for metric in ("auc", "logloss"):
        for task in tasks:
            vals = [r[split][metric].get(task, math.nan) for r in runs]
            m, s = _mean_std(vals)
            out[metric][task] = {"mean": m, "std": s, "values": vals}
        m, s = _mean_std([r[split][f"{metric}_mean"] for r in runs])
        out[f"{metric}_mean"], out[f"{metric}_mean_std"] = m, s
    given = [r[split].get("auc_given_first", {}) for r in runs]
    out["auc_given_first"] = {}
    for task in tasks[1:]:
        vals = [g.get(task, math.nan) for g in given]
        m, s = _mean_std(vals)
        out["auc_given_first"][task] = {"mean": m, "std": s, "values": vals}
    m, s = _mean_std([r[split].get("auc_given_first_mean", math.nan) for r in runs])
    out["auc_given_first_mean"], out["auc_given_first_mean_std"] = m, s
    out["train_samples_per_s"] = _mean_std([r.get("train_samples_per_s", math.nan) for r in runs])[0]
    return out


def train_models(
    cfg,
    examples_root: str,
    run_date: str | None,
    models: list[str],
    checkpoint_dir: str | Path | None = None,
    extra_roots: dict[str, tuple[str, str]] | None = None,
    progress: bool = True,
    table_roots: dict[str, str] | None = None,
) -> dict:
    """Train every model for every seed in ``cfg.train.seeds``; returns the results dict.

    ``table_roots`` maps a model name to its own table root (e.g. ``{"macgnn": ROOT}`` for MacGNN's binary
    one-graph table, ``{"mgoe_no_pref": ROOT}``); other models read ``examples_root``. Each result records
    the root it read (``models[name]["examples_root"]``).

    ``extra_roots`` maps an extra result name to (model, table root), e.g.
    ``{"mgoe_no_pref": ("mgoe", "/tables_without_weights")}`` for the w/o-preference ablation, trained on
    the same run date of a table built with ``weights.enabled=false``.
    """
    run_date = resolve_run_date(examples_root, run_date)
    meta = read_meta(examples_root, run_date, cfg.tasks.order)
    tasks = list(meta.tasks)
    ckpt = Path(checkpoint_dir or cfg.train.checkpoint_dir or tempfile.mkdtemp(prefix="mgoe-ckpt-"))
    ckpt.mkdir(parents=True, exist_ok=True)
    own = table_roots or {}
    jobs = [
        (m, m, own[m], read_meta(own[m], run_date, cfg.tasks.order)) if m in own else (m, m, examples_root, meta)
        for m in models
    ]
    for label, (model_name, root) in (extra_roots or {}).items():
        jobs.append((label, model_name, root, read_meta(root, run_date, cfg.tasks.order)))
    results: dict = {
        "examples_root": examples_root,
        "run_date": run_date,
        "tasks": tasks,
        "meta": asdict(meta),
        "train_config": asdict(cfg.train),
        "models": {},
    }
    for label, model_name, root, m in jobs:
        runs = []
        for seed in cfg.train.seeds:
            path = ckpt / f"{label}-seed{seed}.pt"
            runs.append(train_one(model_name, cfg, root, run_date, m, seed, path, progress))
        results["models"][label] = {"model": model_name, "examples_root": root, **aggregate(runs, tasks)}
    return results


# --------------------------------------------------------------------------------------------------------
# Evaluating saved checkpoints
# --------------------------------------------------------------------------------------------------------

_CHECKPOINT_NAME = re.compile(r"^(?P<label>.+)-seed(?P<seed>-?\d+)\.pt$")


class CheckpointError(DataError):
    """Checkpoints are missing or do not fit the table they are evaluated on (one-line message)."""


def find_checkpoints(checkpoint_dir: str | Path) -> dict[str, list[tuple[int, Path]]]:
    """``<label>-seed<S>.pt`` files that have a JSON sidecar -> ``{label: [(seed, path), ...]}`` sorted by
    label then seed (the names :func:`train_models` gives them)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    directory = Path(checkpoint_dir)
    if directory.is_dir():
        for path in sorted(directory.glob("*.pt")):
            match = _CHECKPOINT_NAME.match(path.name)
            if match and Path(f"{path}.json").is_file():
                found.setdefault(match["label"], []).append((int(match["seed"]), path))
    return {label: sorted(runs) for label, runs in sorted(found.items())}


def check_compatible(trained: TableMeta, table: TableMeta, checkpoint: str | Path) -> None:
    """Raise :class:`CheckpointError` unless a model built for ``trained`` can score rows of ``table``.

    The task count, macro-node counts, hops and neighbor length fix tensor shapes and must be equal; the
    table's user / item vocabularies may be smaller than the embedding tables but not larger (ids past the
    table would silently become the padding id).
    """
    name = Path(checkpoint).name
    for field_name, what in (
        ("num_tasks", "tasks"),
        ("k_user", "user macro nodes (kmeans.k_user)"),
        ("k_item", "item macro nodes (kmeans.k_item)"),
        ("hops", "hops (edges.hops)"),
        ("recent_len", "recent neighbors per task (neighbors.recent_len)"),
    ):
        a, b = getattr(trained, field_name), getattr(table, field_name)
        if a != b:
            raise CheckpointError(
                f"checkpoint {name} was trained with {a} {what} but the table has {b}; evaluate it on a "
                "training_examples table built with the same config, or retrain with mgoe train"
            )
    for field_name, what in (("num_users", "users"), ("num_items", "items")):
        a, b = getattr(trained, field_name), getattr(table, field_name)
        if b > a:
            raise CheckpointError(
                f"the table's {what} vocabulary ({b - 1:,} ids) is larger than checkpoint {name}'s embedding "
                f"table ({a - 1:,}); evaluate on the run date the model was trained on (--run-date) or retrain "
                "it with mgoe train on this run date"
            )


def evaluate_checkpoints(
    checkpoint_dir: str | Path,
    examples_root: str,
    run_date: str | None = None,
    split: str = "test",
    batch_size: int = 4096,
    threads: int | None = None,
    models: list[str] | None = None,
) -> dict:
    """Score every checkpoint in ``checkpoint_dir`` on ``split`` of ``examples_root``'s training_examples.

    ``run_date=None`` takes the latest partition; ``models`` keeps only these labels. Returns a results dict
    shaped like :func:`train_models`' (``models[label]["auc_mean"]`` etc., mean and std over the seeds
    found), with the metrics of each seed under ``split``. Cost: one streamed pass over the split per
    checkpoint; memory O(rows of the split x T) for the predictions (exact AUC needs them).
    """
    if split not in SPLITS:
        raise CheckpointError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    found = find_checkpoints(checkpoint_dir)
    if models is not None:
        missing = [m for m in models if m not in found]
        if missing:
            have = ", ".join(found) or "none"
            raise CheckpointError(f"no checkpoints for {', '.join(missing)} in {str(checkpoint_dir)!r} (it has {have})")
        found = {m: found[m] for m in models}
    if not found:
        raise CheckpointError(
            f"no checkpoints (<model>-seed<S>.pt with a .json sidecar) in {str(checkpoint_dir)!r}; "
            "train with mgoe train --report DIR and pass DIR (or DIR/checkpoints)"
        )
    if threads:
        torch.set_num_threads(threads)
    run_date = resolve_run_date(examples_root, run_date)
    table = read_meta(examples_root, run_date)
    results: dict = {
        "examples_root": examples_root,
        "run_date": run_date,
        "split": split,
        "checkpoint_dir": str(checkpoint_dir),
        "tasks": [],
        "meta": asdict(table),
        "models": {},
    }
    for label, runs in found.items():
        scored = []
        for seed, path in runs:
            info = json.loads(Path(f"{path}.json").read_text())
            trained = TableMeta.from_json(json.dumps(info["meta"]))
            check_compatible(trained, table, path)
            tasks = list(trained.tasks)
            if results["tasks"] and results["tasks"] != tasks:
                raise CheckpointError(
                    f"checkpoint {path.name} has tasks {tasks} but others in the directory have {results['tasks']}"
                )
            results["tasks"] = tasks
            results["meta"] = asdict(trained)
            model, info = load_checkpoint(path, trained)
            stream = ExampleStream(examples_root, run_date, split, trained, batch_size)
            metrics = evaluate(model, make_loader(stream), tasks)
            scored.append(
                {
                    "seed": seed,
                    "best_epoch": info.get("epoch"),
                    "best_step": info.get("step"),
                    "history": [],
                    split: metrics,
                    "checkpoint": str(path),
                }
            )
        results["models"][label] = {
            "model": info["model"],
            "examples_root": examples_root,
            **aggregate(scored, results["tasks"], split),
        }
    return results


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
