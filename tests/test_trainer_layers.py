"""MGOE building blocks against hand-computed tensors (SPEC 6, Eq 12-22)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from model.baselines import product_logit
from model.data import TableMeta
from model.layers import (
    BatchedMLP,
    CascadeTowers,
    Dice,
    MacroGraphBottom,
    MacroGraphExpert,
    MicroNeighbors,
    TaskAdjustment,
    log_smoothed_weights,
)
from model.mgoe import MacroGraphEncoder, ModelOptions


def test_log_smoothing_hand_computed():
    # exp(log(1 + e) / tau) = (1 + e)^(1 / tau): with tau = 1 the weights are proportional to 1 + e,
    # with tau = 2 to sqrt(1 + e).
    edges = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    w1 = log_smoothed_weights(edges, 1.0)
    torch.testing.assert_close(w1[0], torch.tensor([1.0, 2.0, 4.0]) / 7.0)
    torch.testing.assert_close(w1[1], torch.full((3,), 1 / 3))  # zero-count macros keep weight
    w2 = log_smoothed_weights(edges, 2.0)
    expected = torch.tensor([1.0, math.sqrt(2.0), 2.0])
    torch.testing.assert_close(w2[0], expected / expected.sum())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=12), st.floats(0.1, 10))
def test_log_smoothing_is_a_distribution_monotone_in_edges(values, tau):
    e = torch.tensor([values], dtype=torch.float64)
    w = log_smoothed_weights(e, tau)[0].numpy()
    assert abs(w.sum() - 1) < 1e-9 and (w > 0).all()
    order = np.argsort(values, kind="stable")
    assert (np.diff(w[order]) >= -1e-12).all()


def _expert(attention: str) -> MacroGraphExpert:
    ex = MacroGraphExpert(groups=1, dim=2, head=2, out=2, attention=attention)
    with torch.no_grad():
        for p in (ex.wq, ex.wk, ex.wv):
            p.copy_(torch.eye(2).unsqueeze(0))
    return ex


def test_macro_attention_hand_computed():
    # W_Q = W_K = W_V = I; macro embeddings e_1 = (1, 0), e_2 = (0, 1); target (sqrt(2) ln 2, 0):
    # scores = (ln 2, 0) -> alpha = (2/3, 1/3); edge logits (0, 0) -> w = (1/2, 1/2).
    macro = torch.eye(2).unsqueeze(0)
    target = torch.tensor([[math.sqrt(2.0) * math.log(2.0), 0.0]])
    logits = torch.tensor([[0.0, 0.0]])
    ex = _expert("neighbors")
    torch.testing.assert_close(ex.alpha(macro, target), torch.tensor([[[2 / 3, 1 / 3]]]))
    # literal product: z = 1/3 e_1 + 1/6 e_2 (rows of w * alpha sum to 1/2 = 1/K)
    torch.testing.assert_close(ex(macro, target, logits), torch.tensor([[[1 / 3, 1 / 6]]]))
    # one softmax in logit space: softmax((ln 2, 0) + (0, 0)) = (2/3, 1/3), rows sum to 1
    torch.testing.assert_close(_expert("logit")(macro, target, logits), torch.tensor([[[2 / 3, 1 / 3]]]))
    # edge logits (ln 3, 0) in logit space: softmax(ln 2 + ln 3, 0) = (6/7, 1/7)
    edge = torch.tensor([[math.log(3.0), 0.0]])
    torch.testing.assert_close(_expert("logit")(macro, target, edge), torch.tensor([[[6 / 7, 1 / 7]]]))
    # attention off (the MacGNN code): alpha = 1, z = sum_m w_m W_V e_m
    torch.testing.assert_close(_expert("off")(macro, target, logits), torch.tensor([[[0.5, 0.5]]]))
    with pytest.raises(ValueError, match="attention must be one of"):
        _expert("both")


@pytest.mark.parametrize("form", ["logit", "neighbors", "off"])
def test_macro_attention_matches_loop_for_several_tasks(form):
    torch.manual_seed(0)
    G, K, d, h, o, B = 3, 5, 4, 3, 2, 6
    ex = MacroGraphExpert(G, d, h, o, attention=form)
    macro, target = torch.randn(G, K, d), torch.randn(B, d)
    logits = torch.randn(B, K)
    out = ex(macro, target, logits)
    for g in range(G):
        for b in range(B):
            s = (macro[g] @ ex.wq[g]) @ (target[b] @ ex.wk[g]) / math.sqrt(h)
            a = {
                "logit": torch.softmax(s + logits[b], 0),
                "neighbors": torch.softmax(s, 0) * torch.softmax(logits[b], 0),
                "off": torch.softmax(logits[b], 0),
            }[form]
            z = (a.unsqueeze(1) * (macro[g] @ ex.wv[g])).sum(0)
            torch.testing.assert_close(out[b, g], z)


@pytest.mark.parametrize("form", ["logit", "neighbors", "off"])
@pytest.mark.parametrize("k_user, k_item", [(5, 5), (3, 6)])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("norm", [None, "log", "linear"])
@pytest.mark.parametrize("per_group", [False, True])
def test_stacked_macro_channels_match_the_per_channel_experts(form, k_user, k_item, shared, norm, per_group):
    # the encoder batches its 2 * hops channels (padded to max(K_U, K_I) slots when they differ) into one
    # score GEMM, one softmax and one value product: same outputs and gradients as one expert per channel,
    # with autograd and through the no-grad cache (also after a parameter changes)
    torch.manual_seed(0)
    meta = TableMeta(10, 10, k_user, k_item, hops=2, num_tasks=3, recent_len=4, tasks=("a", "b", "c"))
    scale_init = 0.5 if norm == "linear" else None  # the temperature itself learned, or its log
    opts = ModelOptions(
        embed_dim=4, head_dim=3, macro_out=2, attention=form, attention_norm=bool(norm), attention_scale_init=scale_init
    )
    enc = MacroGraphEncoder(meta, opts, shared=shared).double()
    if norm:  # distinct temperatures per channel and group
        with torch.no_grad():
            for ex in enc.experts:
                (p,) = ex.temperature_params()
                p.add_(torch.rand_like(p))
    b = 7
    ue = torch.rand(b, sum(meta.hop_widths("user")), dtype=torch.float64) * 5
    ie = torch.rand(b, sum(meta.hop_widths("item")), dtype=torch.float64) * 5
    # targets (B, d), or one per macro table (B, G, d) as attention_key='macro' passes them (a zero row: a node
    # with no macro node)
    shape = (b, 1 if shared else 3, 4) if per_group else (b, 4)
    eu, ei = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    if per_group:
        eu[0] = 0.0
    ref = enc.forward_channels(ue, ie, eu, ei)
    out = enc(ue, ie, eu, ei)
    assert out.shape == (b, 1 if shared else 3, 4 * 2)
    torch.testing.assert_close(out, ref)
    params = list(enc.parameters())
    grads = [torch.autograd.grad(y.sum(), params, materialize_grads=True) for y in (out, ref)]
    torch.testing.assert_close(grads[0], grads[1])
    with torch.no_grad():
        torch.testing.assert_close(enc(ue, ie, eu, ei), ref)
        enc.experts[1].wk.mul_(2.0)  # the cached stacks follow the parameters
        torch.testing.assert_close(enc(ue, ie, eu, ei), enc.forward_channels(ue, ie, eu, ei))
        if norm:
            enc.experts[0].temperature_params()[0].add_(1.0)
            torch.testing.assert_close(enc(ue, ie, eu, ei), enc.forward_channels(ue, ie, eu, ei))
        fm = enc.forward_fm(ue, ie, eu, ei)  # (G, C * o, B): the same numbers feature-major
        torch.testing.assert_close(fm.permute(2, 0, 1), enc.forward_channels(ue, ie, eu, ei))


def test_bottom_gates_mix_task_experts():
    torch.manual_seed(1)
    bottom = MacroGraphBottom(tasks=3, dim=2)
    eu, ei, mge = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 3, 5)
    g = bottom.gates(eu, ei)
    torch.testing.assert_close(g.sum(-1), torch.ones(4, 3))
    x = bottom(mge, eu, ei)
    for b in range(4):
        for t in range(3):
            torch.testing.assert_close(x[b, t], sum(g[b, t, k] * mge[b, k] for k in range(3)))


def test_micro_neighbors_masked_sum_ignores_padding_even_if_row0_is_nonzero():
    table = nn.Embedding(5, 2)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[100.0, 100.0], [1, 0], [0, 1], [2, 2], [3, -1]]))
    recent = torch.tensor([[[1, 2, 0], [0, 0, 0]], [[3, 3, 4], [4, 0, 0]]])
    out = MicroNeighbors()(table, recent)
    expected = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[7.0, 3.0], [3.0, -1.0]]])
    torch.testing.assert_close(out, expected)


def _towers(cascade: bool) -> CascadeTowers:
    towers = CascadeTowers(tasks=2, in_dim=1, hidden=1, cascade=cascade, lambda_init=1.0)
    with torch.no_grad():
        towers.w1.weights[0].fill_(1.0)
        towers.w1.biases[0].zero_()
        towers.w_prev.fill_(1.0)
        towers.out.weights[0].fill_(1.0)
        towers.out.biases[0].zero_()
    return towers


def test_cascade_hand_computed():
    # o_1 = relu(h_1) = 2; o_2 = relu(h_2 + lambda_2 * o_1) = relu(-1 + 2) = 1; without cascading relu(-1) = 0.
    h = torch.tensor([[[2.0], [-1.0]]])
    torch.testing.assert_close(_towers(True)(h), torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(_towers(False)(h), torch.tensor([[2.0, 0.0]]))
    t = _towers(True)
    with torch.no_grad():
        t.lam.copy_(torch.tensor([1.0, 0.25]))
    torch.testing.assert_close(t(h), torch.tensor([[2.0, 0.0]]))  # relu(-1 + 0.5) = 0
    assert not _towers(False).lam.requires_grad and "lam" not in dict(_towers(False).named_parameters())


def test_adjustment_hand_computed():
    adj = TaskAdjustment(2, enabled=True, form="literal")
    with torch.no_grad():
        adj.gamma.copy_(torch.tensor([2.0, 0.5]))
    logits, lookup = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, 1.0]])
    torch.testing.assert_close(torch.sigmoid(adj(logits, lookup)), torch.sigmoid(torch.tensor([[0.9, -0.5]])))
    off = TaskAdjustment(2, enabled=False)
    torch.testing.assert_close(off(logits, lookup), logits)
    assert len(list(off.parameters())) == 0
    # log_macro: gamma[t, c(i)] * log(1 + K T); K = 4, item macro 3
    lm = TaskAdjustment(2, enabled=True, form="log_macro", k_item=4)
    with torch.no_grad():
        lm.gamma.zero_()
        lm.gamma[3] = torch.tensor([1.0, 2.0])
    got = lm(logits, lookup, torch.tensor([3]))
    want = logits + torch.tensor([[math.log(1 + 0.8), 2 * math.log(5.0)]])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(lm(logits, lookup, torch.tensor([2])), logits)  # another macro: its own gamma (0)
    assert lm.gamma.shape == (5, 2)  # row 0: rows without an item macro (cold items)
    # log_count: gamma[t, c(i)] * log(1 + T * n_recent); task 0 has 2 recent items, task 1 has 3 of L = 4
    lc = TaskAdjustment(2, enabled=True, form="log_count", k_item=4)
    with torch.no_grad():
        lc.gamma.zero_()
        lc.gamma[3] = torch.tensor([1.0, 2.0])
    recent = torch.tensor([[[5, 7, 0, 0], [1, 2, 3, 0]]])
    want = logits + torch.tensor([[math.log(1 + 0.2 * 2), 2 * math.log(1 + 1.0 * 3)]])
    torch.testing.assert_close(lc(logits, lookup, torch.tensor([3]), recent), want)


def test_micro_neighbor_attention_starts_as_the_sum_and_weights_similar_neighbors():
    table = nn.Embedding(4, 2)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    recent = torch.tensor([[[1, 2, 0]]])
    target = torch.tensor([[1.0, 0.0]])
    att = MicroNeighbors(tasks=1, dim=2, attention=True)
    torch.testing.assert_close(att(table, recent, target), MicroNeighbors()(table, recent))  # W = 0: the sum
    with torch.no_grad():
        att.w.copy_(torch.eye(2).unsqueeze(0) * math.sqrt(2.0) * math.log(3.0))
    # scores (ln 3, 0) -> softmax (3/4, 1/4), times n = 2 neighbors
    torch.testing.assert_close(att(table, recent, target), torch.tensor([[[1.5, 0.5]]]))


def test_dice_limits():
    dice = Dice(3).eval()  # running stats: mean 0, var 1 -> p = sigmoid(x)
    with torch.no_grad():
        dice.alpha.fill_(0.5)
    x = torch.tensor([[-2.0, 0.0, 3.0]])
    p = torch.sigmoid(x)
    torch.testing.assert_close(dice(x), p * x + (1 - p) * 0.5 * x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a,b", [(0.3, -1.2), (8.0, 9.0), (-30.0, 2.0), (20.0, 25.0)])
def test_esmm_product_logit(a, b):
    pa, pb = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    got = torch.sigmoid(product_logit(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)))
    assert got.item() == pytest.approx(pa * pb, rel=1e-6)


@pytest.mark.parametrize("act", ["relu", "dice"])
def test_expert_fusion_matches_loop(act):
    """CGC: task t's gate, its own experts and the shared experts all read c^t; a shared expert is one
    function over the B * T rows (with Dice: one batch norm over them)."""
    from model.layers import ExpertFusion

    torch.manual_seed(0)
    B, T, S, P, D, OUT = 6, 3, 2, 2, 5, 4
    fusion = ExpertFusion(tasks=T, in_dim=D, sizes=[7, OUT], shared=S, per_task=P, act=act, shared_input="task")
    with torch.no_grad():
        for p in fusion.parameters():  # nonzero biases and alphas so that every term is exercised
            p.add_(0.1 * torch.randn_like(p))
    c = torch.randn(B, T, D)
    ref = copy.deepcopy(fusion)
    out = fusion(c)
    g = torch.softmax(ref.gate(c), -1)
    sh = ref.shared_experts(c.reshape(B * T, D)).reshape(B, T, S, OUT)  # shared experts over all B*T rows
    te = ref.task_experts(c.repeat_interleave(P, dim=1)).reshape(B, T, P, OUT)
    for b in range(B):
        for t in range(T):
            expected = sum(g[b, t, s] * sh[b, t, s] for s in range(S)) + sum(
                g[b, t, S + p] * te[b, t, p] for p in range(P)
            )
            torch.testing.assert_close(out[b, t], expected, rtol=1e-5, atol=1e-6)
    if act == "dice":  # the same running statistics as the reference, and eval mode uses them
        for a, r in zip(fusion.buffers(), ref.buffers(), strict=True):
            torch.testing.assert_close(a, r)
        fusion.eval(), ref.eval()
        g0 = torch.softmax(ref.gate(c), -1)[:, 0]
        sh0, te0 = ref.shared_experts(c[:, 0]), ref.task_experts(c[:, :1].expand(-1, T * P, -1))
        expected0 = sum(g0[:, s : s + 1] * sh0[:, s] for s in range(S)) + sum(
            g0[:, S + p : S + p + 1] * te0[:, p] for p in range(P)
        )
        torch.testing.assert_close(fusion(c)[:, 0], expected0, rtol=1e-5, atol=1e-6)


def test_dice_matches_batchnorm_reference_in_both_layouts():
    torch.manual_seed(3)
    x = torch.randn(64, 2, 5) * 3 + 1
    ref_bn = nn.BatchNorm1d(10, affine=False, eps=1e-8)
    alpha = torch.randn(10)
    for batch_dim in (0, -1):
        dice = Dice(10, batch_dim=batch_dim)
        with torch.no_grad():
            dice.alpha.copy_(alpha)
        xin = x if batch_dim == 0 else x.permute(1, 2, 0).contiguous()
        for mode in ("train", "eval"):
            dice.train(mode == "train"), ref_bn.train(mode == "train")
            y = dice(xin)
            y = y if batch_dim == 0 else y.permute(2, 0, 1)
            p = torch.sigmoid(ref_bn(x.reshape(64, 10))).reshape(64, 2, 5)
            a = alpha.reshape(2, 5)
            torch.testing.assert_close(y, p * x + (1 - p) * a * x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dice.bn.running_mean, ref_bn.running_mean)
        torch.testing.assert_close(dice.bn.running_var, ref_bn.running_var)
        ref_bn.reset_running_stats()
    with pytest.raises(ValueError, match="more than 1 value"):
        Dice(3).train()(torch.randn(1, 3))


@pytest.mark.parametrize("act", ["relu", "dice"])
def test_batched_mlp_matches_per_group_linears(act):
    from model.layers import BatchedMLP

    torch.manual_seed(2)
    mlp = BatchedMLP(3, 4, [6, 2], act).eval()
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for a in mlp.acts:
            if isinstance(a, Dice):
                a.bn.running_mean.normal_()
                a.bn.running_var.uniform_(0.5, 2)
    x2, x3 = torch.randn(5, 4), torch.randn(5, 3, 4)
    for x in (x2, x3):
        out = mlp(x)
        for g in range(3):
            h = x if x.dim() == 2 else x[:, g]
            for w, b, a in zip(mlp.weights, mlp.biases, mlp.acts, strict=True):
                h = h @ w[g] + b[g]
                if isinstance(a, Dice):
                    o = h.shape[1]
                    sl = slice(g * o, (g + 1) * o)
                    p = torch.sigmoid((h - a.bn.running_mean[sl]) / torch.sqrt(a.bn.running_var[sl] + a.bn.eps))
                    h = h * (a.alpha[sl] + p * (1 - a.alpha[sl]))
                else:
                    h = a(h)
            torch.testing.assert_close(out[:, g], h, rtol=1e-5, atol=1e-6)


def test_expert_fusion_mean_input_matches_loop():
    from model.layers import ExpertFusion

    torch.manual_seed(1)
    fusion = ExpertFusion(tasks=3, in_dim=5, sizes=[7, 4], shared=2, per_task=2, act="relu", shared_input="mean")
    c = torch.randn(6, 3, 5)
    out = fusion(c)
    g = torch.softmax(fusion.gate(c), -1)
    sh = fusion.shared_experts(c.mean(1))  # the shared experts see the task-averaged input, once
    te = fusion.task_experts(c.repeat_interleave(2, dim=1)).reshape(6, 3, 2, 4)
    for b in range(6):
        for t in range(3):
            shared = sum(g[b, t, s] * sh[b, s] for s in range(2))
            torch.testing.assert_close(out[b, t], shared + sum(g[b, t, 2 + p] * te[b, t, p] for p in range(2)))


def test_mgoe_expert_sizes_narrow_mgoe_only():
    from types import SimpleNamespace

    from model.baselines import build_model

    meta = TableMeta(10, 10, 3, 3, hops=2, num_tasks=2, recent_len=3, tasks=("a", "b"))
    opts = ModelOptions(embed_dim=4, expert_sizes=[16, 8], mgoe_expert_sizes=[6, 5], tower_hidden=4)
    mgoe, mmoe = build_model("mgoe", meta, opts), build_model("mmoe", meta, opts)
    assert [w.shape[-1] for w in mgoe.fusion.task_experts.weights] == [6, 5]
    assert mgoe.towers.w1.weights[0].shape[1] == 5
    assert [w.shape[-1] for w in mmoe.experts.weights] == [16, 8]
    defaults = ModelOptions(embed_dim=4, expert_sizes=[16, 8], tower_hidden=4)
    assert [w.shape[-1] for w in build_model("mgoe", meta, defaults).fusion.task_experts.weights] == [16, 8]
    # read from the train settings when they carry the key, ignored (None) when they do not
    from mgoe_spark.config import load_config

    train = load_config().train
    assert ModelOptions.from_train_settings(train).mgoe_expert_sizes == getattr(train, "mgoe_expert_sizes", None)
    fake = SimpleNamespace(**{**vars(train), "mgoe_expert_sizes": [7, 3]})
    assert ModelOptions.from_train_settings(fake).mgoe_expert_sizes == [7, 3]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"attention": "neighbors", "recent_attention": True, "adjust_form": "tower"},
        {"attention": "off", "own_macro": False, "shared_expert_input": "task", "cascade": False},
        {"gate_input": "off"},
        {"neighbor_input": "all", "shared_expert_input": "task"},
        {"macro_neighbors": "edges"},
        {"macro_neighbors": "edges", "attention": "logit"},
        {"macro_neighbors": "edges", "attention": "neighbors", "attention_norm": True},
        {"attention_norm": True, "gate_input": "full", "lookup_norm": "tasks", "gamma_init": 0.5},
        {"attention": "neighbors", "attention_norm": True, "adjust_form": "tower", "lookup_norm": "tasks"},
        {"attention": "logit", "attention_key": "macro"},
        {"attention": "logit", "attention_norm": True, "attention_key": "macro", "macro_neighbors": "edges"},
        {"attention": "neighbors", "attention_norm": True, "attention_scale_init": 0.5, "attention_key": "macro"},
    ],
)
def test_mgoe_feature_major_path_matches_the_module_by_module_reference(options):
    # MGOE.forward builds c^t feature-major and keeps that layout through experts and towers; the reference
    # runs every module batch-major with the per-channel graph experts: same logits and gradients
    from model.baselines import build_model
    from tests.test_trainer_infer import META as meta
    from tests.test_trainer_infer import _batch

    torch.manual_seed(0)
    model = build_model("mgoe", meta, ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4, **options))
    batch = _sparse_edges(_batch(16))
    ref_model = copy.deepcopy(model)  # training-mode forwards move the batch-norm statistics: one copy each
    out, ref = model(batch), ref_model.forward_reference(batch)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        g, h = p.grad, q.grad
        g = g.to_dense() if g is not None and g.is_sparse else g
        h = h.to_dense() if h is not None and h.is_sparse else h
        assert (g is None) == (h is None), name
        if g is not None:
            torch.testing.assert_close(g, h, msg=name)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model.forward_reference(batch))


def _sparse_edges(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Macro edges as a sparse log has them: about half zero, and row 0 with no edge at all on either side."""
    g = torch.Generator().manual_seed(1)
    out = dict(batch)
    for key in ("user_edges", "item_edges"):
        e = batch[key] * (torch.rand(batch[key].shape, generator=g) < 0.5)
        e[0] = 0.0
        out[key] = e
    return out


@pytest.mark.parametrize("attention", ["off", "logit"])
def test_macro_neighbors_edges_mixes_only_the_macro_nodes_with_an_edge(attention):
    # Eq 15 over N(v): with 'edges', moving a zero-edge macro node's embedding leaves z unchanged, a row with
    # no edge gets z = 0; with 'all' (MacGNN's code) every macro node is mixed in at logit 0
    from model.baselines import build_model
    from tests.test_trainer_infer import META as meta
    from tests.test_trainer_infer import _batch

    batch = _sparse_edges(_batch(16))
    for mode in ("all", "edges"):
        torch.manual_seed(0)
        opts = ModelOptions(embed_dim=4, expert_sizes=[8, 4], attention=attention, macro_neighbors=mode)
        graph = build_model("mgoe", meta, opts).graph
        eu, ei = torch.randn(16, 4), torch.randn(16, 4)
        with torch.no_grad():
            z = graph(batch["user_edges"], batch["item_edges"], eu, ei)  # (B, G, C * o)
            # user hop 1 is keyed over item macros: zero the item macro embeddings no row-1 edge points to
            width = meta.k_item
            unused = batch["user_edges"][1, :width] == 0
            assert unused.any() and not unused.all()
            graph.macro_item.tables[:, unused] += 5.0
            moved = graph(batch["user_edges"], batch["item_edges"], eu, ei)
        o = z.shape[-1] // len(graph.channels)
        assert torch.equal(moved[1, :, :o], z[1, :, :o]) == (mode == "edges")
        assert (z[0].abs().sum() == 0) == (mode == "edges")  # row 0 has no macro neighbor on either side
        assert torch.isfinite(z).all()


@pytest.mark.parametrize("neighbor_input", ["task", "all"])
def test_neighbor_input_all_lets_each_task_read_the_other_tasks_recent_neighbors(neighbor_input):
    # Eq 19 (task): task t's task expert reads r^t only; all: r^1..r^T. Perturb task 0's recent items and
    # watch the bottom input of task 1 (shared_expert_input=task: no mean over tasks mixes them anyway)
    from model.baselines import build_model
    from tests.test_trainer_infer import META as meta
    from tests.test_trainer_infer import _batch

    torch.manual_seed(0)
    opts = ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4, neighbor_input=neighbor_input)
    model = build_model("mgoe", meta, opts).eval()
    batch = _batch(16)
    other = dict(batch, user_recent=batch["user_recent"].clone())
    other["user_recent"][:, 0] = (other["user_recent"][:, 0] % (meta.num_items - 1)) + 1
    with torch.no_grad():
        c, c2 = model.bottom_input(batch), model.bottom_input(other)
    width = model.graph.out_dim + 2 * 4 + (2 * meta.num_tasks * 4 if neighbor_input == "all" else 2 * 4) + 2 * 4
    assert c.shape == (16, meta.num_tasks, width)
    assert not torch.equal(c[:, 0], c2[:, 0])  # task 0 always reads its own neighbors
    assert torch.equal(c[:, 1], c2[:, 1]) == (neighbor_input == "task")


def test_dropout_drops_hidden_units_in_training_only_and_keeps_linear_outputs():
    torch.manual_seed(0)
    mlp = BatchedMLP(1, 3, [4000], "relu", dropout=0.3)
    x = torch.rand(8, 3) + 1.0
    with torch.no_grad():
        mlp.weights[0].abs_()  # every hidden unit positive: only dropout makes a zero
        mlp.eval()
        kept = mlp(x)
        mlp.train()
        dropped = mlp(x)
    assert (kept > 0).all()
    zero = dropped == 0
    assert 0.27 < zero.float().mean().item() < 0.33  # ~p of the units, a fresh mask per row
    torch.testing.assert_close(dropped[~zero], kept[~zero] / 0.7)  # inverted dropout: E[unit] unchanged
    head = BatchedMLP(1, 3, [5, 1], "relu", last_linear=True, dropout=0.9)
    head.eval()
    with torch.no_grad():
        head.weights[0].abs_()
        head.weights[1].copy_(torch.ones_like(head.weights[1]))
        head.biases[1].fill_(1.0)  # output = 1 + sum(hidden) >= 1 however many hidden units drop
        out_eval = head(x)
        head.train()
        out_train = head(x)
    assert not torch.equal(out_train, out_eval)  # its hidden layer drops ...
    assert (out_train >= 1).all()  # ... its linear output never does (a dropped one would read 0)
    with pytest.raises(ValueError, match="dropout"):
        BatchedMLP(1, 3, [4], dropout=1.0)


@pytest.mark.parametrize("name", ["mgoe", "mgoe_no_cascade", "mmoe", "ple", "esmm", "macgnn", "grec"])
def test_train_dropout_reaches_every_model_in_training_and_not_in_eval(name):
    from types import SimpleNamespace

    from mgoe_spark.config import load_config
    from model.baselines import build_model
    from tests.test_trainer_infer import META as meta
    from tests.test_trainer_infer import _batch

    train = load_config(overrides=["train.dropout=0.5"]).train
    opts = ModelOptions.from_train_settings(SimpleNamespace(**{**vars(train), "embed_dim": 4, "tower_hidden": 4}))
    opts.expert_sizes, opts.grec_noise = [8, 4], 0.0  # no routing noise: dropout is the only randomness
    assert opts.dropout == 0.5
    torch.manual_seed(0)
    model = build_model(name, meta, opts)
    torch.manual_seed(0)
    plain = build_model(name, meta, ModelOptions(**{**vars(opts), "dropout": 0.0}))
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    batch = _batch(32)
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), plain(batch))
    model.train(), plain.train()
    with torch.no_grad():
        torch.manual_seed(1)
        dropped = model(batch)
        torch.manual_seed(1)
        assert not torch.allclose(dropped, plain(batch))
        torch.manual_seed(1)
        torch.testing.assert_close(copy.deepcopy(plain)(batch), plain(batch))  # p = 0: deterministic in training


def test_id_dropout_blanks_own_ids_only_at_its_rate():
    from model.train import drop_ids

    n = 20_000
    batch = {
        "user_id": torch.arange(1, n + 1),
        "item_id": torch.arange(1, n + 1) * 2,
        "user_recent": torch.ones(n, 2, 3, dtype=torch.long),
    }
    assert drop_ids(batch, 0.0) is batch
    torch.manual_seed(0)
    out = drop_ids(batch, 0.25)
    for key, scale in (("user_id", 1), ("item_id", 2)):
        blank = out[key] == 0
        assert 0.23 < blank.float().mean().item() < 0.27, key
        assert torch.equal(out[key][~blank], (torch.arange(1, n + 1) * scale)[~blank])
    assert not torch.equal(out["user_id"] == 0, out["item_id"] == 0)  # independent masks
    assert out["user_recent"] is batch["user_recent"] and batch["user_id"].min() == 1  # input not modified


@pytest.mark.parametrize("shared_input", ["task", "mean"])
def test_expert_fusion_drops_expert_units_in_training_only(shared_input):
    from model.layers import ExpertFusion

    torch.manual_seed(0)
    fusion = ExpertFusion(3, 6, [8, 4], 2, 1, "dice", shared_input, dropout=0.5)
    plain = copy.deepcopy(fusion)
    plain.dropout = plain.shared_experts.dropout = plain.task_experts.dropout = 0.0
    c = torch.randn(16, 3, 6)
    with torch.no_grad():
        fusion.eval(), plain.eval()
        torch.testing.assert_close(fusion(c), plain(c))
        fusion.train(), plain.train()
        torch.manual_seed(1)
        dropped = fusion(c)
        assert not torch.allclose(dropped, plain(c))
