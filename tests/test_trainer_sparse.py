"""Sparse embedding updates: lazy Adam / row-wise Adagrad against dense references, only touched rows move,
row 0 stays zero, the optimizer's parameter groups, and the one-bag-per-table lookup of MicroEmbeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.baselines import build_model
from model.data import TableMeta
from model.mgoe import MicroEmbeddings, ModelOptions
from model.sparse_optim import RowWiseAdagrad, SparseRowAdam, build_optimizers, no_decay

META = TableMeta(num_users=30, num_items=20, k_user=3, k_item=4, hops=2, num_tasks=2, recent_len=3, tasks=("a", "b"))


def _loss(table: nn.Embedding, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((table(ids) - target) ** 2).sum()


def test_sparse_adam_equals_dense_adam_on_rows_touched_every_step():
    torch.manual_seed(0)
    init = torch.randn(8, 3)
    sparse, dense = nn.Embedding(8, 3, sparse=True), nn.Embedding(8, 3)
    for t in (sparse, dense):
        t.weight.data.copy_(init)
    opt_s = SparseRowAdam(sparse.parameters(), lr=0.05, weight_decay=0.1, skip_row=None)
    opt_d = torch.optim.Adam(dense.parameters(), lr=0.05, weight_decay=0.1)
    target = torch.randn(6, 3)
    for step in range(5):
        ids = torch.tensor([1, 2, 2, 3, 5, 1]) if step % 2 == 0 else torch.tensor([2, 1, 3, 5, 5, 3])
        for table, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            _loss(table, ids, target).backward()
            opt.step()
    touched = [1, 2, 3, 5]
    torch.testing.assert_close(sparse.weight[touched], dense.weight[touched], rtol=1e-6, atol=1e-6)
    # dense Adam with weight decay moved the rows no batch looked up; the sparse update left them alone
    untouched = [0, 4, 6, 7]
    assert torch.equal(sparse.weight[untouched], init[untouched])
    assert not torch.allclose(dense.weight[untouched], init[untouched])


def _lazy_adam_oracle(w0, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """numpy: per step, only rows with a gradient update; bias correction from the global step."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for step, g in enumerate(grads, start=1):
        rows = np.flatnonzero(np.abs(g).sum(1) > 0)
        gr = g[rows] + wd * w[rows]
        m[rows] = b1 * m[rows] + (1 - b1) * gr
        v[rows] = b2 * v[rows] + (1 - b2) * gr * gr
        w[rows] -= lr / (1 - b1**step) * m[rows] / (np.sqrt(v[rows]) / np.sqrt(1 - b2**step) + eps)
    return w


def test_sparse_adam_matches_lazy_oracle_and_skips_padding_row():
    torch.manual_seed(1)
    table = nn.Embedding(6, 2, sparse=True)
    with torch.no_grad():
        table.weight[0].zero_()
    w0 = table.weight.detach().numpy().copy()
    opt = SparseRowAdam(table.parameters(), lr=0.1, weight_decay=0.01)
    batches = [torch.tensor([0, 1, 1, 4]), torch.tensor([2, 0]), torch.tensor([4, 5, 0, 0])]
    grads = []
    for ids in batches:
        opt.zero_grad()
        (table(ids) * torch.arange(1.0, 1 + 2 * len(ids)).reshape(-1, 2)).sum().backward()
        g = table.weight.grad.to_dense().numpy().copy()
        g[0] = 0  # row 0's gradient is dropped
        grads.append(g)
        opt.step()
    np.testing.assert_allclose(table.weight.detach().numpy(), _lazy_adam_oracle(w0, grads, 0.1, 0.01), rtol=1e-5)
    assert torch.count_nonzero(table.weight[0]) == 0
    assert opt.state[table.weight]["step"] == 3


def test_rowwise_adagrad_oracle_and_state_is_one_float_per_row():
    table = nn.Embedding(5, 2, sparse=True)
    with torch.no_grad():
        table.weight.copy_(torch.arange(10.0).reshape(5, 2))
    opt = RowWiseAdagrad(table.parameters(), lr=0.5)
    ids = torch.tensor([1, 3, 3])
    table(ids).sum().backward()  # row 1: grad (1, 1); row 3: (2, 2)
    opt.step()
    s = opt.state[table.weight]["sum"]
    assert s.shape == (5,)
    torch.testing.assert_close(s, torch.tensor([0.0, 1.0, 0.0, 4.0, 0.0]))
    expect = torch.arange(10.0).reshape(5, 2)
    expect[1] -= 0.5 * 1 / (1 + 1e-8)
    expect[3] -= 0.5 * 2 / (2 + 1e-8)
    torch.testing.assert_close(table.weight.detach(), expect)


def test_parameter_groups_decay_weights_only():
    options = ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4, cascade=True, gate_input="micro")
    model = build_model("mgoe", META, options)
    opts = build_optimizers(model, lr=1e-3, weight_decay=0.1)
    adam, sparse = opts.parts
    assert isinstance(sparse, SparseRowAdam)
    tables = {id(model.micro.user.weight), id(model.micro.item.weight)}
    assert {id(p) for p in sparse.param_groups[0]["params"]} == tables
    decayed = {id(p) for g in adam.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    plain = {names[i] for g in adam.param_groups if g["weight_decay"] == 0 for i in map(id, g["params"])}
    assert {"towers.lam", "adjust.gamma", "bottom.gate.bias", "fusion.shared_experts.biases.0"} <= plain
    assert any(n.endswith("acts.0.alpha") for n in plain)
    assert id(model.fusion.shared_experts.weights[0]) in decayed and id(model.graph.macro_user.tables) in decayed
    total = sum(len(g["params"]) for o in opts.parts for g in o.param_groups)
    assert total == len(list(model.parameters()))
    assert no_decay("x.bias", nn.Parameter(torch.zeros(3))) and not no_decay("w", nn.Parameter(torch.zeros(2, 2)))


@pytest.mark.parametrize("name", ["mgoe", "mmoe", "macgnn"])
def test_training_step_touches_only_looked_up_rows_and_row0_stays_zero(name):
    torch.manual_seed(0)
    model = build_model(name, META, ModelOptions(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4))
    opts = build_optimizers(model, lr=0.01, weight_decay=0.1)
    B, T, L = 8, 2, 3
    batch = {
        "user_id": torch.tensor([1, 2, 3, 0, 1, 2, 3, 4]),
        "item_id": torch.tensor([1, 1, 2, 2, 3, 3, 0, 5]),
        "user_recent": torch.randint(0, 7, (B, T, L)),
        "item_recent": torch.randint(0, 9, (B, T, L)),
        "user_edges": torch.rand(B, 7),
        "item_edges": torch.rand(B, 7),
        "lookup": torch.rand(B, T),
        "labels": (torch.rand(B, T) > 0.5).float(),
        "user_macro": torch.ones(B, dtype=torch.long),
        "item_macro": torch.ones(B, dtype=torch.long),
        "cold_start": torch.zeros(B, dtype=torch.bool),
    }
    before_u, before_i = model.micro.user.weight.detach().clone(), model.micro.item.weight.detach().clone()
    for _ in range(2):
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"])
        opts.zero_grad()
        loss.backward()
        assert model.micro.user.weight.grad.is_sparse
        opts.step()
    model.micro.check_padding()
    users = {1, 2, 3, 4} | ({int(x) for x in batch["item_recent"].flatten()} if name != "mmoe" else set())
    items = {1, 2, 3, 5} | ({int(x) for x in batch["user_recent"].flatten()} if name != "mmoe" else set())
    for table, before, touched in ((model.micro.user, before_u, users), (model.micro.item, before_i, items)):
        moved = set(torch.nonzero((table.weight.detach() != before).any(1)).flatten().tolist())
        assert moved == touched - {0}


def test_lookup_is_one_bag_per_table_and_matches_separate_lookups():
    torch.manual_seed(4)
    micro = MicroEmbeddings(META, 3)
    uid, iid = torch.tensor([1, 0, 5]), torch.tensor([2, 3, 0])
    ur, ir = torch.randint(0, 20, (3, 2, 3)), torch.randint(0, 30, (3, 2, 3))
    eu, ei, ru, ri = micro.lookup(uid, iid, ur, ir)
    torch.testing.assert_close(eu, micro.user.weight[uid])
    torch.testing.assert_close(ei, micro.item.weight[iid])
    torch.testing.assert_close(ru, micro.item.weight[ur].sum(2))  # row 0 is zero: padding adds nothing
    torch.testing.assert_close(ri, micro.user.weight[ir].sum(2))
    assert torch.count_nonzero(eu[1]) == 0
    with torch.no_grad():
        micro.user.weight[0, 1] = 1.0
    with pytest.raises(AssertionError, match="row 0"):
        micro.check_padding()


def test_dense_reference_setting_trains_every_row_with_dense_adam(tmp_path):
    from mgoe_spark.config import load_config
    from model.train import build_training

    cfg = load_config(profile="test", overrides=["train.sparse_embeddings=false"])
    model, opts = build_training("mgoe", cfg, META)
    assert not model.micro.user.sparse and model.micro.user.padding_idx == 0
    assert len(opts.parts) == 1 and isinstance(opts.parts[0], torch.optim.Adam)
    assert opts.parts[0].defaults["weight_decay"] == cfg.train.weight_decay
