"""Trainer benchmark: ``python -m bench.trainer --json PATH``.

Measures, on a synthetic training_examples table written to a temp dir (or ``--examples-root``):
training samples/s and inference microseconds per sample for MGOE and MMoE at batch 1024, d = 10, with
``--threads`` (default 2) torch threads, and the loader's decoded rows/s (single process). Prints the
numbers and writes them as JSON with the keys ``mgoe_train_samples_per_s``, ``mmoe_train_samples_per_s``,
``mgoe_infer_us_per_sample``, ``mmoe_infer_us_per_sample`` (the two timed side by side, interleaved),
``loader_rows_per_s``, ``loader_over_train``
(loader rows/s over MGOE's training samples/s), ``step_ms_by_vocab`` (``{model: {vocab: ms}}``: one training
step on the same batches with id tables of 10k / 1M / 10M users and half as many items),
``train_samples_per_s_by_nproc`` (``{nproc: samples/s}`` of ``mgoe train --nproc N`` on the table, the
threads split over the processes), ``{model}_macs_per_sample`` and ``mgoe_over_mmoe_macs`` (multiply-adds of
one inference forward: the floor of the inference ratio), and, unless ``--no-compile``, the same inference
figures through :func:`model.infer.compiled_inference` (``{model}_compiled_infer_us_per_sample``,
``mgoe_over_mmoe_infer_compiled``, ``compiled_max_abs_logit_diff`` against eager), and MGOE with narrower
experts (``--narrow-experts``, default 128,80: ``mgoe_narrow_*``, ``mgoe_narrow_over_mmoe_infer``) (plus
context: the load average, which shows CPU contention from other processes, and the settings).

Training and inference are timed on batches already decoded in memory, so they measure the model; the
loader is timed separately (it must be >= 5x the training rate so it never starves the model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def _batches(root: str, run_date: str, meta, n: int, batch_size: int):
    from model.data import ExampleStream

    out = []
    stream = ExampleStream(root, run_date, None, meta, batch_size, shuffle=True, shuffle_buffer=batch_size)
    while len(out) < n:
        for b in stream:
            if len(b["user_id"]) == batch_size:
                out.append(b)
            if len(out) >= n:
                break
    return out


def bench_loader(root: str, run_date: str, meta, batch_size: int, seconds: float) -> tuple[float, float]:
    """Decoded rows/s of one loader process, by wall clock and by CPU time."""
    from model.data import ExampleStream

    stream = ExampleStream(root, run_date, "train", meta, batch_size, shuffle=True, shuffle_buffer=16_384)
    rows, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for b in stream:
            rows += len(b["user_id"])
    return rows / (time.perf_counter() - start), rows / (time.process_time() - cpu)


def _trainer(name: str, meta, **options):
    """(model, optimizers) exactly as the harness builds them (sparse id tables), default settings; ``options``
    set model options the config does not carry (e.g. ``mgoe_expert_sizes``)."""
    from types import SimpleNamespace

    from mgoe_spark.config import load_config
    from model.train import build_training

    torch.manual_seed(0)
    cfg = load_config()
    if options:
        cfg = SimpleNamespace(train=SimpleNamespace(**{**vars(cfg.train), **options}))
    return build_training(name, cfg, meta)


def bench_train(name: str, meta, batches, seconds: float, **options):
    """(model, train samples/s by wall clock, by process CPU time (all threads), which is less distorted when
    other processes compete for the cores)."""
    from model.mgoe import multitask_bce

    model, optim = _trainer(name, meta, **options)

    def step(b):
        loss = multitask_bce(model(b), b["labels"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    for b in batches[:3]:  # warm-up
        step(b)
    rows, k, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        b = batches[k % len(batches)]
        step(b)
        rows += len(b["user_id"])
        k += 1
    return model, rows / (time.perf_counter() - start), rows / (time.process_time() - cpu)


def bench_infer(runners: dict, batches, seconds: float, round_batches: int = 4) -> dict:
    """``{name: (us/sample wall, us/sample CPU)}`` for ``runners`` (name -> batch -> logits), interleaved:
    each round runs every runner over the same ``round_batches`` batches, until each has had ``seconds``, so
    load from other processes hits all of them alike (side by side, not one after the other)."""
    wall = dict.fromkeys(runners, 0.0)
    cpu = dict.fromkeys(runners, 0.0)
    rows = dict.fromkeys(runners, 0)
    with torch.no_grad():
        for run in runners.values():  # warm-up (and the compilation of compiled runners)
            for b in batches[:3]:
                run(b)
        k = 0
        while min(wall.values()) < seconds:
            chunk = [batches[(k + j) % len(batches)] for j in range(round_batches)]
            k += round_batches
            for name, run in runners.items():
                start, c = time.perf_counter(), time.process_time()
                for b in chunk:
                    run(b)
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - c
                rows[name] += sum(len(b["user_id"]) for b in chunk)
    return {n: (wall[n] / rows[n] * 1e6, cpu[n] / rows[n] * 1e6) for n in runners}


def macs_per_sample(model, batch) -> float:
    """Multiply-adds of one inference forward per row (GEMMs / batched GEMMs, ``FlopCounterMode`` / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / 2 / len(batch["user_id"])


def compare_compiled(models: dict, batches) -> float:
    """Largest |compiled - eager| logit over a few batches (compiled runners must agree with eager)."""
    worst = 0.0
    with torch.no_grad():
        for model, run in models.values():
            for b in batches[:3]:
                worst = max(worst, (run(b) - model(b)).abs().max().item())
    return worst


def bench_vocab(names: list[str], meta, batches, vocabs: list[int], rounds: int) -> dict:
    """``{model: {vocab: ms}}``: one training step on the same batches with ``vocab`` users and ``vocab // 2``
    items. Every (model, vocab) trainer is built first and their steps are interleaved round-robin, so load
    from other processes hits all of them alike; each figure is the minimum over ``rounds`` steps (the least
    disturbed one), the median is kept beside it."""
    import dataclasses

    import numpy as np

    from model.mgoe import multitask_bce

    trainers = {}
    for name in names:
        for v in vocabs:
            big = dataclasses.replace(meta, num_users=max(v, meta.num_users), num_items=max(v // 2, meta.num_items))
            trainers[(name, v)] = _trainer(name, big)
    times: dict = {key: [] for key in trainers}
    for k in range(rounds + 2):
        b = batches[k % len(batches)]
        for key, (model, optim) in trainers.items():
            start = time.perf_counter()
            loss = multitask_bce(model(b), b["labels"])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if k >= 2:  # warm-up: the optimizer state of the first rows touched is allocated
                times[key].append((time.perf_counter() - start) * 1e3)
    best = {n: {str(v): float(np.min(times[(n, v)])) for v in vocabs} for n in names}
    median = {n: {str(v): float(np.median(times[(n, v)])) for v in vocabs} for n in names}
    return {"min": best, "median": median}


def bench_nproc(root: str, nproc: int, threads: int, steps: int, batch_size: int) -> float:
    """Training samples/s of ``mgoe train --nproc N`` (MGOE, one epoch of ``steps`` steps), from its JSON."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "jobs.train", "--examples-root", root, "--models", "mgoe", "--quiet"]
        cmd += ["--nproc", str(nproc), "--json", str(out)]
        for s in (
            f"train.threads={threads}",
            "train.epochs=1",
            "train.seeds=[0]",
            f"train.batch_size={batch_size}",
            f"train.max_steps_per_epoch={steps}",
        ):
            cmd += ["--set", s]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["models"]["mgoe"]["train_samples_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the numbers here")
    parser.add_argument("--examples-root", metavar="URI", help="use this table instead of a synthetic one")
    parser.add_argument("--run-date", metavar="YYYY-MM-DD")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument(
        "--narrow-experts",
        default="128,80",
        metavar="SIZES",
        help="also time MGOE with these expert sizes (model option mgoe_expert_sizes) as mgoe_narrow; '' skips",
    )
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the torch.compile inference figures"
    )
    parser.add_argument("--vocabs", default="10000,1000000,10000000", help="vocabularies for step_ms_by_vocab")
    parser.add_argument("--vocab-steps", type=int, default=20, help="steps timed per vocabulary")
    parser.add_argument("--nprocs", default="1,2", help="process counts for train_samples_per_s_by_nproc")
    parser.add_argument("--nproc-steps", type=int, default=150, help="training steps per nproc run")
    args = parser.parse_args(argv)

    from model.data import read_meta, resolve_run_date
    from model.synthetic import SyntheticSpec, generate_examples, write_examples

    torch.set_num_threads(args.threads)
    tmp = None
    root = args.examples_root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="mgoe-bench-")
        root = tmp.name
        # Taobao-like sizes for the parts that matter to speed: 4 tasks, K = 20, L = 20, 2 hops.
        spec = SyntheticSpec(
            users=5000,
            items=5000,
            user_groups=20,
            item_groups=20,
            feature_exposures_per_user=40,
            sample_exposures_per_user=24,
            recent_len=20,
            split_fractions=(0.9, 0.05),
        )
        write_examples(generate_examples(spec), root, "2024-01-01", row_group_rows=65_536 // 4, files=2)
    run_date = resolve_run_date(root, args.run_date)
    meta = read_meta(root, run_date)
    batches = _batches(root, run_date, meta, 20, args.batch_size)
    loader, loader_cpu = bench_loader(root, run_date, meta, args.batch_size, args.seconds)
    out = {"loader_rows_per_s": loader, "loader_rows_per_cpu_s": loader_cpu}
    from model.infer import compiled_inference

    models = {}
    variants = {"mgoe": {}, "mmoe": {}}
    if args.narrow_experts:
        variants["mgoe_narrow"] = {"mgoe_expert_sizes": [int(v) for v in args.narrow_experts.split(",")]}
    for name, options in variants.items():
        model, train, train_cpu = bench_train(name.removesuffix("_narrow"), meta, batches, args.seconds, **options)
        model.eval()
        models[name] = model
        out[f"{name}_train_samples_per_s"] = train
        out[f"{name}_train_samples_per_cpu_s"] = train_cpu
        out[f"{name}_macs_per_sample"] = macs_per_sample(model, batches[0])
    runners = {name: model for name, model in models.items()}
    if args.compile:
        compiled = {name: (models[name], compiled_inference(models[name])) for name in ("mgoe", "mmoe")}
        runners |= {f"{name}_compiled": run for name, (_, run) in compiled.items()}
    infer = bench_infer(runners, batches, args.seconds)
    for name, (us, cpu_us) in infer.items():
        out[f"{name}_infer_us_per_sample"] = us
        out[f"{name}_infer_cpu_us_per_sample"] = cpu_us
    out["mgoe_over_mmoe_infer"] = out["mgoe_infer_us_per_sample"] / out["mmoe_infer_us_per_sample"]
    out["mgoe_over_mmoe_infer_cpu"] = out["mgoe_infer_cpu_us_per_sample"] / out["mmoe_infer_cpu_us_per_sample"]
    out["mgoe_over_mmoe_macs"] = out["mgoe_macs_per_sample"] / out["mmoe_macs_per_sample"]
    if args.narrow_experts:
        out["mgoe_narrow_expert_sizes"] = variants["mgoe_narrow"]["mgoe_expert_sizes"]
        for key in ("infer", "infer_cpu", "macs"):
            unit = "macs_per_sample" if key == "macs" else f"{key}_us_per_sample"
            out[f"mgoe_narrow_over_mmoe_{key}"] = out[f"mgoe_narrow_{unit}"] / out[f"mmoe_{unit}"]
    if args.compile:
        out["mgoe_over_mmoe_infer_compiled"] = (
            out["mgoe_compiled_infer_us_per_sample"] / out["mmoe_compiled_infer_us_per_sample"]
        )
        out["compiled_max_abs_logit_diff"] = compare_compiled(compiled, batches)
    out["loader_over_mgoe_train"] = out["loader_rows_per_s"] / out["mgoe_train_samples_per_s"]
    out["loader_over_train"] = out["loader_over_mgoe_train"]
    vocabs = [int(v) for v in args.vocabs.split(",") if v]
    by_vocab = bench_vocab(["mgoe", "mmoe"], meta, batches, vocabs, args.vocab_steps)
    out["step_ms_by_vocab"] = by_vocab["min"]
    out["step_ms_by_vocab_median"] = by_vocab["median"]
    for name, by in out["step_ms_by_vocab"].items():
        out[f"{name}_step_ratio_largest_over_smallest_vocab"] = by[str(vocabs[-1])] / by[str(vocabs[0])]
    out["train_samples_per_s_by_nproc"] = {
        n: bench_nproc(root, int(n), args.threads, args.nproc_steps, args.batch_size)
        for n in args.nprocs.split(",")
        if n
    }
    out["context"] = {
        "batch_size": args.batch_size,
        "embed_dim": 10,
        "threads": args.threads,
        "load_average_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "meta": {k: v for k, v in meta.__dict__.items() if k != "tasks"},
        "note": "CPU shared with other processes when load_average_1m > cpu_count: numbers are lower bounds",
    }
    for k, v in out.items():
        if k == "context":
            continue
        if isinstance(v, dict | list):
            print(f"{k:32s} " + json.dumps(v, default=lambda x: round(x, 2)))
        else:
            print(f"{k:32s} {v:,.2f}")
    print(f"{'load average (1 min)':32s} {out['context']['load_average_1m']:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
