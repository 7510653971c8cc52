"""Building blocks of MGOE and the baselines (SPEC 6). Every block is a small ``nn.Module``.

Shape letters: ``B`` batch, ``T`` tasks, ``K`` macro nodes of one side, ``d`` embedding size, ``h`` attention
head size, ``o`` macro-expert output size, ``E`` experts, ``H`` hidden size, ``L`` recent neighbors.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def log_smoothed_weights(edges: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq 14 (MacGNN code, exact): ``w = softmax_m(log(eps_m + 1) / tau)`` over the last axis.

    ``edges`` (..., K) non-negative edge weights -> (..., K) weights summing to 1. Zero-count macro nodes
    still get weight ``exp(0) / Z``; a larger ``tau`` flattens the distribution.
    """
    return torch.softmax(torch.log1p(edges) / tau, dim=-1)


class Dice(nn.Module):
    """Dice activation (DIN; MacGNN's experts): ``p(x) * x + (1 - p(x)) * alpha * x``, ``p = sigmoid(BN(x))``.

    Input (B, ...) with ``features`` = product of the non-batch axes: batch statistics and ``alpha`` are per
    feature (every expert / unit has its own).
    """

    def __init__(self, features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(features, affine=False, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        p = torch.sigmoid(self.bn(x.reshape(shape[0], -1))).reshape(shape)
        alpha = self.alpha.reshape(shape[1:])
        # p x + (1 - p) alpha x = x (alpha + p (1 - alpha)): two fused ops over the activations
        return x * torch.addcmul(alpha, p, 1 - alpha)


def activation(kind: str, features: int) -> nn.Module:
    """``dice`` (features = all non-batch features of the input it sees) or ``relu``."""
    if kind == "dice":
        return Dice(features)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}; allowed: dice, relu")


class BatchedMLP(nn.Module):
    """``G`` independent MLPs applied at once (experts or towers): weights (G, in, out) per layer.

    Input (B, G, in) -> (B, G, sizes[-1]); or (B, in) broadcast to every MLP. Activation after every layer
    except, when ``last_linear``, the last one.
    """

    def __init__(self, groups: int, in_dim: int, sizes: list[int], act: str = "relu", last_linear: bool = False):
        super().__init__()
        dims = [in_dim, *sizes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.acts = nn.ModuleList()
        for k in range(len(sizes)):
            w = torch.empty(groups, dims[k], dims[k + 1])
            for g in range(groups):
                nn.init.xavier_uniform_(w[g])
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(groups, dims[k + 1])))
            is_last = k == len(sizes) - 1
            self.acts.append(nn.Identity() if (is_last and last_linear) else activation(act, groups * dims[k + 1]))

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index`` (G',) int64: run only those MLPs (sparse routing; needs ReLU, whose units are independent)."""
        for w, b, act in zip(self.weights, self.biases, self.acts, strict=True):
            if index is not None:
                w, b = w[index], b[index]
            g, i, o = w.shape
            if x.dim() == 2:  # one GEMM for all MLPs: (B, in) @ (in, G * out)
                x = torch.addmm(b.reshape(1, g * o), x, w.permute(1, 0, 2).reshape(i, g * o)).reshape(-1, g, o)
            else:  # one batched GEMM over the MLPs
                x = torch.baddbmm(b.unsqueeze(1), x.transpose(0, 1), w).transpose(0, 1)
            x = act(x)
        return x


class MacroEmbeddings(nn.Module):
    """Eq 11: task-specific macro embeddings. ``tables`` stacks M^t (T, K, d) for t = 1..T (Xavier init).

    ``shared=True`` keeps one table for every task (single-graph MacGNN baseline): (1, K, d).
    """

    def __init__(self, tasks: int, k: int, dim: int, shared: bool = False) -> None:
        super().__init__()
        w = torch.empty(1 if shared else tasks, k, dim)
        for t in range(w.shape[0]):
            nn.init.xavier_uniform_(w[t])
        self.tables = nn.Parameter(w)

    def forward(self) -> torch.Tensor:
        """-> (T or 1, K, d)."""
        return self.tables


class MacroGraphExpert(nn.Module):
    """Eq 15-17 for one (side, hop) channel, all tasks at once.

    ``z^t_v = sum_m w_vm * alpha^t_vm * W^t_V e^t_m`` with
    ``alpha^t_vm = softmax_m((W^t_Q e^t_m) . (W^t_K e_v) / sqrt(h))`` and ``w`` the log-smoothed weights.
    ``attention='off'`` sets alpha = 1 (what the MacGNN code computes, its softmax being over a size-1 axis).

    forward(macro (G, K, d), target (B, d), weights (B, K)) -> (B, G, o), ``G`` = number of macro tables.
    """

    def __init__(self, groups: int, dim: int, head: int, out: int, attention: str = "neighbors") -> None:
        super().__init__()
        if attention not in ("neighbors", "off"):
            raise ValueError(f"attention must be 'neighbors' or 'off', got {attention!r}")
        self.attention = attention
        self.head = head
        self.wq = nn.Parameter(torch.empty(groups, dim, head))
        self.wk = nn.Parameter(torch.empty(groups, dim, head))
        self.wv = nn.Parameter(torch.empty(groups, dim, out))
        for p in (self.wq, self.wk, self.wv):
            for g in range(groups):
                nn.init.xavier_uniform_(p[g])

    def alpha(self, macro: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attention over the K macro neighbors: (B, G, K), rows sum to 1."""
        q = torch.einsum("gkd,gdh->gkh", macro, self.wq)
        k = torch.einsum("bd,gdh->bgh", target, self.wk)
        scores = torch.einsum("bgh,gkh->bgk", k, q) / math.sqrt(self.head)
        return torch.softmax(scores, dim=-1)

    def forward(self, macro: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        v = torch.einsum("gkd,gdo->gko", macro, self.wv)
        if self.attention == "off":
            a = weights.unsqueeze(1).expand(-1, macro.shape[0], -1)
        else:
            a = self.alpha(macro, target) * weights.unsqueeze(1)
        return torch.einsum("bgk,gko->bgo", a, v)


class MacroGraphBottom(nn.Module):
    """Eq 12-13: ``x^t = sum_k g^t_k MGE^k`` with ``g^t = softmax(W^t [e_u, e_i])`` over the T experts.

    forward(mge (B, T, F), eu (B, d), ei (B, d)) -> (B, T, F); ``gates`` returns (B, T, T).
    """

    def __init__(self, tasks: int, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, tasks * tasks)
        self.tasks = tasks

    def gates(self, eu: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        logits = self.gate(torch.cat([eu, ei], dim=-1)).reshape(-1, self.tasks, self.tasks)
        return torch.softmax(logits, dim=-1)

    def forward(self, mge: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btk,bkf->btf", self.gates(eu, ei), mge)


class MicroNeighbors(nn.Module):
    """Eq 18: per task, the masked sum of the embeddings of the recent neighbors (id 0 = padding, masked).

    forward(recent (B, T, L) int64) -> (B, T, d), using the shared micro embedding table ``table``.
    Implemented as an ``EmbeddingBag(sum)`` lookup that skips ``padding_idx=0``: O(B * T * L * d).
    """

    def forward(self, table: nn.Embedding, recent: torch.Tensor) -> torch.Tensor:
        b, t, n = recent.shape
        flat = recent.reshape(b * t, n)
        out = F.embedding_bag(flat, table.weight, mode="sum", padding_idx=0)  # id 0 does not contribute
        return out.reshape(b, t, -1)


class ExpertFusion(nn.Module):
    """Eq 19-20: PLE/CGC-style layer: ``S`` shared experts + ``P`` experts per task, per-task softmax gates.

    Task t's gate sees c^t and mixes the S shared experts (fed the task-averaged input) and its own P experts
    (fed c^t). forward(c (B, T, in)) -> (B, T, out).
    """

    def __init__(self, tasks: int, in_dim: int, sizes: list[int], shared: int, per_task: int, act: str) -> None:
        super().__init__()
        self.tasks, self.shared, self.per_task = tasks, shared, per_task
        self.shared_experts = BatchedMLP(shared, in_dim, sizes, act) if shared else None
        self.task_experts = BatchedMLP(tasks * per_task, in_dim, sizes, act) if per_task else None
        self.gate = BatchedMLP(tasks, in_dim, [shared + per_task], "relu", last_linear=True)
        self.out_dim = sizes[-1]

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        b = c.shape[0]
        parts = []
        if self.shared_experts is not None:
            sh = self.shared_experts(c.mean(dim=1))  # (B, S, out)
            parts.append(sh.unsqueeze(1).expand(b, self.tasks, self.shared, self.out_dim))
        if self.task_experts is not None:
            x = c.repeat_interleave(self.per_task, dim=1) if self.per_task > 1 else c
            parts.append(self.task_experts(x).reshape(b, self.tasks, self.per_task, self.out_dim))
        experts = torch.cat(parts, dim=2)  # (B, T, S+P, out)
        g = torch.softmax(self.gate(c), dim=-1)  # (B, T, S+P)
        return torch.einsum("bte,bteo->bto", g, experts)


class CascadeTowers(nn.Module):
    """Eq 21: towers in task order; tower t gets ``[h^t, lambda_t * o_{t-1}]`` (o_0 = 0).

    ``lambda`` is trainable (init ``lambda_init``) or, with ``cascade=False``, a zero buffer (w/o cascading:
    towers in parallel). forward(h (B, T, F)) -> logits o (B, T).
    """

    def __init__(self, tasks: int, in_dim: int, hidden: int, cascade: bool = True, lambda_init: float = 1.0):
        super().__init__()
        self.tasks = tasks
        self.w1 = BatchedMLP(tasks, in_dim, [hidden], "relu", last_linear=True)  # h^t part of layer 1
        self.w_prev = nn.Parameter(torch.empty(tasks, hidden))  # o_{t-1} part of layer 1
        nn.init.xavier_uniform_(self.w_prev)
        self.out = BatchedMLP(tasks, hidden, [1], "relu", last_linear=True)
        if cascade:
            self.lam = nn.Parameter(torch.full((tasks,), float(lambda_init)))
        else:
            self.register_buffer("lam", torch.zeros(tasks))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pre = self.w1(h)  # (B, T, hidden), computed for all towers at once
        w2, b2 = self.out.weights[0], self.out.biases[0]  # (T, hidden, 1), (T, 1)
        prev = torch.zeros_like(pre[:, 0, :1])
        logits = []
        for t in range(self.tasks):
            z = torch.relu(pre[:, t] + self.lam[t] * prev * self.w_prev[t])
            o = z @ w2[t] + b2[t]  # (B, 1)
            logits.append(o)
            prev = o
        return torch.cat(logits, dim=1)


class TaskAdjustment(nn.Module):
    """Eq 22: ``y_t = sigmoid(o_t + gamma_t * T^t[u, c_I(i)])``; returns the adjusted logit (B, T).

    ``gamma`` trainable (init ``gamma_init``) or, with ``enabled=False``, a zero buffer (w/o adjustment).
    """

    def __init__(self, tasks: int, enabled: bool = True, gamma_init: float = 1.0) -> None:
        super().__init__()
        if enabled:
            self.gamma = nn.Parameter(torch.full((tasks,), float(gamma_init)))
        else:
            self.register_buffer("gamma", torch.zeros(tasks))

    def forward(self, logits: torch.Tensor, lookup: torch.Tensor) -> torch.Tensor:
        return logits + self.gamma * lookup
