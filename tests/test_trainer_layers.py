"""MGOE building blocks against hand-computed tensors (SPEC 6, Eq 12-22)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from model.baselines import product_logit
from model.layers import (
    CascadeTowers,
    Dice,
    MacroGraphBottom,
    MacroGraphExpert,
    MicroNeighbors,
    TaskAdjustment,
    log_smoothed_weights,
)


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
    # scores = (ln 2, 0) -> alpha = (2/3, 1/3); with w = (1/2, 1/2): z = 1/3 e_1 + 1/6 e_2.
    macro = torch.eye(2).unsqueeze(0)
    target = torch.tensor([[math.sqrt(2.0) * math.log(2.0), 0.0]])
    w = torch.tensor([[0.5, 0.5]])
    ex = _expert("neighbors")
    torch.testing.assert_close(ex.alpha(macro, target), torch.tensor([[[2 / 3, 1 / 3]]]))
    torch.testing.assert_close(ex(macro, target, w), torch.tensor([[[1 / 3, 1 / 6]]]))
    # attention off (the MacGNN code): alpha = 1, z = sum_m w_m W_V e_m
    torch.testing.assert_close(_expert("off")(macro, target, w), torch.tensor([[[0.5, 0.5]]]))


def test_macro_attention_matches_loop_for_several_tasks():
    torch.manual_seed(0)
    G, K, d, h, o, B = 3, 5, 4, 3, 2, 6
    ex = MacroGraphExpert(G, d, h, o)
    macro, target = torch.randn(G, K, d), torch.randn(B, d)
    w = torch.softmax(torch.randn(B, K), -1)
    out = ex(macro, target, w)
    for g in range(G):
        for b in range(B):
            q = macro[g] @ ex.wq[g]
            k = target[b] @ ex.wk[g]
            alpha = torch.softmax(q @ k / math.sqrt(h), 0)
            z = ((w[b] * alpha).unsqueeze(1) * (macro[g] @ ex.wv[g])).sum(0)
            torch.testing.assert_close(out[b, g], z)


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
    adj = TaskAdjustment(2, enabled=True)
    with torch.no_grad():
        adj.gamma.copy_(torch.tensor([2.0, 0.5]))
    logits, lookup = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, 1.0]])
    torch.testing.assert_close(torch.sigmoid(adj(logits, lookup)), torch.sigmoid(torch.tensor([[0.9, -0.5]])))
    off = TaskAdjustment(2, enabled=False)
    torch.testing.assert_close(off(logits, lookup), logits)
    assert len(list(off.parameters())) == 0


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
