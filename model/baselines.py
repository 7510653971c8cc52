"""Baselines trained by the same harness on the same tables (SPEC 6), and :func:`build_model`.

Every model maps a batch (see :mod:`model.data`) to per-task logits (B, T); the harness applies the same
loss, optimizer, early stopping and metrics to all of them.

- ``mmoe``: MMoE (Ma et al. 2018): E shared experts on [e_u, e_i], one softmax gate and one tower per task.
- ``mmoe_full``: MMoE on MGOE's full inputs (macro graph encoder over the macro edges with one macro table,
  own macro embeddings, per-task recent neighbors, e_u, e_i): MGOE's inputs without its architecture.
- ``ple``: PLE (Tang et al. 2020) with one extraction level (CGC): shared + task-specific experts.
- ``esmm``: ESMM (Ma et al. 2018): CTR and CVR towers; task 1 is trained on pCTCVR = pCTR * pCVR over the
  whole sample space; tasks after the second get their own tower.
- ``macgnn``: single-graph MacGNN-style model: one set of macro embeddings shared by all tasks (no
  task-specific macro graph), neighbor sums over all tasks, one MLP and one tower per task. It reads its own
  table (:data:`TABLE_VARIANTS`): binary edges of one graph of all behaviors (``scores.binary=true``) and
  unweighted k-means (``weights.enabled=false``). ``train.macgnn_own_macro`` adds the nodes' own macro
  embeddings (Eq 11) to its input.
- ``grec``: GRec-style task-routed sparse MoE: per row and task, noisy top-k routing over the experts with a
  load-balancing loss (:meth:`GRecMoE.auxiliary_loss`, added to the training loss); each expert picked in a
  batch runs once. Experts use ReLU (units must be independent to run a subset).
- ``mgoe``, ``mgoe_no_adjust`` (gamma = 0), ``mgoe_no_cascade`` (lambda = 0): :class:`model.mgoe.MGOE`.

Baselines see the micro features [e_u, e_i] only (as in the paper's comparison); MacGNN and MGOE add the graph.

The model names and descriptions are the registry :data:`mgoe_spark.config.models.MODELS` (torch-free, so config
validation and the CLI read it cheaply); :data:`BUILDERS` maps each name to what builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from mgoe_spark.config.models import MODELS
from model.data import TableMeta
from model.layers import BatchedMLP, ExpertFusion, MicroNeighbors
from model.mgoe import MGOE, MacroGraphEncoder, MicroEmbeddings, ModelOptions


def parallel_towers(tasks: int, in_dim: int, hidden: int, dropout: float = 0.0) -> BatchedMLP:
    """One MLP tower per task: (B, T, in) -> (B, T, 1); ``dropout`` on its hidden units in training."""
    return BatchedMLP(tasks, in_dim, [hidden, 1], "relu", last_linear=True, dropout=dropout)


class MMoE(nn.Module):
    """forward(batch) -> logits (B, T). Experts (E, 2d -> sizes), gates softmax(W_t [e_u, e_i]) over E."""

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        n = opts.mmoe_experts or (opts.shared_experts + T * opts.task_experts)
        self.micro = MicroEmbeddings(meta, d)
        self.experts = BatchedMLP(n, 2 * d, opts.expert_sizes, opts.activation, dropout=opts.dropout)
        self.gates = nn.Linear(2 * d, T * n)
        self.towers = parallel_towers(T, opts.expert_sizes[-1], opts.tower_hidden, opts.dropout)
        self.tasks, self.n = T, n

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        x = torch.cat([eu, ei], dim=-1)
        e = self.experts(x)  # (B, E, out)
        g = torch.softmax(self.gates(x).reshape(-1, self.tasks, self.n), dim=-1)
        return self.towers(torch.einsum("bte,beo->bto", g, e)).squeeze(-1)


class PLE(nn.Module):
    """forward(batch) -> logits (B, T). One CGC level on [e_u, e_i] (shared + task experts), then towers."""

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        self.micro = MicroEmbeddings(meta, d)
        self.cgc = ExpertFusion(
            T,
            2 * d,
            opts.expert_sizes,
            opts.shared_experts,
            opts.task_experts,
            opts.activation,
            dropout=opts.dropout,
        )
        self.towers = parallel_towers(T, opts.expert_sizes[-1], opts.tower_hidden, opts.dropout)
        self.tasks = T

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        x = torch.cat([eu, ei], dim=-1).unsqueeze(1).expand(-1, self.tasks, -1)
        return self.towers(self.cgc(x)).squeeze(-1)


def product_logit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(a) * sigmoid(b)), computed in log space (stable for large |a|, |b|)."""
    log_p = F.logsigmoid(a) + F.logsigmoid(b)
    log_q = torch.log(torch.clamp(-torch.expm1(log_p), min=1e-12))
    return log_p - log_q


class ESMM(nn.Module):
    """forward(batch) -> logits (B, T): [CTR, logit(pCTR * pCVR), independent towers for tasks >= 2]."""

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        self.micro = MicroEmbeddings(meta, d)
        sizes = [*opts.expert_sizes, opts.tower_hidden, 1]
        self.towers = BatchedMLP(T, 2 * d, sizes, "relu", last_linear=True, dropout=opts.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        raw = self.towers(torch.cat([eu, ei], dim=-1)).squeeze(-1)  # (B, T)
        if raw.shape[1] < 2:
            return raw
        ctcvr = product_logit(raw[:, 0], raw[:, 1]).unsqueeze(1)
        return torch.cat([raw[:, :1], ctcvr, raw[:, 2:]], dim=1)


class MacGNNStyle(nn.Module):
    """forward(batch) -> logits (B, T). One macro graph for all tasks + neighbor sums over all tasks."""

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        self.micro = MicroEmbeddings(meta, d)
        self.graph = MacroGraphEncoder(meta, opts, shared=True)
        self.neighbors = MicroNeighbors()
        self.own_macro = opts.macgnn_own_macro
        in_dim = self.graph.out_dim + 4 * d + (2 * d if self.own_macro else 0)
        self.mlp = BatchedMLP(1, in_dim, opts.expert_sizes, opts.activation, dropout=opts.dropout)
        self.towers = parallel_towers(T, opts.expert_sizes[-1], opts.tower_hidden, opts.dropout)
        self.tasks = T

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MLP input (B, F + 4d [+ 2d]): [MGE, r_u, r_i, e_u, e_i (, M_U[c(u)], M_I[c(i)] with macgnn_own_macro)]."""
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        keys = self.graph.keys(eu, ei, batch["user_macro"], batch["item_macro"])
        mge = self.graph(batch["user_edges"], batch["item_edges"], *keys)[:, 0]  # (B, F)
        ru = self.neighbors(self.micro.item, batch["user_recent"]).sum(dim=1)
        ri = self.neighbors(self.micro.user, batch["item_recent"]).sum(dim=1)
        parts = [mge, ru, ri, eu, ei]
        if self.own_macro:  # Eq 11 from the one shared table: (B, 1, 2d) -> (B, 2d)
            parts.append(self.graph.own(batch["user_macro"], batch["item_macro"])[:, 0])
        h = self.mlp(torch.cat(parts, dim=-1))  # (B, 1, out)
        return self.towers(h.expand(-1, self.tasks, -1)).squeeze(-1)


class MMoEFull(nn.Module):
    """forward(batch) -> logits (B, T). MMoE's architecture on MGOE's inputs: separates inputs from architecture.

    One input x (B, F + 2d + 2Td + 2d) for every expert and gate: the macro graph encoder over the same macro
    edges (one macro table, as the shared input of MMoE: ``G = 1``, F = 2 * hops * o), the nodes' own macro
    embeddings (Eq 11), the per-task recent-neighbor sums r^t_u, r^t_i for all T tasks (Eq 18) and e_u, e_i;
    then E shared experts, one softmax gate and one tower per task (as :class:`MMoE`). No task-specific macro
    tables, bottom gates, CGC, cascade or adjustment: those are MGOE's architecture.
    """

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        n = opts.mmoe_experts or (opts.shared_experts + T * opts.task_experts)
        self.micro = MicroEmbeddings(meta, d)
        self.graph = MacroGraphEncoder(meta, opts, shared=True)
        in_dim = self.graph.out_dim + 2 * d + 2 * T * d + 2 * d
        self.experts = BatchedMLP(n, in_dim, opts.expert_sizes, opts.activation, dropout=opts.dropout)
        self.gates = nn.Linear(in_dim, T * n)
        self.towers = parallel_towers(T, opts.expert_sizes[-1], opts.tower_hidden, opts.dropout)
        self.tasks, self.n = T, n

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """x (B, F + 2d + 2Td + 2d): [MGE, M_U[c(u)], M_I[c(i)], r_u (T x d), r_i (T x d), e_u, e_i]."""
        eu, ei, ru, ri = self.micro.lookup(
            batch["user_id"], batch["item_id"], batch["user_recent"], batch["item_recent"]
        )
        b = eu.shape[0]
        keys = self.graph.keys(eu, ei, batch["user_macro"], batch["item_macro"])
        mge = self.graph(batch["user_edges"], batch["item_edges"], *keys)[:, 0]  # (B, F)
        own = self.graph.own(batch["user_macro"], batch["item_macro"])[:, 0]  # (B, 2d)
        return torch.cat([mge, own, ru.reshape(b, -1), ri.reshape(b, -1), eu, ei], dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.features(batch)
        e = self.experts(x)  # (B, E, out)
        g = torch.softmax(self.gates(x).reshape(-1, self.tasks, self.n), dim=-1)
        return self.towers(torch.einsum("bte,beo->bto", g, e)).squeeze(-1)


class GRecMoE(nn.Module):
    """forward(batch) -> logits (B, T). Task-routed sparse MoE with noisy top-k routing (Shazeer et al. 2017).

    Per row and task: routing logits ``r = W_t [e_u, e_i] + b_t`` (+ ``softplus(W_n x) * noise * N(0, 1)`` in
    training), the top-k experts by ``r``, mixed by the softmax of their ``r``. Each expert picked by any
    (row, task) of the batch runs once on the batch (never once per task); in eval mode every expert runs once
    (static shapes for export; the gates are zero off the route, so the output is the same). ``auxiliary_loss()`` is the
    load-balancing loss of the last forward, ``E * sum_e f_e P_e`` (f = share of routes to e, P = mean
    routing probability), times ``grec_balance``: it keeps every expert in use and gives the router a
    gradient for experts it does not pick.
    """

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        if not 1 <= opts.grec_top_k <= opts.grec_experts:
            raise ValueError(f"grec_top_k must be in 1..grec_experts ({opts.grec_experts}), got {opts.grec_top_k}")
        self.micro = MicroEmbeddings(meta, d)
        self.experts = BatchedMLP(opts.grec_experts, 2 * d, opts.expert_sizes, "relu", dropout=opts.dropout)
        self.router = nn.Parameter(torch.randn(T, opts.grec_experts) * 0.1)  # task routing scores
        self.gate = nn.Linear(2 * d, T * opts.grec_experts)
        self.noise = nn.Linear(2 * d, T * opts.grec_experts)
        self.towers = parallel_towers(T, opts.expert_sizes[-1], opts.tower_hidden, opts.dropout)
        self.tasks, self.n, self.k = T, opts.grec_experts, opts.grec_top_k
        self.noise_scale, self.balance = opts.grec_noise, opts.grec_balance
        self._aux = torch.zeros(())

    def route_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Clean routing logits (B, T, E)."""
        return self.gate(x).reshape(-1, self.tasks, self.n) + self.router

    def routes(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, k) experts each row and task routes to, without noise."""
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        return torch.topk(self.route_logits(torch.cat([eu, ei], dim=-1)), self.k, dim=-1).indices

    def auxiliary_loss(self) -> torch.Tensor:
        return self._aux

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        eu, ei = self.micro(batch["user_id"], batch["item_id"])
        x = torch.cat([eu, ei], dim=-1)
        clean = self.route_logits(x)
        r = clean
        if self.training and self.noise_scale > 0:
            std = F.softplus(self.noise(x)).reshape_as(clean) * self.noise_scale
            r = clean + torch.randn_like(clean) * std
        top, sel = torch.topk(r, self.k, dim=-1)  # (B, T, k)
        g = torch.zeros_like(r).scatter(-1, sel, torch.softmax(top, dim=-1))  # (B, T, E), k non-zeros per row
        if self.training:  # each selected expert runs once, on the whole batch
            used = torch.unique(sel)
            mixed = torch.einsum("btu,buo->bto", g[:, :, used], self.experts(x, used))
        else:  # static shapes for torch.export: every expert once (g is zero off the route: the same output)
            mixed = torch.einsum("bte,beo->bto", g, self.experts(x))
        if self.training:
            share = (
                torch.zeros(self.n, dtype=r.dtype, device=r.device).index_add_(
                    0, sel.reshape(-1), torch.ones(sel.numel(), dtype=r.dtype, device=r.device)
                )
                / sel.numel()
            )
            prob = torch.softmax(clean, dim=-1).reshape(-1, self.n).mean(dim=0)
            self._aux = self.balance * self.n * (share * prob).sum()
        else:
            self._aux = torch.zeros((), dtype=r.dtype, device=r.device)
        return self.towers(mixed).squeeze(-1)


def _mgoe_without(flag: str) -> Callable[[TableMeta, ModelOptions], nn.Module]:
    """An MGOE ablation: the model with ``opts.<flag> = False``."""
    return lambda meta, opts: MGOE(meta, dataclasses.replace(opts, **{flag: False}))


BUILDERS: dict[str, Callable[[TableMeta, ModelOptions], nn.Module]] = {
    "mgoe": MGOE,
    "mgoe_no_adjust": _mgoe_without("adjust"),
    "mgoe_no_cascade": _mgoe_without("cascade"),
    "mgoe_no_pref": MGOE,  # differs by its table only (TABLE_VARIANTS)
    "mgoe_pref": MGOE,  # differs by its table only (TABLE_VARIANTS)
    "mgoe_binary_edges": MGOE,  # differs by its table only (TABLE_VARIANTS)
    "mgoe_score_edges": MGOE,  # differs by its table only (TABLE_VARIANTS)
    "mgoe_pref_scores": MGOE,  # differs by its table only (TABLE_VARIANTS)
    "mmoe": MMoE,
    "mmoe_full": MMoEFull,
    "ple": PLE,
    "esmm": ESMM,
    "macgnn": MacGNNStyle,
    "grec": GRecMoE,
}
"""Registry name (:data:`mgoe_spark.config.models.MODELS`) -> the callable ``(meta, opts)`` that builds it."""


def build_model(name: str, meta: TableMeta, opts: ModelOptions) -> nn.Module:
    """A fresh model by registry name (ValueError naming the choices for an unknown name)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return BUILDERS[name](meta, opts)
