"""Data-parallel training over processes: the process group, gradient and buffer sync, gathered metrics.

The protocol is torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the
environment), so ``torchrun --nproc-per-node N -m jobs.train ...`` and ``mgoe train --nproc N`` (which
starts the N processes itself, :func:`launch`) run the same code, on one node or several. Backend: gloo on
CPU, nccl on CUDA; every collective times out after ``train.dist_timeout_s``.

Every rank starts from the same seeded init and applies the same averaged gradients, so parameters stay
identical without broadcasts: dense gradients are flattened into one buffer and all-reduced; the sparse
id-table gradients (coalesced row indices + rows) are all-gathered, so every rank builds the same summed
sparse gradient (gloo's and nccl's all-reduce do not take sparse tensors) -- O(rows touched x ranks).
Batch-norm running statistics are averaged before each evaluation. Predictions of a split are gathered, so
every rank computes the same exact AUC and takes the same early-stopping decision; rank 0 alone writes.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """This process's place in the run: ``rank`` of ``world`` processes, and its torch device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DistributedError(RuntimeError):
    """A rank failed or a collective timed out (one-line message)."""


_CONTEXT = Context()


def context() -> Context:
    return _CONTEXT


def resolve_device(device: str, local_rank: int = 0) -> str:
    """``cpu``, or ``cuda:<local_rank>`` when ``device='cuda'`` and a GPU exists (DistributedError if not)."""
    if device == "cpu":
        return "cpu"
    if device != "cuda":
        raise DistributedError(f"train.device must be cpu or cuda, got {device!r}")
    if not torch.cuda.is_available():
        raise DistributedError("train.device=cuda but torch sees no CUDA GPU here; use --device cpu")
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def init_from_env(device: str = "cpu", timeout_s: float = 300.0) -> Context:
    """Join the process group described by torchrun's environment variables (one process: no group)."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s), rank=rank, world_size=world)
    _CONTEXT = Context(rank, world, local, dev)
    return _CONTEXT


def shutdown(clean: bool = True) -> None:
    """Leave the process group; ``clean``: after a barrier, so no rank exits while a peer still talks to it."""
    global _CONTEXT
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    _CONTEXT = Context()


def sync_gradients(model: nn.Module, world: int) -> None:
    """Average gradients over ranks: one all-reduce for all dense gradients, an all-gather per sparse one."""
    if world <= 1:
        return
    dense = [p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse]
    if dense:
        flat = torch.cat([p.grad.reshape(-1) for p in dense])
        dist.all_reduce(flat)
        flat /= world
        pos = 0
        for p in dense:
            n = p.grad.numel()
            p.grad.copy_(flat[pos : pos + n].view_as(p.grad))
            pos += n
    for p in model.parameters():
        if p.grad is not None and p.grad.is_sparse:
            p.grad = _gather_sparse(p.grad.coalesce(), world)


def _gather_sparse(grad: torch.Tensor, world: int) -> torch.Tensor:
    idx, val = grad.indices()[0], grad.values()
    sizes = [torch.zeros(1, dtype=torch.int64, device=idx.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([idx.numel()], device=idx.device))
    most = int(max(s.item() for s in sizes))
    pad_i = torch.zeros(most, dtype=idx.dtype, device=idx.device)
    pad_v = torch.zeros(most, val.shape[1], dtype=val.dtype, device=val.device)
    pad_i[: idx.numel()], pad_v[: idx.numel()] = idx, val
    all_i = [torch.empty_like(pad_i) for _ in range(world)]
    all_v = [torch.empty_like(pad_v) for _ in range(world)]
    dist.all_gather(all_i, pad_i)
    dist.all_gather(all_v, pad_v)
    keep_i = torch.cat([a[: int(s.item())] for a, s in zip(all_i, sizes, strict=True)])
    keep_v = torch.cat([a[: int(s.item())] for a, s in zip(all_v, sizes, strict=True)]) / world
    return torch.sparse_coo_tensor(keep_i.unsqueeze(0), keep_v, grad.shape, check_invariants=False)


def sync_buffers(model: nn.Module, world: int) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks."""
    if world <= 1:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def gather_rows(array: np.ndarray, world: int, device: str = "cpu") -> np.ndarray:
    """Concatenate every rank's (n_r, k) float32 array in rank order (all ranks get the result)."""
    if world <= 1:
        return array
    t = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=device)
    if t.dim() == 1:
        t = t.unsqueeze(1)
    n = torch.tensor([t.shape[0]], device=device)
    k = torch.tensor([t.shape[1] if t.shape[0] else 0], device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    widths = [torch.zeros_like(k) for _ in range(world)]
    dist.all_gather(sizes, n)
    dist.all_gather(widths, k)
    width = int(max(w.item() for w in widths))
    most = int(max(s.item() for s in sizes))
    pad = torch.zeros(most, width, device=device)
    if t.shape[0]:
        pad[: t.shape[0]] = t
    out = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(out, pad)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes, strict=True)]).cpu().numpy()


def broadcast_state(model: nn.Module, world: int) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if world <= 1:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------------------------
# Starting N local processes (mgoe train --nproc N)
# --------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOST_PEER_EXIT = 3
"""Exit code of a launched rank that stopped because another rank went away (the launcher names the cause)."""


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank died, hung or closed its connection."""
    dist_error = getattr(dist, "DistError", ())
    text = str(exc).lower()
    return isinstance(exc, dist_error) or any(
        s in text for s in ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "gloo")
    )


def launch(argv: list[str], nproc: int, extra_env: dict[str, str] | None = None, poll_s: float = 0.2) -> int:
    """Run ``python -m jobs.train *argv`` as ``nproc`` ranks on this machine; 0 if every rank succeeded.

    A rank that dies (killed, crashed) stops the others at once and the run fails with one line on stderr
    naming it; ranks blocked in a collective are not waited for. Rank 0's output passes through; the other
    ranks print nothing to stdout and their stderr is kept to report their error line.
    """
    import tempfile

    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc))
    env.update(LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0", MGOE_LAUNCHED="1", **(extra_env or {}))
    logs = [None] + [tempfile.TemporaryFile(mode="w+") for _ in range(1, nproc)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobs.train", *argv],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=None if r == 0 else subprocess.DEVNULL,
            stderr=logs[r],
        )
        for r in range(nproc)
    ]
    try:
        while all(p.poll() in (None, 0) for p in procs) and any(p.poll() is None for p in procs):
            time.sleep(poll_s)
        if any(p.poll() not in (None, 0) for p in procs):
            time.sleep(1.0)  # let the other ranks' fate settle: a killed rank is the cause, not its peers
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if all(c == 0 for c in codes):
        return 0
    killed = [r for r, c in enumerate(codes) if c is not None and c < 0 and c != -signal.SIGTERM]
    errored = [r for r, c in enumerate(codes) if c not in (0, LOST_PEER_EXIT) and (c is None or c > 0)]
    if killed:
        r = killed[0]
        line = f"training rank {r} of {nproc} was killed by {signal.Signals(-codes[r]).name}; stopped the other ranks"
    elif errored:
        r = errored[0]
        if r == 0:
            return codes[0]  # rank 0 printed its own one-line error
        logs[r].seek(0)
        lines = [x.strip() for x in logs[r].read().splitlines() if x.strip()]
        line = lines[-1].removeprefix("mgoe: error: ") if lines else f"training rank {r} exited with code {codes[r]}"
    else:
        line = f"training ranks lost contact with each other (exit codes {codes}); stopped the run"
    print(f"mgoe: error: {line}", file=sys.stderr)
    return 1
