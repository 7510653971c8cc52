"""End to end on a tiny synthetic table: every model trains in the harness; determinism; checkpoints
load with weights_only; report files; TorchScript export matches eager; the `train` job module."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from jobs.common import job_main
from mgoe_spark.config import load_config
from mgoe_spark.config.models import MODELS, TABLE_VARIANTS
from model.baselines import build_model
from model.data import ExampleStream, read_meta
from model.export import export_model, load_scorer
from model.mgoe import ModelOptions
from model.run import run_training
from model.synthetic import SyntheticSpec, generate_examples, write_examples
from model.train import load_checkpoint, train_one

RUN = "2024-02-01"
SMALL = [
    "train.embed_dim=4",
    "train.expert_sizes=[16, 8]",
    "train.tower_hidden=8",
    "train.batch_size=64",
    "train.eval_batch_size=128",
    "train.epochs=2",
    "train.patience=1",
    "train.max_steps_per_epoch=4",
    "train.seeds=[0]",
    "train.threads=1",
    "train.shuffle_buffer=128",
    "train.grec_experts=4",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    spec = SyntheticSpec(users=50, items=30, feature_exposures_per_user=10, sample_exposures_per_user=10, recent_len=3)
    path = str(tmp_path_factory.mktemp("examples"))
    write_examples(generate_examples(spec), path, RUN, row_group_rows=128, files=2)
    return path


@pytest.fixture(scope="module")
def cfg():
    return load_config(profile="test", overrides=SMALL)


@pytest.fixture(scope="module")
def results(cfg, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # every model, each table variant (mgoe_no_pref, mgoe_binary_edges, macgnn) on its "own" root (the same
    # tiny table here)
    own = dict.fromkeys(TABLE_VARIANTS, root)
    res = run_training(cfg, root, None, list(MODELS), out, progress=False, table_roots=own)
    return res, out


def test_every_model_trains_and_reports(results):
    res, out = results
    assert res["run_date"] == RUN and res["tasks"] == ["click", "fav", "cart", "buy"]
    assert set(res["models"]) == set(MODELS)
    for name, r in res["models"].items():
        assert 0.0 <= r["auc_mean"] <= 1.0, name
        assert r["logloss_mean"] > 0 and not math.isnan(r["logloss_mean_std"])
        assert set(r["auc"]) == set(res["tasks"]) and len(r["seeds"]) == 1
        run = r["seeds"][0]
        assert 1 <= run["best_epoch"] <= len(run["history"]) <= 2
    for f in ("report.md", "results.json", "training_curves.png", "auc_per_task.png"):
        assert (out / f).stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "| mgoe |" in text and "AUC click" in text
    loaded = json.loads((out / "results.json").read_text())
    assert loaded["models"]["mmoe"]["auc_mean"] == pytest.approx(res["models"]["mmoe"]["auc_mean"])


def test_checkpoint_is_tensors_only_and_reloads(results, root):
    res, _ = results
    run = res["models"]["mgoe"]["seeds"][0]
    state = torch.load(run["checkpoint"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, info = load_checkpoint(run["checkpoint"])
    assert info["model"] == "mgoe" and info["epoch"] == run["best_epoch"]
    meta = read_meta(root)
    from model.evaluate import evaluate

    again = evaluate(model, ExampleStream(root, RUN, "test", meta, 128), res["tasks"])
    assert again["auc_mean"] == pytest.approx(run["test"]["auc_mean"], abs=1e-9)


def test_training_is_deterministic_for_a_seed(cfg, root, tmp_path):
    meta = read_meta(root, RUN, cfg.tasks.order)
    a = train_one("mgoe", cfg, root, RUN, meta, 7, tmp_path / "a.pt", progress=False)
    b = train_one("mgoe", cfg, root, RUN, meta, 7, tmp_path / "b.pt", progress=False)
    c = train_one("mgoe", cfg, root, RUN, meta, 8, tmp_path / "c.pt", progress=False)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["test"] == b["test"]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in c["history"]]


def test_dropouts_are_seeded_and_change_training(cfg, root, tmp_path):
    meta = read_meta(root, RUN, cfg.tasks.order)
    plain = train_one("mgoe", cfg, root, RUN, meta, 7, tmp_path / "p.pt", progress=False)
    for key in ("train.dropout", "train.id_dropout"):
        reg = load_config(profile="test", overrides=[*SMALL, f"{key}=0.3"])
        a = train_one("mgoe", reg, root, RUN, meta, 7, tmp_path / "a.pt", progress=False)
        b = train_one("mgoe", reg, root, RUN, meta, 7, tmp_path / "b.pt", progress=False)
        losses = [[h["train_loss"] for h in r["history"]] for r in (plain, a, b)]
        assert losses[1] == losses[2] and a["test"] == b["test"], key  # same seed: the same masks
        assert losses[1] != losses[0], key


def test_ablations_fix_their_parameters(root):
    meta = read_meta(root)
    opts = ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4, cascade=True)  # the cascade is an option
    full = dict(build_model("mgoe", meta, opts).named_parameters())
    assert "adjust.gamma" in full and "towers.lam" in full
    assert "towers.lam" not in dict(build_model("mgoe", meta, ModelOptions(embed_dim=4)).named_parameters())
    assert "adjust.gamma" not in dict(build_model("mgoe_no_adjust", meta, opts).named_parameters())
    assert "towers.lam" not in dict(build_model("mgoe_no_cascade", meta, opts).named_parameters())


@pytest.mark.parametrize(
    "name,fmt", [("mgoe", "export"), ("grec", "export"), ("esmm", "export"), ("mgoe", "torchscript")]
)
def test_export_matches_eager(results, root, tmp_path, name, fmt):
    res, _ = results
    model, info = load_checkpoint(res["models"][name]["seeds"][0]["checkpoint"])
    meta = read_meta(root)
    batches = list(ExampleStream(root, RUN, "test", meta, batch_size=40))
    path = export_model(model, batches[0], tmp_path / f"{name}.pt2", info, fmt)
    scorer, extra = load_scorer(path)
    assert extra["model"] == name and extra["format"] == fmt
    with torch.no_grad():
        for b in batches[1:3]:  # other batches, other sizes than the trace example
            torch.testing.assert_close(scorer(b), torch.sigmoid(model(b)), rtol=1e-5, atol=1e-6)


def test_train_job_cli(root, tmp_path, capsys):
    import jobs.train as job

    out = tmp_path / "r.json"
    argv = ["--examples-root", root, "--models", "mgoe,mmoe", "--json", str(out), "--quiet", "--profile", "test"]
    argv += ["--export", str(tmp_path / "exported")]
    argv += [a for s in SMALL for a in ("--set", s)]
    assert job_main(job, argv) == 0
    res = json.loads(out.read_text())
    assert set(res["models"]) == {"mgoe", "mmoe"} and "auc_mean" in res["models"]["mgoe"]
    assert "AUC mean" in capsys.readouterr().out
    assert (tmp_path / "exported" / "mgoe.pt2").stat().st_size > 0
    assert job_main(job, ["--examples-root", str(tmp_path / "missing"), "--profile", "test"]) == 2
    assert "no training_examples" in capsys.readouterr().err
    assert job_main(job, ["--examples-root", root, "--models", "nope", "--profile", "test"]) == 2
    assert sys.modules["jobs.train"] is job


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.models=[mgoe,foo]", "unknown models"),
        ("train.grec_top_k=9", "grec_top_k"),
        ("train.task_weights=[1.0]", "one weight per task"),
        ("train.activation=tanh", "train.activation"),
        ("train.lr=0", "train.lr"),
    ],
)
def test_train_config_validation(override, message):
    from mgoe_spark.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


# --------------------------------------------------------------------------------------------------------
# train.eval_every: validation checks every N optimizer steps, early stopping on them
# --------------------------------------------------------------------------------------------------------

STEPS = 5
"""Optimizer steps per epoch of the ``root`` table at batch 64 (asserted below)."""


def _every_cfg(*extra: str):
    return load_config(profile="test", overrides=[*SMALL, f"train.max_steps_per_epoch={STEPS}", *extra])


def _per_epoch_reference(cfg, root, meta, seed):
    """The trainer's loop as it was before ``train.eval_every``, written out: one validation per epoch,
    ``train.patience`` epochs without improvement. Returns (history tuples, best epoch, best state)."""
    from model import distributed as dist
    from model.data import make_loader
    from model.train import _epoch_steps, _evaluate, _start_run, _streams, _train_step

    ctx = dist.context()
    run = _start_run("mgoe", cfg, meta, seed, ctx, progress=False)
    train_s, valid_s, _ = _streams(cfg, root, RUN, meta, seed, ctx)
    history, best, best_epoch, best_state, bad = [], -math.inf, -1, None, 0
    for epoch in range(cfg.train.epochs):
        train_s.set_epoch(epoch)
        steps = _epoch_steps(run, train_s)
        run.model.train()
        losses = []
        for step, batch in enumerate(make_loader(train_s, cfg.train.loader_workers)):
            if steps is not None and step >= steps:
                break
            losses.append(_train_step(run, batch)[0])
        valid = _evaluate(run.model, valid_s, list(meta.tasks), ctx)
        history.append((epoch + 1, sum(losses) / len(losses), valid["auc_mean"], valid["logloss_mean"], valid["auc"]))
        if valid["auc_mean"] > best:
            best, best_epoch, bad = valid["auc_mean"], epoch + 1, 0
            best_state = {k: v.clone() for k, v in run.model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.train.patience:
                break
    return history, best_epoch, best_state


def _comparable(history: list[dict]) -> list[tuple]:
    keys = ("epoch", "train_loss", "valid_auc_mean", "valid_logloss_mean", "valid_auc")
    return [tuple(h[k] for k in keys) for h in history]


def test_eval_every_none_is_the_per_epoch_loop(root, tmp_path):
    cfg = load_config(
        profile="test", overrides=[*SMALL, "train.max_steps_per_epoch=null", "train.epochs=8", "train.lr=0.05"]
    )
    assert cfg.train.eval_every is None and cfg.train.patience == 1
    meta = read_meta(root, RUN, cfg.tasks.order)
    ref_history, ref_best, ref_state = _per_epoch_reference(cfg, root, meta, 7)
    got = train_one("mgoe", cfg, root, RUN, meta, 7, tmp_path / "m.pt", progress=False)
    assert len(ref_history) < cfg.train.epochs  # early stopping happened
    assert _comparable(got["history"]) == ref_history  # bit for bit
    assert [h["step"] for h in got["history"]] == [STEPS * e for e in range(1, len(ref_history) + 1)]
    assert got["best_epoch"] == ref_best and got["best_step"] == STEPS * ref_best
    saved = torch.load(got["checkpoint"], weights_only=True)
    assert saved.keys() == ref_state.keys() and all(torch.equal(saved[k], ref_state[k]) for k in saved)


def test_eval_every_one_epoch_matches_none(root, tmp_path):
    meta = read_meta(root, RUN)
    runs = [
        train_one(
            "mgoe",
            _every_cfg("train.epochs=3", "train.patience=3", *extra),
            root,
            RUN,
            meta,
            3,
            tmp_path / f"{i}.pt",
            False,
        )
        for i, extra in enumerate([[], [f"train.eval_every={STEPS}"]])
    ]
    assert _comparable(runs[0]["history"]) == _comparable(runs[1]["history"])
    assert [h["step"] for h in runs[1]["history"]] == [5, 10, 15]  # the end-of-epoch check is not repeated
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["best_step"] == runs[1]["best_step"]


def _expected_checks(every: int, epochs: int, steps: int) -> list[tuple[int, int]]:
    """(epoch, step) of each check: every ``every`` global steps and at each epoch's end, once per step."""
    at = sorted(set(range(every, epochs * steps + 1, every)) | {steps * e for e in range(1, epochs + 1)})
    return [((s - 1) // steps + 1, s) for s in at]


@pytest.mark.parametrize("every", [2, 3, 7])
def test_eval_every_checks_every_n_global_steps(root, tmp_path, monkeypatch, every):
    import model.train as train

    losses = []
    step = train._train_step
    monkeypatch.setattr(train, "_train_step", lambda run, batch: losses.append(step(run, batch)) or losses[-1])
    cfg = _every_cfg("train.epochs=3", "train.patience=100", f"train.eval_every={every}")
    got = train_one("mmoe", cfg, root, RUN, read_meta(root, RUN), 0, tmp_path / "m.pt", progress=False)
    history = got["history"]
    assert len(losses) == 3 * STEPS  # no early stop; every epoch took its STEPS steps
    assert [(h["epoch"], h["step"]) for h in history] == _expected_checks(every, 3, STEPS)
    if every == 2:
        assert [h["step"] for h in history] == [2, 4, 5, 6, 8, 10, 12, 14, 15]
    previous = 0
    for h in history:  # train_loss: mean over the steps since the previous check
        assert h["train_loss"] == pytest.approx(
            sum(x for x, _ in losses[previous : h["step"]]) / (h["step"] - previous)
        )
        previous = h["step"]
    best = max(range(len(history)), key=lambda k: (history[k]["valid_auc_mean"], -k))
    assert (got["best_epoch"], got["best_step"]) == (history[best]["epoch"], history[best]["step"])
    assert load_checkpoint(got["checkpoint"])[1]["step"] == got["best_step"]


@pytest.mark.parametrize("patience,steps_taken", [(1, 4), (3, 6)])
def test_eval_every_stops_mid_epoch_and_restores_the_best_check(root, tmp_path, monkeypatch, patience, steps_taken):
    """Validation scores that only fall: the first check (step 2) stays best; stop after ``patience`` more."""
    import model.train as train

    real, states, taken = train._evaluate, [], []
    step = train._train_step

    def falling(model, stream, tasks, ctx):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {**real(model, stream, tasks, ctx), "auc_mean": 0.9 - 0.1 * len(states)}

    monkeypatch.setattr(train, "_evaluate", falling)
    monkeypatch.setattr(train, "_train_step", lambda run, batch: taken.append(1) or step(run, batch))
    cfg = _every_cfg("train.epochs=3", f"train.patience={patience}", "train.eval_every=2")
    got = train_one("mmoe", cfg, root, RUN, read_meta(root, RUN), 0, tmp_path / "m.pt", progress=False)
    checks = [(h["epoch"], h["step"]) for h in got["history"]]
    assert len(taken) == steps_taken and checks == _expected_checks(2, 3, STEPS)[: patience + 1]
    assert checks[-1][1] == steps_taken and steps_taken % STEPS != 0  # stopped mid-epoch
    assert (got["best_epoch"], got["best_step"]) == (1, 2)
    saved = torch.load(got["checkpoint"], weights_only=True)
    restored = states[patience + 1]  # what train_one scored on the test split after restoring
    for k in saved:
        assert torch.equal(saved[k], states[0][k]) and torch.equal(restored[k], states[0][k]), k
    assert any(not torch.equal(states[0][k], states[patience][k]) for k in saved)  # training did move on


def test_eval_every_zero_is_a_one_line_config_error():
    from mgoe_spark.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.eval_every.*>= 1") as err:
        load_config(overrides=["train.eval_every=0"])
    assert "\n" not in str(err.value)
    assert load_config(overrides=["train.eval_every=1"]).train.eval_every == 1
