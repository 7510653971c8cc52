"""The MGOE model (SPEC 6, Eq 11-24) and the options every model of the harness is built from.

Data flow for a batch of B (user, item) rows, T tasks, d = embedding size::

    e_u, e_i (B, d)                              micro embeddings, shared by tasks
    M^t_U (T, K_U, d), M^t_I (T, K_I, d)          task-specific macro embeddings            Eq 11
    l = log(eps + 1) / tau  per hop                smoothed macro edge logits                Eq 14
    z^t per (side, hop) (B, T, o)                 macro graph experts, softmax(l + q.k)     Eq 15-17
    MGE^t = concat_z (B, T, 2H*o)                 one macro graph expert per task
    x^t = sum_k g^t_k MGE^k                       macro graph bottom                        Eq 12-13
    m^t_u, m^t_i = M^t_U[c(u)], M^t_I[c(i)]       the nodes' own task-t macro embeddings    Eq 11
    r^t_u, r^t_i (B, T, d)                        per-task micro neighbors (sum / attention) Eq 18
    c^t = [x^t, m^t_u, m^t_i, r^t_u, r^t_i, e_u, e_i] -> shared + task experts (CGC)       Eq 19-20
          (train.neighbor_input=all: r^1..r^T of both sides in place of r^t_u, r^t_i)
    o_t = tower_t([h^t, lambda_t o_{t-1}])        cascading readout                          Eq 21
    logit_t = o_t + gamma[t, c(i)] log(1 + K T^t[u, c_I(i)])   macro task adjustment        Eq 22
    loss = sum_t BCE_t + l1 |theta|_1 (+ L2 as Adam weight decay)                           Eq 1, 23, 24

Cost per row: O(T * H * K * (d + h + o) + T * L * d + experts), independent of graph size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mgoe_spark.config import TrainSettings
from mgoe_spark.core.names import SIDES
from model.data import TableMeta
from model.layers import (
    CascadeTowers,
    ExpertFusion,
    MacroEmbeddings,
    MacroGraphBottom,
    MacroGraphExpert,
    MicroNeighbors,
    TaskAdjustment,
    lookup_over_tasks,
    relayout,
)

_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}


def _train_default(name: str) -> Any:
    """A :class:`ModelOptions` field whose default is ``TrainSettings.<name>``'s (written once, in the config)."""
    f = _TRAIN_FIELDS[name]
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory)
    return field(default=f.default)


@dataclass
class ModelOptions:
    """Hyper-parameters of every model (filled from ``cfg.train`` by :meth:`from_train_settings`).

    Every field but ``adjust`` (set by the ablations in :func:`model.baselines.build_model`) is a
    :class:`~mgoe_spark.config.TrainSettings` field of the same name, and takes its default from there. A
    checkpoint stores ``dataclasses.asdict(options)`` and is rebuilt with ``ModelOptions(**options)``.
    """

    embed_dim: int = _train_default("embed_dim")
    head_dim: int | None = _train_default("head_dim")
    """Attention size d_h; ``None``: ``embed_dim``."""
    macro_out: int | None = _train_default("macro_out")
    """Output size o of each macro graph expert channel; ``None``: ``embed_dim``."""
    tau: float = _train_default("tau")
    attention: str = _train_default("attention")
    """Macro attention form (``logit``, ``neighbors`` = the literal product, ``off``): see MacroGraphExpert."""
    activation: str = _train_default("activation")
    expert_sizes: list[int] = _train_default("expert_sizes")
    mgoe_expert_sizes: list[int] | None = _train_default("mgoe_expert_sizes")
    """MGOE's (and its ablations') expert sizes; ``None``: ``expert_sizes``. Its experts read ~5x wider inputs
    than MMoE's, so at equal sizes MGOE costs 1.78x MMoE's multiply-adds; [128, 80] costs 1.2x."""
    tower_hidden: int = _train_default("tower_hidden")
    shared_experts: int = _train_default("shared_experts")
    task_experts: int = _train_default("task_experts")
    cascade: bool = _train_default("cascade")
    """Eq 21's cascading readout (``mgoe_no_cascade`` forces it off)."""
    adjust: bool = True
    adjust_form: str = _train_default("adjust_form")
    """Eq 22 form: ``log_macro``, ``log_count``, ``literal``, ``tower`` (see :class:`model.layers.TaskAdjustment`)."""
    own_macro: bool = _train_default("own_macro")
    """Eq 11: the nodes' own task-specific macro embeddings in each task's bottom input."""
    recent_attention: bool = _train_default("recent_attention")
    """Eq 18 attention weights for the recent micro neighbors against the target (default: the sum)."""
    attention_norm: bool = _train_default("attention_norm")
    """Macro attention on L2-normalized queries / keys with a learned temperature (see MacroGraphExpert)."""
    attention_scale_init: float | None = _train_default("attention_scale_init")
    """Initial temperature of the normalized attention (None: sqrt(h), log-parametrized; 0: starts as off)."""
    attention_key: str = _train_default("attention_key")
    """The macro attention's target: ``id`` = e_u / e_i, ``macro`` = the node's own macro embedding (see
    :meth:`MacroGraphEncoder.keys`)."""
    gate_input: str = _train_default("gate_input")
    """Eq 12 bottom gates on ``micro`` = [e_u, e_i] or ``full`` = [e_u, e_i, MGE^1..T], or ``off`` (the default
    since issue 27: x^t = MGE^t, each task its own macro graph expert) (MacroGraphBottom)."""
    lookup_norm: str = _train_default("lookup_norm")
    """Eq 22's lookup share over ``macros`` (the table's) or over ``tasks`` (:func:`model.layers.lookup_over_tasks`)."""
    macro_neighbors: str = _train_default("macro_neighbors")
    """Eq 15's macro neighbors N(v): ``all`` K macro nodes (zero-edge ones at logit 0, MacGNN's code) or
    ``edges``, only those with a non-zero edge (a channel with none gives z = 0)."""
    neighbor_input: str = _train_default("neighbor_input")
    """Eq 18-19's recent micro neighbors in task t's bottom input: ``task`` = r^t_u, r^t_i (2d), ``all`` = every
    task's, r^1_u..r^T_u, r^1_i..r^T_i (2Td), so task t reads what the user did in the other behaviors."""
    macgnn_own_macro: bool = _train_default("macgnn_own_macro")
    """The MacGNN-style baseline's input also holds the nodes' own macro embeddings (Eq 11, its one table)."""
    lambda_init: float = _train_default("lambda_init")
    gamma_init: float = _train_default("gamma_init")
    mmoe_experts: int | None = _train_default("mmoe_experts")
    """``None``: shared_experts + tasks * task_experts (the same number of experts as MGOE / PLE)."""
    grec_experts: int = _train_default("grec_experts")
    grec_top_k: int = _train_default("grec_top_k")
    shared_expert_input: str = _train_default("shared_expert_input")
    """Fusion: shared experts see the task-averaged input once (``mean``) or each task's input (``task``)."""
    grec_noise: float = _train_default("grec_noise")
    """Scale of the trainable routing noise of GRec's noisy top-k (0: deterministic routes)."""
    grec_balance: float = _train_default("grec_balance")
    """Weight of GRec's load-balancing loss (CV^2 of expert importance and load)."""
    dropout: float = _train_default("dropout")
    """Dropout on every hidden unit of the experts and towers of every model, in training (0: none)."""

    @staticmethod
    def from_train_settings(train) -> ModelOptions:
        """The options ``train`` (``cfg.train``, or any object with some of its attributes) sets; lists are copied.

        A field ``train`` does not carry keeps its default.
        """
        values = {}
        for f in dataclasses.fields(ModelOptions):
            if f.name in _TRAIN_FIELDS and hasattr(train, f.name):
                value = getattr(train, f.name)
                values[f.name] = list(value) if isinstance(value, list) else value
        return ModelOptions(**values)


class MicroEmbeddings(nn.Module):
    """User and item id embeddings (Xavier init; row 0 = padding, zero). ids (B,) -> (B, d).

    The tables are ``nn.Embedding(sparse=True)``: a step's gradient holds only the rows the batch looked up,
    and :mod:`model.sparse_optim` updates only those rows (cost independent of the vocabulary). No
    ``padding_idx``: row 0 is zero and the sparse optimizer never updates it, so padded ids contribute
    nothing to sums and row 0 stays exactly zero (``check_padding`` asserts it).
    """

    def __init__(self, meta: TableMeta, dim: int, sparse: bool = True) -> None:
        super().__init__()
        self.user = nn.Embedding(meta.num_users, dim, sparse=sparse)
        self.item = nn.Embedding(meta.num_items, dim, sparse=sparse)
        for emb in (self.user, self.item):
            nn.init.xavier_uniform_(emb.weight)
            with torch.no_grad():
                emb.weight[0].zero_()

    def forward(self, user_id: torch.Tensor, item_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(user_id), self.item(item_id)

    def lookup(
        self, user_id: torch.Tensor, item_id: torch.Tensor, user_recent: torch.Tensor, item_recent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """e_u, e_i (B, d) and the per-task recent-neighbor sums r_u (B, T, d) (items), r_i (B, T, d) (users).

        One ``embedding_bag(sum)`` per table: bags 0..B-1 hold the row's own id, then one bag of L ids per
        (row, task); padded ids are 0 and read the zero row 0. One kernel and one sparse gradient per table.
        """
        b, t, n = user_recent.shape
        offsets = torch.cat([torch.arange(b), b + n * torch.arange(b * t)])
        users = _bags(self.user, torch.cat([user_id, item_recent.reshape(-1)]), offsets)
        items = _bags(self.item, torch.cat([item_id, user_recent.reshape(-1)]), offsets)
        return users[:b], items[:b], items[b:].view(b, t, -1), users[b:].view(b, t, -1)

    def check_padding(self) -> None:
        """AssertionError unless row 0 of both tables is exactly zero."""
        for name, emb in (("user", self.user), ("item", self.item)):
            if torch.count_nonzero(emb.weight[0]).item():
                raise AssertionError(f"row 0 (padding) of the {name} embedding table is not zero")


def _bags(table: nn.Embedding, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    pad = table.padding_idx  # None for the sparse tables; 0 in the dense reference (model.train)
    return F.embedding_bag(ids, table.weight, offsets.to(ids.device), mode="sum", sparse=table.sparse, padding_idx=pad)


class MacroGraphEncoder(nn.Module):
    """Eq 11, 14-17 for every (side, hop) channel: -> MGE (B, G, 2 * hops * o).

    Channel order: user hops 1..H, then item hops 1..H. Macro nodes of user hop h are item macros for odd h
    (keyed by e_i) and user macros for even h (keyed by e_u); the item side mirrors it (SPEC 6: user 1-hop keyed
    by e_i, user 2-hop by e_u, item 1-hop by e_u, item 2-hop by e_i). ``G`` = T task-specific macro tables,
    or 1 with ``shared=True`` (single-graph MacGNN).
    """

    def __init__(self, meta: TableMeta, opts: ModelOptions, shared: bool = False) -> None:
        super().__init__()
        d = opts.embed_dim
        groups = 1 if shared else meta.num_tasks
        self.tau = opts.tau
        self.attention = opts.attention
        self.macro_user = MacroEmbeddings(meta.num_tasks, meta.k_user, d, shared)
        self.macro_item = MacroEmbeddings(meta.num_tasks, meta.k_item, d, shared)
        out = opts.macro_out or d
        self.channels: list[tuple[str, int, int, str]] = []  # (side, start col, width, macro side)
        for side in SIDES:
            start = 0
            for h, width in enumerate(meta.hop_widths(side)):
                macro_side = (
                    ("item" if h % 2 == 0 else "user") if side == "user" else ("user" if h % 2 == 0 else "item")
                )
                self.channels.append((side, start, width, macro_side))
                start += width
        self.experts = nn.ModuleList(
            MacroGraphExpert(
                groups, d, opts.head_dim or d, out, opts.attention, opts.attention_norm, opts.attention_scale_init
            )
            for _ in self.channels
        )
        self.norm = opts.attention_norm
        self.key = opts.attention_key
        self.edges_only = opts.macro_neighbors == "edges"
        self.out_dim = out * len(self.channels)
        self.k_max = max(meta.k_user, meta.k_item)
        # 1 where channel c is keyed by e_u (its macro nodes are user macros), 0 where by e_i
        keyed_by_user = torch.tensor([float(c[3] == "user") for c in self.channels])
        self.register_buffer("_keyed_by_user", keyed_by_user, persistent=False)
        pad = torch.zeros(len(self.channels), 1, self.k_max)  # 0 / -inf: the padded macro slots of a channel
        for c, (_, _, width, _) in enumerate(self.channels):
            pad[c, :, width:] = float("-inf")
        self.register_buffer("_pad", pad if meta.k_user != meta.k_item else None, persistent=False)

    def forward(
        self, user_edges: torch.Tensor, item_edges: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor
    ) -> torch.Tensor:
        """All C channels as one batched problem (padded to K = max(K_U, K_I) macro slots): one GEMM for
        every channel's scores, one softmax, one batched value product. Same result as
        :meth:`forward_channels` (the per-channel reference)."""
        b = eu.shape[0]
        c_n = len(self.channels)
        a_full, v, wk = self._stacked("batch")  # (2d, C * G * K), (C, G, K, o), (2d, C * G * h) or None
        g, k = v.shape[1], v.shape[2]
        logits, keep = self._neighbors(self._logits(user_edges, item_edges), dim=-1)  # (B, C, K), -inf in padded slots
        if self.attention == "off":
            a = torch.softmax(logits, dim=-1).unsqueeze(2).expand(b, c_n, g, k)
        else:
            x = torch.cat([eu, ei], dim=-1)  # (B, 2d), or (B, G, 2d) per-group targets (attention_key='macro')
            if x.dim() == 2:
                s = torch.mm(x, a_full).view(b, c_n, g, k)
                kw = None if wk is None else torch.mm(x, wk).view(b, c_n, g, -1)
            else:
                s = torch.einsum("bgj,cgkj->bcgk", x, a_full.t().view(c_n, g, k, -1))
                kw = None if wk is None else torch.einsum("bgj,jcgh->bcgh", x, wk.view(x.shape[-1], c_n, g, -1))
            if kw is not None:  # attention_norm: divide by |W_K e_v| (q is normalized and scaled in A)
                s = s / kw.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            if self.attention == "logit":
                a = torch.softmax(s + logits.unsqueeze(2), dim=-1)
            else:  # neighbors: softmax(s) * softmax(l), padded slots out of both
                if self._pad is not None:
                    s = s + self._pad.unsqueeze(0)
                a = torch.softmax(s, dim=-1) * torch.softmax(logits, dim=-1).unsqueeze(2)
        if keep is not None:  # a channel without a macro neighbor contributes z = 0
            a = a * keep.unsqueeze(2)
        z = torch.einsum("bcgk,cgko->bgco", a, v)  # (B, G, C, o)
        return z.reshape(b, g, -1)

    def _neighbors(self, logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``macro_neighbors='edges'``: Eq 15's N(v), the macro nodes with a non-zero edge. Zero-edge slots
        (logit 0) go to -inf; a channel row with no neighbor gets logits 0 (a finite softmax) and ``keep`` 0
        there, 1 elsewhere (shape of ``logits`` with ``dim`` of size 1), to multiply its weights by. ``all``:
        ``(logits, None)`` unchanged."""
        if not self.edges_only:
            return logits, None
        logits = logits.masked_fill(logits == 0, float("-inf"))
        keep = torch.isfinite(logits).any(dim=dim, keepdim=True)
        return torch.where(keep, logits, torch.zeros_like(logits)), keep.to(logits.dtype)

    def _logits(self, user_edges: torch.Tensor, item_edges: torch.Tensor) -> torch.Tensor:
        """Eq 14's smoothed edge logits of every channel (B, C, K), -inf in the padded slots."""
        b = user_edges.shape[0]
        edges = torch.cat([user_edges, item_edges], dim=1)
        if self._pad is None:  # every channel has K slots: no copy per channel
            return torch.log1p(edges).div_(self.tau).view(b, len(self.channels), self.k_max)
        parts = []
        for side, start, width, _ in self.channels:
            e = (user_edges if side == "user" else item_edges)[:, start : start + width]
            parts.append(F.pad(torch.log1p(e) / self.tau, (0, self.k_max - width), value=float("-inf")))
        return torch.stack(parts, dim=1)

    def _stacked(self, layout: str = "batch") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch-independent parts of every channel, for ``[e_u, e_i]`` rows (``layout='batch'``) or
        columns (``'feature'``): score weights ``A`` with ``[e_u, e_i] @ A`` = the scaled scores
        ``(W_K e_v) . (W_Q e_m) / sqrt(h)`` (rows of the other target zero), and the values ``V = W_V e_m``
        (zero in padded slots). ``batch``: A (2d, C * G * K), V (C, G, K, o); ``feature``: A (G * C * K, 2d),
        V^T (G * C, o, K). With ``attention_norm`` the queries in ``A`` are L2-normalized and scaled by the
        learned temperature, and a third tensor holds the key weights ``W_K`` in the same two layouts
        ((2d, C * G * h) / (G * C * h, 2d)) to divide by ``|W_K e_v|``; else ``None``. Cached without
        autograd until a parameter changes (its version counter moves). With ``attention='off'`` only V is built
        (``A`` is ``None``: the forward passes read the edge weights alone)."""
        if torch.is_grad_enabled():
            return self._stack(layout)
        params = [self.macro_user.tables, self.macro_item.tables]
        params += [p for ex in self.experts for p in (ex.wq, ex.wk, ex.wv)]
        params += [p for ex in self.experts for p in ex.temperature_params()]
        key = (layout, *((id(p), p._version) for p in params))
        cache = self.__dict__.setdefault("_cache", {})
        if cache.get(layout, (None,))[0] != key:
            cache[layout] = (key, self._stack(layout))
        return cache[layout][1]

    def _stack(self, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mu, mi = self.macro_user(), self.macro_item()
        padded = {side: F.pad(m, (0, 0, 0, self.k_max - m.shape[1])) for side, m in (("user", mu), ("item", mi))}
        macro = torch.stack([padded[c[3]] for c in self.channels])  # (C, G, K, d), zero rows in padded slots
        wv = torch.stack([ex.wv for ex in self.experts])
        v = torch.einsum("cgkd,cgdo->cgko", macro, wv)
        if self.attention == "off":  # the edge weights alone: no scores to stack (forward reads V only)
            if layout == "batch":
                return None, v, None
            g, o = v.shape[1], v.shape[-1]
            return None, v.permute(1, 0, 3, 2).reshape(g * len(self.channels), o, -1), None
        wq = torch.stack([ex.wq for ex in self.experts])  # (C, G, d, h)
        wk = torch.stack([ex.wk for ex in self.experts])
        q = torch.einsum("cgkd,cgdh->cgkh", macro, wq)
        if self.norm:
            scale = torch.stack([ex.temperature() for ex in self.experts])  # (C, G)
            q = F.normalize(q, dim=-1) * scale.view(*scale.shape, 1, 1)
        else:
            q = q / math.sqrt(wq.shape[-1])
        a = torch.einsum("cgdh,cgkh->cgkd", wk, q)  # (C, G, K, d)
        u = self._keyed_by_user.view(-1, 1, 1, 1)
        a = torch.cat([a * u, a * (1 - u)], dim=-1)  # (C, G, K, 2d): weights of [e_u, e_i]
        wk2 = torch.cat([wk * u, wk * (1 - u)], dim=2) if self.norm else None  # (C, G, 2d, h)
        if layout == "batch":
            keys = None if wk2 is None else wk2.permute(2, 0, 1, 3).reshape(wk2.shape[2], -1)
            return a.reshape(-1, a.shape[-1]).t(), v, keys
        g, o = v.shape[1], v.shape[-1]
        keys = None if wk2 is None else wk2.permute(1, 0, 3, 2).reshape(-1, wk2.shape[2])
        vt = v.permute(1, 0, 3, 2).reshape(g * len(self.channels), o, -1)
        return a.transpose(0, 1).reshape(-1, a.shape[-1]), vt, keys

    def forward_fm(
        self, user_edges: torch.Tensor, item_edges: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`forward` feature-major: -> MGE (G, C * o, B), scores (G, C, K, B) from one GEMM, the softmax
        over K, one batched value product whose output is already the expert layout (no relayouts)."""
        b, c_n, k = eu.shape[0], len(self.channels), self.k_max
        a_fm, vt, wk = self._stacked("feature")  # (G * C * K, 2d), (G * C, o, K), (G * C * h, 2d) or None
        g = vt.shape[0] // c_n
        logits, keep = self._neighbors(self._logits(user_edges, item_edges).permute(1, 2, 0), dim=1)  # (C, K, B)
        if self.attention == "off":
            a = torch.softmax(logits, dim=1).unsqueeze(0).expand(g, c_n, k, b)
        else:
            x = torch.cat([eu, ei], dim=-1)  # (B, 2d), or (B, G, 2d) per-group targets (attention_key='macro')
            if x.dim() == 2:
                s = torch.mm(a_fm, x.t()).view(g, c_n, k, b)
                kw = None if wk is None else torch.mm(wk, x.t()).view(g, c_n, -1, b)
            else:
                s = torch.einsum("gckj,bgj->gckb", a_fm.view(g, c_n, k, -1), x)
                kw = None if wk is None else torch.einsum("gchj,bgj->gchb", wk.view(g, c_n, -1, x.shape[-1]), x)
            if kw is not None:  # attention_norm: divide by |W_K e_v|
                s = s / kw.norm(dim=2, keepdim=True).clamp(min=1e-12)
            if self.attention == "logit":
                a = torch.softmax(s + logits, dim=2)
            else:
                if self._pad is not None:
                    s = s + self._pad.transpose(1, 2)
                a = torch.softmax(s, dim=2) * torch.softmax(logits, dim=1)
        if keep is not None:  # (C, 1, B): a channel without a macro neighbor contributes z = 0
            a = a * keep
        return torch.bmm(vt, a.reshape(g * c_n, k, b)).view(g, -1, b)

    def forward_channels(
        self, user_edges: torch.Tensor, item_edges: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor
    ) -> torch.Tensor:
        """Reference: one :class:`MacroGraphExpert` call per channel (what :meth:`forward` batches)."""
        mu, mi = self.macro_user(), self.macro_item()
        zs = []
        for (side, start, width, macro_side), expert in zip(self.channels, self.experts, strict=True):
            edges = (user_edges if side == "user" else item_edges)[:, start : start + width]
            logits, keep = self._neighbors(torch.log1p(edges) / self.tau, dim=-1)  # Eq 14 before its softmax
            macro, target = (mu, eu) if macro_side == "user" else (mi, ei)
            z = expert(macro, target, logits)  # (B, G, o)
            zs.append(z if keep is None else z * keep.unsqueeze(1))
        return torch.cat(zs, dim=-1)

    def keys(
        self, eu: torch.Tensor, ei: torch.Tensor, user_macro: torch.Tensor, item_macro: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention's targets ``(k_u, k_i)`` that ``W_K`` reads: ``attention_key='id'`` (or the attention
        off): e_u, e_i (B, d) as given; ``'macro'``: the nodes' own macro embeddings ``M^g_U[c(u)]``,
        ``M^g_I[c(i)]`` (B, G, d) per macro table g, zeros for a node with no macro node (scores 0 there)."""
        if self.key != "macro" or self.attention == "off":
            return eu, ei
        return self.macro_user.own(user_macro), self.macro_item.own(item_macro)

    def own(self, user_macro: torch.Tensor, item_macro: torch.Tensor) -> torch.Tensor:
        """Eq 11: [M^t_U[c(u)], M^t_I[c(i)]] -> (B, G, 2d)."""
        return torch.cat([self.macro_user.own(user_macro), self.macro_item.own(item_macro)], dim=-1)


def multitask_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq 23: sum over tasks of (weighted) mean binary cross-entropy. logits, labels (B, T) -> scalar."""
    per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)
    if weights is not None:
        per_task = per_task * weights
    return per_task.sum()


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Eq 24's L1 term: sum of |theta| over trainable parameters (the L2 term is Adam's weight decay)."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


class MGOE(nn.Module):
    """Macro Graph of Experts. forward(batch) -> adjusted logits (B, T); ``sigmoid`` gives y_t (Eq 22).

    ``opts.cascade=False`` is "w/o cascading" (lambda = 0), ``opts.adjust=False`` "w/o adjustment" (gamma = 0,
    the lookup is not read);
    "w/o preference" is the same model trained on tables built with ``weights.enabled=false``.
    """

    def __init__(self, meta: TableMeta, opts: ModelOptions) -> None:
        super().__init__()
        d, T = opts.embed_dim, meta.num_tasks
        self.micro = MicroEmbeddings(meta, d)
        self.graph = MacroGraphEncoder(meta, opts)
        full_dim = self.graph.out_dim if opts.gate_input == "full" else 0
        self.bottom = MacroGraphBottom(T, d, full_dim, off=opts.gate_input == "off")
        self.lookup_norm = opts.lookup_norm
        self.user_neighbors = MicroNeighbors(T, d, opts.recent_attention)
        self.item_neighbors = MicroNeighbors(T, d, opts.recent_attention)
        self.own_macro = opts.own_macro
        self.all_neighbors = opts.neighbor_input == "all"
        neighbors = 2 * (T if self.all_neighbors else 1) * d
        in_dim = self.graph.out_dim + neighbors + 2 * d + (2 * d if opts.own_macro else 0)
        sizes = list(opts.mgoe_expert_sizes or opts.expert_sizes)
        self.fusion = ExpertFusion(
            T,
            in_dim,
            sizes,
            opts.shared_experts,
            opts.task_experts,
            opts.activation,
            opts.shared_expert_input,
            opts.dropout,
        )
        self.adjust = TaskAdjustment(T, opts.adjust, opts.gamma_init, opts.adjust_form, meta.k_item)
        extra = T if self.adjust.form == "tower" else 0
        self.towers = CascadeTowers(
            T, sizes[-1], opts.tower_hidden, opts.cascade, opts.lambda_init, extra=extra, dropout=opts.dropout
        )

    def bottom_input(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """c^t (B, T, in): [x^t, M^t_U[c(u)], M^t_I[c(i)], r^t_u, r^t_i, e_u, e_i] (Eq 11-13, 18-19)."""
        return relayout(self.bottom_input_fm(batch), 2, 0, 1)

    def bottom_input_fm(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """c^t feature-major (T, in, B), the experts' layout, built without relayouts of the wide parts."""
        eu, ei, ru, ri = self.micro.lookup(
            batch["user_id"], batch["item_id"], batch["user_recent"], batch["item_recent"]
        )  # (B, d), (B, d), (B, T, d), (B, T, d): one embedding_bag per table (Eq 18 plain sums included)
        if self.user_neighbors.attention:  # Eq 18 with attention needs each neighbor's embedding, not the sum
            ru = self.user_neighbors(self.micro.item, batch["user_recent"], ei)  # keyed by e_i
            ri = self.item_neighbors(self.micro.user, batch["item_recent"], eu)
        keys = self.graph.keys(eu, ei, batch["user_macro"], batch["item_macro"])
        mge = self.graph.forward_fm(batch["user_edges"], batch["item_edges"], *keys)  # (T, F, B)
        x = self.bottom.forward_fm(mge, eu, ei)
        t = x.shape[0]
        parts = [x]
        if self.own_macro:
            parts.append(self.graph.own(batch["user_macro"], batch["item_macro"]).permute(1, 2, 0))
        if self.all_neighbors:  # every task's neighbors for every task: (T, 2Td, B)
            b = eu.shape[0]
            both = torch.cat([ru.reshape(b, -1), ri.reshape(b, -1)], dim=1).t()
            parts.append(both.unsqueeze(0).expand(t, -1, -1))
        else:
            parts += [ru.permute(1, 2, 0), ri.permute(1, 2, 0)]
        parts += [eu.t().unsqueeze(0).expand(t, -1, -1), ei.t().unsqueeze(0).expand(t, -1, -1)]
        return torch.cat(parts, dim=1)

    def forward_reference(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` batch-major, module by module (the reference the feature-major path is tested
        against)."""
        eu, ei, ru, ri = self.micro.lookup(
            batch["user_id"], batch["item_id"], batch["user_recent"], batch["item_recent"]
        )
        if self.user_neighbors.attention:
            ru = self.user_neighbors(self.micro.item, batch["user_recent"], ei)
            ri = self.item_neighbors(self.micro.user, batch["item_recent"], eu)
        keys = self.graph.keys(eu, ei, batch["user_macro"], batch["item_macro"])
        x = self.bottom(self.graph.forward_channels(batch["user_edges"], batch["item_edges"], *keys), eu, ei)
        t = x.shape[1]
        parts = [x]
        if self.own_macro:
            parts.append(self.graph.own(batch["user_macro"], batch["item_macro"]))
        if self.all_neighbors:
            b = eu.shape[0]
            parts.append(torch.cat([ru.reshape(b, -1), ri.reshape(b, -1)], dim=1).unsqueeze(1).expand(-1, t, -1))
        else:
            parts += [ru, ri]
        parts += [eu.unsqueeze(1).expand(-1, t, -1), ei.unsqueeze(1).expand(-1, t, -1)]
        lookup = self.lookup(batch)
        o = self.towers(self.fusion(torch.cat(parts, dim=-1)), self.adjust.tower_inputs(lookup))
        return self.adjust(o, lookup, batch["item_macro"], batch["user_recent"])

    def lookup(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq 22's lookup (B, T): the table's share over macros, or over tasks (``opts.lookup_norm='tasks'``)."""
        if self.lookup_norm == "tasks":
            return lookup_over_tasks(batch["lookup"], batch["user_recent"])
        return batch["lookup"]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ct = self.bottom_input_fm(batch)  # (T, in, B): feature-major through the experts and towers
        lookup = self.lookup(batch)
        o = self.towers.forward_fm(self.fusion.forward_fm(ct), self.adjust.tower_inputs(lookup))
        return self.adjust(o, lookup, batch["item_macro"], batch["user_recent"])
