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

    def own(self, macro_id: torch.Tensor) -> torch.Tensor:
        """Eq 11, the node's own macro embeddings ``M^t[c(v)]``: macro ids (B,) (1..K; 0 = no macro node, a
        cold node) -> (B, T or 1, d), zeros for id 0."""
        g, k, d = self.tables.shape
        idx = (macro_id.clamp(min=1, max=k) - 1).long()
        out = self.tables.permute(1, 0, 2)[idx]  # (B, G, d)
        return out * (macro_id > 0).to(out.dtype).reshape(-1, 1, 1)


ATTENTION_FORMS = ("logit", "neighbors", "off")


class MacroGraphExpert(nn.Module):
    """Eq 15-17 for one (side, hop) channel, all tasks at once: ``z^t_v = sum_m a^t_vm W^t_V e^t_m``.

    With ``l_vm = log(eps_vm + 1) / tau`` (the smoothed edge logits of Eq 14) and
    ``s^t_vm = (W^t_Q e^t_m) . (W^t_K e_v) / sqrt(h)``:

    - ``attention='logit'``: one softmax in logit space, ``a = softmax_m(l + s)``: rows sum to 1, edge
      weights and attention compose multiplicatively before the normalisation;
    - ``attention='neighbors'``: the literal Eq 15-17 product ``a = softmax(l) * softmax(s)``, whose rows
      sum to about 1/K at init (the channel is muted K-fold);
    - ``attention='off'``: ``a = softmax(l)`` (what the MacGNN code computes, its softmax being over a size-1
      axis).

    forward(macro (G, K, d), target (B, d), logits (B, K)) -> (B, G, o), ``G`` = number of macro tables.
    """

    def __init__(self, groups: int, dim: int, head: int, out: int, attention: str = "logit") -> None:
        super().__init__()
        if attention not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_FORMS)}, got {attention!r}")
        self.attention = attention
        self.head = head
        self.wq = nn.Parameter(torch.empty(groups, dim, head))
        self.wk = nn.Parameter(torch.empty(groups, dim, head))
        self.wv = nn.Parameter(torch.empty(groups, dim, out))
        for p in (self.wq, self.wk, self.wv):
            for g in range(groups):
                nn.init.xavier_uniform_(p[g])

    def scores(self, macro: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product scores of the K macro neighbors: (B, G, K)."""
        q = torch.einsum("gkd,gdh->gkh", macro, self.wq) / math.sqrt(self.head)  # scale the K-sized side once
        k = torch.einsum("bd,gdh->bgh", target, self.wk)
        return torch.einsum("bgh,gkh->bgk", k, q)

    def alpha(self, macro: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attention over the K macro neighbors: (B, G, K), rows sum to 1."""
        return torch.softmax(self.scores(macro, target), dim=-1)

    def mixing(self, macro: torch.Tensor, target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The weights ``a`` (B, G, K) that multiply the value vectors."""
        if self.attention == "off":
            return torch.softmax(logits, dim=-1).unsqueeze(1).expand(-1, macro.shape[0], -1)
        if self.attention == "neighbors":
            return self.alpha(macro, target) * torch.softmax(logits, dim=-1).unsqueeze(1)
        return torch.softmax(self.scores(macro, target) + logits.unsqueeze(1), dim=-1)

    def forward(self, macro: torch.Tensor, target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        v = torch.einsum("gkd,gdo->gko", macro, self.wv)
        return torch.einsum("bgk,gko->bgo", self.mixing(macro, target, logits), v)


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
    """Eq 18: per task, ``r^t_v = sum_l a_l e_l`` over the recent neighbors (id 0 = padding, masked).

    ``attention=False``: ``a_l = 1``, the masked sum, as an ``EmbeddingBag(sum)`` lookup that skips
    ``padding_idx=0``. ``attention=True``: ``a = n * softmax_l(e_l . W_t e_target / sqrt(d))`` over the n
    real neighbors, with one ``W_t`` (d, d) per task initialised to zero, so training starts from the plain
    sum and learns to weight neighbors similar to the target. forward(table, recent (B, T, L) int64,
    target (B, d) or None) -> (B, T, d). O(B * T * L * d).
    """

    def __init__(self, tasks: int = 0, dim: int = 0, attention: bool = False) -> None:
        super().__init__()
        self.attention = attention
        if attention:
            self.w = nn.Parameter(torch.zeros(tasks, dim, dim))

    def forward(self, table: nn.Embedding, recent: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        b, t, n = recent.shape
        if not self.attention:
            flat = recent.reshape(b * t, n)
            out = F.embedding_bag(flat, table.weight, mode="sum", padding_idx=0)  # id 0 does not contribute
            return out.reshape(b, t, -1)
        e = F.embedding(recent, table.weight)  # (B, T, L, d)
        mask = recent > 0
        q = torch.einsum("bd,tde->bte", target, self.w) / math.sqrt(e.shape[-1])
        s = torch.einsum("btld,btd->btl", e, q).masked_fill(~mask, float("-inf"))
        a = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0) * mask.sum(dim=-1, keepdim=True)
        return torch.einsum("btl,btld->btd", a, e)


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
        g = torch.softmax(self.gate(c), dim=-1)  # (B, T, S+P)
        out = torch.zeros(b, self.tasks, self.out_dim, dtype=c.dtype, device=c.device)
        # mix without materializing the (B, T, S+P, out) stack of expert outputs
        if self.shared_experts is not None:
            sh = self.shared_experts(c.mean(dim=1))  # (B, S, out), run once for all tasks
            out = out + torch.bmm(g[:, :, : self.shared], sh)
        if self.task_experts is not None:
            x = c.repeat_interleave(self.per_task, dim=1) if self.per_task > 1 else c
            te = self.task_experts(x).reshape(b, self.tasks, self.per_task, self.out_dim)
            out = out + (g[:, :, self.shared :].unsqueeze(-1) * te).sum(dim=2)
        return out


class CascadeTowers(nn.Module):
    """Eq 21: towers in task order; tower t gets ``[h^t, lambda_t * o_{t-1}]`` (o_0 = 0), plus ``extra``
    side inputs when built with ``extra > 0`` (their weights start at zero).

    ``lambda`` is trainable (init ``lambda_init``) or, with ``cascade=False``, a zero buffer (w/o cascading:
    towers in parallel). forward(h (B, T, F)) -> logits o (B, T).
    """

    def __init__(
        self, tasks: int, in_dim: int, hidden: int, cascade: bool = True, lambda_init: float = 1.0, extra: int = 0
    ):
        super().__init__()
        self.tasks = tasks
        self.w1 = BatchedMLP(tasks, in_dim, [hidden], "relu", last_linear=True)  # h^t part of layer 1
        self.w_extra = nn.Parameter(torch.zeros(tasks, extra, hidden)) if extra else None  # side inputs
        self.w_prev = nn.Parameter(torch.empty(tasks, hidden))  # o_{t-1} part of layer 1
        nn.init.xavier_uniform_(self.w_prev)
        self.out = BatchedMLP(tasks, hidden, [1], "relu", last_linear=True)
        if cascade:
            self.lam = nn.Parameter(torch.full((tasks,), float(lambda_init)))
        else:
            self.register_buffer("lam", torch.zeros(tasks))

    def forward(self, h: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """h (B, T, F), ``extra`` (B, X) side inputs every tower sees (e.g. the lookup) -> logits (B, T)."""
        pre = self.w1(h)  # (B, T, hidden), computed for all towers at once
        if self.w_extra is not None and extra is not None:
            pre = pre + torch.einsum("bx,txh->bth", extra, self.w_extra)
        w2, b2 = self.out.weights[0], self.out.biases[0]  # (T, hidden, 1), (T, 1)
        prev = torch.zeros_like(pre[:, 0, :1])
        logits = []
        for t in range(self.tasks):
            z = torch.relu(pre[:, t] + self.lam[t] * prev * self.w_prev[t])
            o = z @ w2[t] + b2[t]  # (B, 1)
            logits.append(o)
            prev = o
        return torch.cat(logits, dim=1)


ADJUST_FORMS = ("log_macro", "literal", "tower", "off")


def lookup_lift(lookup: torch.Tensor, k: int) -> torch.Tensor:
    """``log(1 + K * T)``: the lookup share as a log-scaled lift over the uniform share 1/K (0 when the user
    has no task-t item in that macro node, ``log 2`` at the uniform share). (B, T) -> (B, T)."""
    return torch.log1p(k * lookup.clamp(min=0.0))


class TaskAdjustment(nn.Module):
    """Eq 22: ``y_t = sigmoid(o_t + adjustment_t)``; forward(logits (B, T), lookup (B, T), item_macro (B,))
    returns the adjusted logits (B, T).

    - ``form='log_macro'``: ``gamma[t, c_I(i)] * log(1 + K_I T^t[u, c_I(i)])``: one gamma per task and
      item macro node (the paper's "weight of the user in relation to the target item's macro node"), on a
      log-scaled lift, so one interaction in a small macro node does not jump the logit by gamma;
    - ``form='literal'``: ``gamma_t * T^t[u, c_I(i)]`` (the raw share; a user with one buy gets 1.0);
    - ``form='tower'`` or ``'off'``: nothing is added here (``tower`` feeds the lifts to the towers instead;
      ``off`` is "w/o adjustment", gamma = 0, the lookup is never read).
    """

    def __init__(
        self, tasks: int, enabled: bool = True, gamma_init: float = 1.0, form: str = "log_macro", k_item: int = 1
    ) -> None:
        super().__init__()
        if form not in ADJUST_FORMS:
            raise ValueError(f"adjust form must be one of {', '.join(ADJUST_FORMS)}, got {form!r}")
        self.form = form if enabled else "off"
        self.k_item = k_item
        if self.form == "literal":
            self.gamma = nn.Parameter(torch.full((tasks,), float(gamma_init)))
        elif self.form == "log_macro":
            self.gamma = nn.Parameter(torch.full((k_item + 1, tasks), float(gamma_init)))  # row 0: no macro
        else:
            self.register_buffer("gamma", torch.zeros(tasks))

    def tower_inputs(self, lookup: torch.Tensor) -> torch.Tensor | None:
        """The side inputs for the towers (``form='tower'``: the T lifts, (B, T)), else None."""
        return lookup_lift(lookup, self.k_item) if self.form == "tower" else None

    def forward(self, logits: torch.Tensor, lookup: torch.Tensor, item_macro: torch.Tensor | None = None):
        if self.form == "literal":
            return logits + self.gamma * lookup
        if self.form == "log_macro":
            macro = item_macro.clamp(min=0, max=self.k_item).long()
            return logits + self.gamma[macro] * lookup_lift(lookup, self.k_item)
        return logits
