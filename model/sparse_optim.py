"""Optimizers for embedding tables with sparse gradients, and the parameter groups of the trainer.

Dense Adam with weight decay touches every row of every id table at every step: a row seen once every
2,000 steps decays to ~1% of its value within 20k steps, and a step costs O(vocabulary). Here the id tables
(``nn.Embedding(sparse=True)``) get a sparse gradient holding only the rows the batch looked up, and

- :class:`SparseRowAdam` ("lazy" Adam): for the rows in the gradient only, L2 (coupled, as ``torch.optim.Adam``'s
  ``weight_decay``) and L1 (subgradient) are added to the gradient and the two moments and the row are
  updated with Adam's formula and the global step's bias correction. A row touched at every step follows
  dense Adam exactly; an untouched row and its moments do not change. State: two tables the size of the
  parameter (Adam needs per-coordinate moments); work per step O(rows touched x d).
- :class:`RowWiseAdagrad`: one accumulator per row (the mean of the squared gradient over the row's d
  coordinates, as FBGEMM / TorchRec's fused row-wise Adagrad): state O(rows), 1/d of Adam's.

Both skip row 0 (padding): its gradient is dropped, so it stays exactly zero. :func:`build_optimizers`
splits a model's parameters: id tables -> the sparse optimizer; other weights -> Adam with weight decay;
biases, Dice ``alpha``, cascade ``lambda`` and adjustment ``gamma`` (every parameter with at most one
non-group axis, see :func:`no_decay`) -> Adam without decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _rows(grad: torch.Tensor, skip_row: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique row indices, summed gradient rows) of a sparse (or dense) row gradient, ``skip_row`` dropped."""
    if grad.is_sparse:
        grad = grad.coalesce()
        idx, val = grad.indices()[0], grad.values()
    else:  # a dense gradient (e.g. a model that looked rows up with a dense op): its nonzero rows
        idx = torch.nonzero(grad.abs().sum(dim=1), as_tuple=True)[0]
        val = grad[idx]
    if skip_row is not None:
        keep = idx != skip_row
        if not bool(keep.all()):
            idx, val = idx[keep], val[keep]
    return idx, val


def _regularized(g: torch.Tensor, w: torch.Tensor, group: dict) -> torch.Tensor:
    """The touched rows' gradient plus L2 (``weight_decay * w``) and L1 (``l1 * sign(w)``) on those rows only."""
    if group["weight_decay"]:
        g = g.add(w, alpha=group["weight_decay"])
    if group["l1"]:
        g = g.add(torch.sign(w), alpha=group["l1"])
    return g


class SparseRowAdam(torch.optim.Optimizer):
    """Lazy Adam for 2-D tables with sparse row gradients (see the module docstring).

    ``weight_decay`` is L2 on the looked-up rows (``g += wd * w``), ``l1`` adds ``l1 * sign(w)``.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        skip_row: int | None = 0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "l1": l1}
        super().__init__(params, defaults)
        self.skip_row = skip_row

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                idx, g = _rows(p.grad, self.skip_row)
                if idx.numel() == 0:
                    continue
                w = p[idx]
                g = _regularized(g, w, group)
                m = state["exp_avg"][idx].mul_(b1).add_(g, alpha=1 - b1)
                v = state["exp_avg_sq"][idx].mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].index_copy_(0, idx, m)
                state["exp_avg_sq"].index_copy_(0, idx, v)
                step = state["step"]
                denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(group["eps"])
                p.index_copy_(0, idx, w.addcdiv_(m, denom, value=-group["lr"] / (1 - b1**step)))


class RowWiseAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad: ``s_r += mean_j g_rj^2``, ``w_r -= lr * g_r / (sqrt(s_r) + eps)`` for touched rows."""

    def __init__(
        self, params, lr: float = 0.05, eps: float = 1e-8, weight_decay: float = 0.0, l1: float = 0.0, skip_row=0
    ) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay, "l1": l1})
        self.skip_row = skip_row

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
                idx, g = _rows(p.grad, self.skip_row)
                if idx.numel() == 0:
                    continue
                w = p[idx]
                g = _regularized(g, w, group)
                s = state["sum"][idx].add_(g.square().mean(dim=1))
                state["sum"].index_copy_(0, idx, s)
                step = g / (s.sqrt().add_(group["eps"])).unsqueeze(1)
                p.index_copy_(0, idx, w.sub_(step, alpha=group["lr"]))


SPARSE_OPTIMIZERS = ("adam", "rowwise_adagrad")


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, Dice alpha, cascade lambda, adjustment gamma: vectors (per group at most), never decayed."""
    leaf = name.rsplit(".", 1)[-1]
    return param.dim() <= 1 or leaf in ("bias", "alpha", "lam", "gamma") or ".biases." in f".{name}"


def embedding_tables(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The sparse id tables of ``model``: weights of ``nn.Embedding(sparse=True)`` modules."""
    out = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding | nn.EmbeddingBag) and mod.sparse:
            out.append((f"{mod_name}.weight" if mod_name else "weight", mod.weight))
    return out


class Optimizers:
    """The trainer's optimizers as one: ``zero_grad`` / ``step`` over all, ``state_dict`` per part."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.parts:
            o.step()


def build_optimizers(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    l1: float = 0.0,
    sparse_optimizer: str = "adam",
    sparse_lr: float | None = None,
) -> Optimizers:
    """Sparse optimizer for the id tables + Adam for dense weights (decayed) and vectors (not decayed).

    ``l1`` for the tables is applied by the sparse optimizer on the looked-up rows; the caller adds the
    dense parameters' L1 to the loss (:func:`dense_parameters`).
    """
    if sparse_optimizer not in SPARSE_OPTIMIZERS:
        raise ValueError(f"sparse optimizer must be one of {', '.join(SPARSE_OPTIMIZERS)}, got {sparse_optimizer!r}")
    tables = embedding_tables(model)
    table_ids = {id(p) for _, p in tables}
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in table_ids:
            continue
        (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    parts: list[torch.optim.Optimizer] = [torch.optim.Adam([g for g in groups if g["params"]], lr=lr)]
    if tables:
        params = [p for _, p in tables]
        if sparse_optimizer == "adam":
            parts.append(SparseRowAdam(params, lr=sparse_lr or lr, weight_decay=weight_decay, l1=l1))
        else:
            parts.append(RowWiseAdagrad(params, lr=sparse_lr or lr, weight_decay=weight_decay, l1=l1))
    return Optimizers(parts)


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters other than the sparse id tables (what the loss's L1 term sums over)."""
    table_ids = {id(p) for _, p in embedding_tables(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in table_ids]
