"""Data-parallel training through the real job: 2 processes (mgoe train --nproc 2) match 1 process's test AUC;
a killed rank fails the run in one line instead of hanging (torchrun-style ranks and the launcher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.synthetic import SyntheticSpec, generate_examples, write_examples

RUN = "2024-02-01"
REPO = Path(__file__).resolve().parents[1]
AUC_TOLERANCE = 0.02
"""|AUC(2 processes) - AUC(1 process)|: same global batch, different data order (measured gap: 0.0001)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dp"))
    write_examples(generate_examples(SyntheticSpec()), path, RUN, row_group_rows=512, files=2)
    return path


def _cmd(root: str, *extra: str) -> list[str]:
    head = [sys.executable, "-m", "jobs.train", "--examples-root", root, "--models", "mgoe", "--quiet"]
    return [*head, "--profile", "test", "--set", "train.threads=1", "--set", "train.epochs=1", *extra]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def test_two_processes_match_one_process_auc(root, tmp_path):
    aucs = {}
    for n in (1, 2):
        out = tmp_path / f"r{n}.json"
        r = subprocess.run(
            _cmd(root, "--nproc", str(n), "--json", str(out)), env=_env(), capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr[-2000:]
        run = json.loads(out.read_text())["models"]["mgoe"]["seeds"][0]
        assert run["nproc"] == n and run["test"]["rows"] > 500  # every test row scored once, over both shards
        aucs[n] = run["test"]["auc_mean"]
    assert aucs[1] > 0.65  # the model learned something, so agreement is not two coin flips
    assert abs(aucs[2] - aucs[1]) <= AUC_TOLERANCE, aucs


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(kids)


def _long(root: str) -> list[str]:
    return _cmd(root, "--set", "train.epochs=200", "--set", "train.patience=200", "--set", "train.dist_timeout_s=20")


def _one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip() and "Warning" not in x and "warn" not in x]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_a_killed_rank_fails_the_launched_run_in_one_line(root):
    proc = subprocess.Popen(
        _long(root) + ["--nproc", "2"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 60
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(8)  # both ranks import torch, join the group and train
        rank1 = _children(proc.pid)[1]
        os.kill(rank1, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert _one_line(err.decode()) == "mgoe: error: training rank 1 of 2 was killed by SIGKILL; stopped the other ranks"


def test_torchrun_style_survivor_fails_in_one_line_not_a_hang(root):
    env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_port()), WORLD_SIZE="2")
    ranks = [
        subprocess.Popen(
            _long(root),
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for r in range(2)
    ]
    try:
        time.sleep(12)
        assert all(p.poll() is None for p in ranks)
        ranks[1].kill()
        _, err = ranks[0].communicate(timeout=60)  # the collective fails (or times out after 20 s)
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert ranks[0].returncode == 1
    assert _one_line(err.decode()).startswith("mgoe: error: rank 0: lost contact with another rank")


def _port() -> int:
    from model.distributed import free_port

    return free_port()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_a_gpu_is_one_line(root):
    r = subprocess.run(_cmd(root, "--device", "cuda"), env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and _one_line(r.stderr) == (
        "mgoe: error: train.device=cuda but torch sees no CUDA GPU here; use --device cpu"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_trains(root, tmp_path):
    out = tmp_path / "cuda.json"
    r = subprocess.run(_cmd(root, "--device", "cuda", "--json", str(out)), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["models"]["mgoe"]["auc_mean"] > 0.65


def test_two_processes_validate_every_n_steps_and_stop_together(root, tmp_path):
    """train.eval_every=2 on 2 ranks: both run every check (the evaluation is collective) and take the same
    stop decision mid-epoch. Weights that cannot move (lr 1e-30, ReLU: no running statistics) give the same
    valid AUC at each check: the first stays best and patience 1 stops at the second (step 4 of 5). A rank that
    decided otherwise would block in the next step's gradient all-reduce and fail the run (timeout 20 s)."""
    out = tmp_path / "every.json"
    sets = ["train.lr=1e-30", "train.activation=relu", "train.eval_every=2", "train.patience=1", "train.epochs=3"]
    sets += ["train.max_steps_per_epoch=5", "train.dist_timeout_s=20"]
    cmd = _cmd(root, "--nproc", "2", "--json", str(out), *[a for s in sets for a in ("--set", s)])
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads(out.read_text())["models"]["mgoe"]["seeds"][0]
    assert run["nproc"] == 2 and [(h["epoch"], h["step"]) for h in run["history"]] == [(1, 2), (1, 4)]
    assert run["history"][0]["valid_auc_mean"] == run["history"][1]["valid_auc_mean"]
    assert (run["best_epoch"], run["best_step"]) == (1, 2)
