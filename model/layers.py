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

    ``features`` = product of the non-batch axes; batch statistics and ``alpha`` are per feature. The batch
    axis is the first (``batch_dim=0``: input (B, ...)) or the last (``batch_dim=-1``: input (..., B), the
    feature-major layout of :class:`BatchedMLP`, seen by the native batch-norm kernel as (1, features, B)).
    Training normalizes with the batch's statistics (native ``batch_norm``: one fused kernel forward and
    backward, running statistics updated as ``nn.BatchNorm1d`` does); at inference the batch norm is folded
    into one scale / shift per feature (:meth:`scale_shift`) and the passes run in place. The running
    statistics live in ``self.bn`` (state-dict keys ``bn.running_mean`` / ``bn.running_var``).
    """

    def __init__(self, features: int, eps: float = 1e-8, batch_dim: int = 0) -> None:
        super().__init__()
        if batch_dim not in (0, -1):
            raise ValueError(f"batch_dim must be 0 or -1, got {batch_dim}")
        self.bn = nn.BatchNorm1d(features, affine=False, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(features))
        self.batch_dim = batch_dim

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Training batch norm of x (N, features, L) or (N, features) over N (and L); updates running stats."""
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        return F.batch_norm(x, bn.running_mean, bn.running_var, None, None, True, bn.momentum, bn.eps)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: per-feature (scale, shift) with ``BN(x) = x * scale + shift`` from the running stats."""
        scale = torch.rsqrt(self.bn.running_var + self.bn.eps)
        return scale, -self.bn.running_mean * scale

    @staticmethod
    def gate(x: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``x * (alpha + sigmoid(z) (1 - alpha))`` for normalized ``z`` (training, autograd-friendly)."""
        return x * torch.addcmul(alpha, torch.sigmoid(z), 1 - alpha)

    @staticmethod
    def apply_folded(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Inference: ``x * (alpha + p (1 - alpha))``, ``p = sigmoid(x * scale + shift)``, in one buffer (no
        fresh activation-sized allocations, each of which costs page faults as large as a pass)."""
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):  # eval mode under autograd
            return x * torch.addcmul(alpha, torch.sigmoid(torch.addcmul(shift, x, scale)), 1 - alpha)
        p = torch.addcmul(shift, x, scale).sigmoid_()
        return p.mul_(1 - alpha).add_(alpha).mul_(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_dim == 0:
            flat = x.reshape(x.shape[0], -1)
            shape = (1, -1)
        else:
            flat = x.reshape(-1, x.shape[-1])
            shape = (-1, 1)
        alpha = self.alpha.reshape(shape)
        if self.training:
            z = self.normalize(flat if self.batch_dim == 0 else flat.unsqueeze(0)).view_as(flat)
            return self.gate(flat, z, alpha).reshape(x.shape)
        scale, shift = self.scale_shift()
        return self.apply_folded(flat, scale.reshape(shape), shift.reshape(shape), alpha).reshape(x.shape)


def activation(kind: str, features: int, batch_dim: int = 0) -> nn.Module:
    """``dice`` (features = all non-batch features of the input it sees) or ``relu``."""
    if kind == "dice":
        return Dice(features, batch_dim=batch_dim)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}; allowed: dice, relu")


class _Relayout(torch.autograd.Function):
    """``x.permute(*dims).contiguous()`` whose gradient is made contiguous too: a permuted (strided) gradient
    would send the batched GEMMs of the backward pass to a per-matrix slow path (measured: 10-40x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        ctx.inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))
        return x.permute(*dims).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.permute(*ctx.inverse).contiguous(), None


def relayout(x: torch.Tensor, *dims: int) -> torch.Tensor:
    """A contiguous copy of ``x.permute(*dims)`` (its gradient contiguous as well; plain ops without autograd,
    which keeps exported / traced programs free of Python functions)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Relayout.apply(x, dims)
    return x.permute(*dims).contiguous()


def _check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")


class BatchedMLP(nn.Module):
    """``G`` independent MLPs applied at once (experts or towers): weights (G, in, out) per layer.

    Input (B, G, in) -> (B, G, sizes[-1]); or (B, in) broadcast to every MLP. Activation after every layer
    except, when ``last_linear``, the last one; in training, ``dropout`` (inverted, as ``nn.Dropout``) after
    every activation (a hidden unit of the whole network), never after a linear output.

    Internally every layer runs feature-major, ``(G, features, B)`` (:meth:`forward_fm`): one ``addmm`` for a
    shared 2-D input, one ``baddbmm`` over the groups otherwise, with the weights passed transposed (a BLAS
    flag, no copy) and no transposes of the activations between layers; batch statistics of Dice reduce over
    the contiguous last axis. :meth:`forward` only permutes the input and output views.
    """

    def __init__(
        self,
        groups: int,
        in_dim: int,
        sizes: list[int],
        act: str = "relu",
        last_linear: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_dropout(dropout)
        self.dropout = dropout
        self.last_linear = last_linear
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
            last = is_last and last_linear
            self.acts.append(nn.Identity() if last else activation(act, groups * dims[k + 1], batch_dim=-1))

    def forward_fm(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Feature-major: x (in, B) shared by all MLPs, or (G, in, B) -> (G, sizes[-1], B)."""
        last = len(self.weights) - 1
        for k, (w, b, act) in enumerate(zip(self.weights, self.biases, self.acts, strict=True)):
            if index is not None:
                w, b = w[index], b[index]
            g, i, o = w.shape
            if x.dim() == 2:  # one GEMM for all MLPs: (G * out, in) @ (in, B)
                x = torch.addmm(b.reshape(g * o, 1), w.transpose(1, 2).reshape(g * o, i), x).view(g, o, -1)
            else:  # one batched GEMM over the MLPs
                x = torch.baddbmm(b.unsqueeze(-1), w.transpose(1, 2), x)
            x = act(x)
            if self.dropout and not (k == last and self.last_linear):
                x = F.dropout(x, self.dropout, self.training)
        return x

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index`` (G',) int64: run only those MLPs (sparse routing; needs ReLU, whose units are independent)."""
        # one copy into and one out of the feature-major layout (not one per layer); consumers and the
        # backward GEMMs are slow on permuted views
        xt = x.t() if x.dim() == 2 else relayout(x, 1, 2, 0)
        return relayout(self.forward_fm(xt, index), 2, 0, 1)


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

    ``norm=True`` (``train.attention_norm``) replaces ``s`` by ``beta_g * cos(W_Q e_m, W_K e_v)`` with a learned
    temperature ``beta`` (G,) (:meth:`temperature`). ``scale_init=None``: ``beta = exp(log_scale)`` from
    ``sqrt(h)``, so the term has std ~1 at init whatever the embeddings' scale (the plain ``q.k/sqrt(h)`` is
    ~0.004 at Xavier scale against edge logits of 0.5-9). ``scale_init=b0``: ``beta`` itself is the parameter,
    from ``b0``; ``b0 = 0`` starts exactly as ``attention='off'`` (zero-init, as ReZero does for residual
    branches) and the term grows only as far as its gradient pays: ``dL/dbeta = sum cos * dL/ds`` is non-zero
    at 0 while ``W_Q``, ``W_K`` take gradient once ``beta`` has moved.

    forward(macro (G, K, d), target (B, d) or per-group (B, G, d), logits (B, K)) -> (B, G, o), ``G`` = number
    of macro tables.
    """

    def __init__(
        self,
        groups: int,
        dim: int,
        head: int,
        out: int,
        attention: str = "logit",
        norm: bool = False,
        scale_init: float | None = None,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_FORMS)}, got {attention!r}")
        self.attention = attention
        self.head = head
        self.norm = norm
        if norm and scale_init is None:  # learned temperature per group, init sqrt(h): std ~1 at init
            self.log_scale = nn.Parameter(torch.full((groups,), 0.5 * math.log(head)))
        elif norm:  # the temperature itself, from scale_init (0: starts as attention off)
            self.scale = nn.Parameter(torch.full((groups,), float(scale_init)))
        self.wq = nn.Parameter(torch.empty(groups, dim, head))
        self.wk = nn.Parameter(torch.empty(groups, dim, head))
        self.wv = nn.Parameter(torch.empty(groups, dim, out))
        for p in (self.wq, self.wk, self.wv):
            for g in range(groups):
                nn.init.xavier_uniform_(p[g])

    def temperature(self) -> torch.Tensor:
        """The learned temperature ``beta`` (G,) of the normalized attention (``norm=True`` only)."""
        return self.log_scale.exp() if hasattr(self, "log_scale") else self.scale

    def temperature_params(self) -> list[nn.Parameter]:
        """The parameter behind :meth:`temperature` (empty without ``norm``)."""
        return [p for name in ("log_scale", "scale") if isinstance(p := getattr(self, name, None), nn.Parameter)]

    def scores(self, macro: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product scores of the K macro neighbors: (B, G, K). ``norm``: ``beta_g * cos(W_Q e_m,
        W_K e_v)`` (L2-normalized queries and keys, learned temperature) instead of ``q.k/sqrt(h)``."""
        q = torch.einsum("gkd,gdh->gkh", macro, self.wq)
        k = torch.einsum("bd,gdh->bgh" if target.dim() == 2 else "bgd,gdh->bgh", target, self.wk)
        if self.norm:
            q = F.normalize(q, dim=-1) * self.temperature().view(-1, 1, 1)
            return torch.einsum("bgh,gkh->bgk", F.normalize(k, dim=-1), q)
        return torch.einsum("bgh,gkh->bgk", k, q / math.sqrt(self.head))  # scale the K-sized side once

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
    """Eq 12-13: ``x^t = sum_k g^t_k MGE^k`` with ``g^t = softmax(W^t h)`` over the T experts.

    ``full_dim=0`` (``train.gate_input=micro``): ``h = [e_u, e_i]`` (2d). ``full_dim=F``
    (``train.gate_input=full``, Eq 12's full input): ``h = [e_u, e_i, MGE^1, ..., MGE^T]`` (2d + T * F), so
    the mixture depends on the row's aggregated macro neighbors too (at Xavier scale ``|e| ~ 0.03`` and the
    ``[e_u, e_i]`` gate is a near-constant mixture).

    ``off=True`` (``train.gate_input=off``, the "w/o bottom gates" ablation): no gate, ``x^t = MGE^t``, each
    task reads its own macro graph expert only (no parameters).

    forward(mge (B, T, F), eu (B, d), ei (B, d)) -> (B, T, F); ``gates`` returns (B, T, T).
    """

    def __init__(self, tasks: int, dim: int, full_dim: int = 0, off: bool = False) -> None:
        super().__init__()
        self.full = full_dim > 0
        self.gate = None if off else nn.Linear(2 * dim + tasks * full_dim, tasks * tasks)
        self.tasks = tasks

    def gates(self, eu: torch.Tensor, ei: torch.Tensor, mge: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, T); ``mge`` (B, T, F) is read with ``full_dim > 0`` only; the identity when off."""
        if self.gate is None:
            return torch.eye(self.tasks, device=eu.device, dtype=eu.dtype).expand(eu.shape[0], -1, -1)
        h = [eu, ei, mge.reshape(eu.shape[0], -1)] if self.full else [eu, ei]
        logits = self.gate(torch.cat(h, dim=-1)).reshape(-1, self.tasks, self.tasks)
        return torch.softmax(logits, dim=-1)

    def forward(self, mge: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return mge
        return torch.einsum("btk,bkf->btf", self.gates(eu, ei, mge), mge)

    def forward_fm(self, mge: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
        """Feature-major: mge (T, F, B) -> (T, F, B); gates (T, T, B) from one GEMM, softmax over experts."""
        if self.gate is None:
            return mge
        t, b = self.tasks, eu.shape[0]
        h = [eu.t(), ei.t(), mge.reshape(-1, b)] if self.full else [eu.t(), ei.t()]
        logits = torch.addmm(self.gate.bias.unsqueeze(1), self.gate.weight, torch.cat(h, dim=0))
        g = torch.softmax(logits.view(t, t, b), dim=1)
        return (g.unsqueeze(2) * mge.unsqueeze(0)).sum(dim=1)


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
            # id 0 does not contribute; sparse tables get a sparse gradient
            out = F.embedding_bag(flat, table.weight, mode="sum", padding_idx=0, sparse=table.sparse)
            return out.reshape(b, t, -1)
        e = F.embedding(recent, table.weight, sparse=table.sparse)  # (B, T, L, d)
        mask = recent > 0
        q = torch.einsum("bd,tde->bte", target, self.w) / math.sqrt(e.shape[-1])
        s = torch.einsum("btld,btd->btl", e, q).masked_fill(~mask, float("-inf"))
        a = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0) * mask.sum(dim=-1, keepdim=True)
        return torch.einsum("btl,btld->btd", a, e)


class ExpertFusion(nn.Module):
    """Eq 19-20: PLE/CGC-style layer: ``S`` shared experts + ``P`` experts per task, per-task softmax gates.

    As in CGC, task t's gate and every expert it mixes see task t's own input c^t: the S shared experts run on
    all T task inputs (a ``(B * T, in)`` problem for each shared expert; one batch norm over those B * T rows),
    task t's P experts on c^t. All ``T * (S + P)`` expert evaluations run as one group-major batched MLP in the
    feature-major layout ``(T * (S + P), features, B)``: per layer one ``baddbmm`` whose weights stack, for
    every task, the shared experts' weights (the same tensors, broadcast over tasks) and that task's own;
    no transposes of the activations between layers. forward(c (B, T, in)) -> (B, T, out).

    ``shared_input='mean'`` (the default: it measured better, see ``train.shared_expert_input``): the shared
    experts run once on the task-averaged input (S + T * P expert evaluations instead of T * (S + P)); for
    PLE, whose tasks share one input, the two forms compute the same thing.

    Cost per row: ``T * (S + P)`` expert MLPs plus the gates (the shared experts' work grows with T).
    """

    def __init__(
        self,
        tasks: int,
        in_dim: int,
        sizes: list[int],
        shared: int,
        per_task: int,
        act: str,
        shared_input: str = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        if shared + per_task < 1:
            raise ValueError("ExpertFusion needs at least one shared or task expert")
        if shared_input not in ("task", "mean"):
            raise ValueError(f"shared_input must be 'task' or 'mean', got {shared_input!r}")
        self.tasks, self.shared, self.per_task, self.shared_input = tasks, shared, per_task, shared_input
        self.dropout = dropout  # after every expert layer's activation (in training)
        self.shared_experts = BatchedMLP(shared, in_dim, sizes, act, dropout=dropout) if shared else None
        self.task_experts = BatchedMLP(tasks * per_task, in_dim, sizes, act, dropout=dropout) if per_task else None
        self.gate = BatchedMLP(tasks, in_dim, [shared + per_task], "relu", last_linear=True)
        self.out_dim = sizes[-1]
        self.layers = len(sizes)

    def _layer(self, k: int) -> tuple[torch.Tensor, torch.Tensor, nn.Module | None, nn.Module | None]:
        """Stacked layer-k weights (T, S + P, in, out), biases (T, S + P, out) and the two activations.

        Without autograd the stacks are cached until a parameter changes (its version counter moves)."""
        if torch.is_grad_enabled():
            return self._stack(k)
        mlps = [m for m in (self.shared_experts, self.task_experts) if m is not None]
        params = [p for m in mlps for p in (m.weights[k], m.biases[k])]
        key = tuple((id(p), p._version) for p in params)
        cache = self.__dict__.setdefault("_stacked", {})
        if cache.get(k, (None,))[0] != key:
            cache[k] = (key, self._stack(k))
        return cache[k][1]

    def _stack(self, k: int) -> tuple[torch.Tensor, torch.Tensor, nn.Module | None, nn.Module | None]:
        t, s, p = self.tasks, self.shared, self.per_task
        ws, bs, acts = [], [], [None, None]
        if s:
            w, b = self.shared_experts.weights[k], self.shared_experts.biases[k]
            ws.append(w.unsqueeze(0).expand(t, *w.shape))
            bs.append(b.unsqueeze(0).expand(t, *b.shape))
            acts[0] = self.shared_experts.acts[k]
        if p:
            w, b = self.task_experts.weights[k], self.task_experts.biases[k]
            ws.append(w.reshape(t, p, *w.shape[1:]))
            bs.append(b.reshape(t, p, -1))
            acts[1] = self.task_experts.acts[k]
        w = torch.cat(ws, dim=1) if len(ws) > 1 else ws[0]
        b = torch.cat(bs, dim=1) if len(bs) > 1 else bs[0]
        return w, b, acts[0], acts[1]

    def _activate(self, y: torch.Tensor, shared_act: nn.Module | None, task_act: nn.Module | None) -> torch.Tensor:
        """y (T, S + P, o, B): the shared experts' activation over their B * T rows, the task experts' over B."""
        s = self.shared
        act = shared_act if shared_act is not None else task_act
        if not isinstance(act, Dice):
            return act(y)
        t, e, o, b = y.shape
        p = e - s
        alphas = []
        if shared_act is not None:
            alphas.append(shared_act.alpha.reshape(1, s, o).expand(t, s, o))
        if task_act is not None:
            alphas.append(task_act.alpha.reshape(t, p, o))
        alpha = _cat_tasks(alphas)
        if self.training:  # native batch norm: shared experts' channels over (T, B), task experts' over B
            zs = []
            if shared_act is not None:
                zs.append(shared_act.normalize(y[:, :s].reshape(t, s * o, b)).view(t, s, o, b))
            if task_act is not None:
                zs.append(task_act.normalize(y[:, s:].reshape(1, t * p * o, b)).view(t, p, o, b))
            z = torch.cat(zs, dim=1) if len(zs) > 1 else zs[0]
            return Dice.gate(y, z, alpha)
        scales, shifts = [], []
        if shared_act is not None:
            sc, sh = shared_act.scale_shift()
            scales.append(sc.reshape(1, s, o).expand(t, s, o))
            shifts.append(sh.reshape(1, s, o).expand(t, s, o))
        if task_act is not None:
            sc, sh = task_act.scale_shift()
            scales.append(sc.reshape(t, p, o))
            shifts.append(sh.reshape(t, p, o))
        scale, shift = (_cat_tasks(v) for v in (scales, shifts))
        return Dice.apply_folded(y, scale, shift, alpha)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return relayout(self.forward_fm(relayout(c, 1, 2, 0)), 2, 0, 1)

    def forward_fm(self, ct: torch.Tensor) -> torch.Tensor:
        """Feature-major: ct (T, in, B) -> (T, out, B) (what :meth:`forward` wraps in two relayouts)."""
        t, _, b = ct.shape
        e = self.shared + self.per_task
        g = torch.softmax(self.gate.forward_fm(ct), dim=1)  # (T, S + P, B)
        if self.shared_input == "mean":
            return self._mean_input(ct, g)
        x = ct
        for k in range(self.layers):
            w, bias, shared_act, task_act = self._layer(k)
            i, o = w.shape[-2:]
            if k == 0:  # every expert of task t reads c^t: one (S + P) * out x in GEMM per task
                y = torch.baddbmm(bias.reshape(t, e * o, 1), w.transpose(2, 3).reshape(t, e * o, i), x)
            else:
                y = torch.baddbmm(bias.reshape(t * e, o, 1), w.reshape(t * e, i, o).transpose(1, 2), x)
            x = self._activate(y.view(t, e, o, b), shared_act, task_act).view(t * e, o, b)
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return (x.view(t, e, -1, b) * g.unsqueeze(2)).sum(dim=1)  # (T, out, B)

    def _mean_input(self, ct: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        t, _, b = ct.shape
        s, p = self.shared, self.per_task
        mixed = None
        if p:
            x = ct.repeat_interleave(p, dim=0) if p > 1 else ct
            te = self.task_experts.forward_fm(x).view(t, p, -1, b)
            mixed = (g[:, s:].unsqueeze(2) * te).sum(dim=1) if p > 1 else g[:, s:] * te[:, 0]
        if s:
            sh = self.shared_experts.forward_fm(ct.mean(dim=0))  # (S, out, B), once for all tasks
            part = (g[:, :s].unsqueeze(2) * sh.unsqueeze(0)).sum(dim=1)
            mixed = part if mixed is None else mixed + part
        return mixed


def _cat_tasks(parts: list[torch.Tensor]) -> torch.Tensor:
    """Per-feature (T, S or P, o) pieces -> (T, S + P, o, 1), broadcastable over the batch axis."""
    return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).unsqueeze(-1)


class CascadeTowers(nn.Module):
    """Eq 21: towers in task order; tower t gets ``[h^t, lambda_t * o_{t-1}]`` (o_0 = 0), plus ``extra``
    side inputs when built with ``extra > 0`` (their weights start at zero).

    ``lambda`` is trainable (init ``lambda_init``) or, with ``cascade=False``, a zero buffer (w/o cascading:
    towers in parallel); ``dropout`` on the hidden units in training. forward(h (B, T, F)) -> logits o (B, T).
    """

    def __init__(
        self,
        tasks: int,
        in_dim: int,
        hidden: int,
        cascade: bool = True,
        lambda_init: float = 1.0,
        extra: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_dropout(dropout)
        self.tasks = tasks
        self.dropout = dropout
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
        return self.forward_fm(relayout(h, 1, 2, 0), extra)

    def forward_fm(self, ht: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Feature-major input ht (T, F, B) -> logits (B, T): layer 1 of all towers in one batched GEMM, then
        the cascade task by task (tower t needs o_{t-1}), each step one fused multiply-add and one GEMV."""
        pre = self.w1.forward_fm(ht)  # (T, hidden, B)
        if self.w_extra is not None and extra is not None:
            pre = pre + torch.einsum("bx,txh->thb", extra, self.w_extra)
        w2, b2 = self.out.weights[0], self.out.biases[0]  # (T, hidden, 1), (T, 1)
        logits = []
        prev = None
        for t in range(self.tasks):
            z = pre[t] if prev is None else torch.addmm(pre[t], (self.lam[t] * self.w_prev[t]).unsqueeze(1), prev)
            hidden = F.dropout(torch.relu(z), self.dropout, self.training) if self.dropout else torch.relu(z)
            o = torch.addmm(b2[t].unsqueeze(1), w2[t].t(), hidden)  # (1, B)
            logits.append(o)
            prev = o
        return torch.cat(logits, dim=0).t()


ADJUST_FORMS = ("log_macro", "log_count", "literal", "tower", "off")


def lookup_lift(lookup: torch.Tensor, k: int) -> torch.Tensor:
    """``log(1 + K * T)``: the lookup share as a log-scaled lift over the uniform share 1/K (0 when the user
    has no task-t item in that macro node, ``log 2`` at the uniform share). (B, T) -> (B, T)."""
    return torch.log1p(k * lookup.clamp(min=0.0))


def lookup_count(lookup: torch.Tensor, user_recent: torch.Tensor) -> torch.Tensor:
    """``log(1 + n)``, ``n = T * min(N, L)``: the user's task-t items in the target's macro node, counted on the
    evidence of the recent list (``N`` = the user's distinct task-t items, ``L`` = the list length; the
    list holds ``min(N, L)`` of them). Exact for ``N <= L``, the share scaled to L items above. Unlike the
    share, one item of a user with one task-t interaction weighs ``log 2``, not the full share.
    lookup (B, T), user_recent (B, T, L) -> (B, T)."""
    evidence = (user_recent > 0).sum(dim=-1).to(lookup.dtype)
    return torch.log1p(lookup.clamp(min=0.0) * evidence)


def lookup_over_tasks(lookup: torch.Tensor, user_recent: torch.Tensor) -> torch.Tensor:
    """SPEC 4.7's lookup normalized over tasks, from the table's (normalized over macros) one, trainer side:
    ``n^t = T^t * min(N^t, L)`` (the count of :func:`lookup_count`, exact for ``N^t <= L``), then
    ``n^t / max(1, sum_t' n^t')``: how often u's interactions with the target's macro node are task t.
    lookup (B, T), user_recent (B, T, L) -> (B, T)."""
    n = lookup.clamp(min=0.0) * (user_recent > 0).sum(dim=-1).to(lookup.dtype)
    return n / n.sum(dim=-1, keepdim=True).clamp(min=1.0)


class TaskAdjustment(nn.Module):
    """Eq 22: ``y_t = sigmoid(o_t + adjustment_t)``; forward(logits (B, T), lookup (B, T), item_macro (B,))
    returns the adjusted logits (B, T).

    - ``form='log_macro'``: ``gamma[t, c_I(i)] * log(1 + K_I T^t[u, c_I(i)])``: one gamma per task and
      item macro node (the paper's "weight of the user in relation to the target item's macro node"), on a
      log-scaled lift, so one interaction in a small macro node does not jump the logit by gamma;
    - ``form='log_count'``: ``gamma[t, c_I(i)] * log(1 + n^t[u, c_I(i)])`` with the count ``n`` of the user's
      task-t items in that macro node (:func:`lookup_count`): the share weighted by how much evidence it
      rests on (a user's propensity for task t shows, a one-item share does not jump to the full lift);
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
        elif self.form in ("log_macro", "log_count"):
            self.gamma = nn.Parameter(torch.full((k_item + 1, tasks), float(gamma_init)))  # row 0: no macro
        else:
            self.register_buffer("gamma", torch.zeros(tasks))

    def tower_inputs(self, lookup: torch.Tensor) -> torch.Tensor | None:
        """The side inputs for the towers (``form='tower'``: the T lifts, (B, T)), else None."""
        return lookup_lift(lookup, self.k_item) if self.form == "tower" else None

    def forward(
        self,
        logits: torch.Tensor,
        lookup: torch.Tensor,
        item_macro: torch.Tensor | None = None,
        user_recent: torch.Tensor | None = None,
    ):
        """``user_recent`` (B, T, L) is read by ``form='log_count'`` only."""
        if self.form == "literal":
            return logits + self.gamma * lookup
        if self.form in ("log_macro", "log_count"):
            macro = item_macro.clamp(min=0, max=self.k_item).long()
            lift = lookup_count(lookup, user_recent) if self.form == "log_count" else lookup_lift(lookup, self.k_item)
            return logits + self.gamma[macro] * lift
        return logits
