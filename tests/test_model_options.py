"""Issue 27 items 5-6: the model options that separate inputs from architecture and let components act.

Each test checks that its option changes the forward in the intended way when on and not when off (the
defaults are unchanged: the options are ablations to measure, see bench/model_ablation.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mgoe_spark.config import ConfigError, load_config
from model.baselines import build_model
from model.layers import MacroGraphBottom, MacroGraphExpert, lookup_over_tasks
from model.mgoe import ModelOptions
from tests.test_trainer_infer import META, _batch

OPTS = dict(embed_dim=4, expert_sizes=[8, 4], tower_hidden=4)


def _scores(norm: bool, scale: float = 1.0) -> torch.Tensor:
    torch.manual_seed(0)
    ex = MacroGraphExpert(groups=3, dim=10, head=10, out=10, norm=norm)
    bound = math.sqrt(6 / 20)  # Xavier-scale embeddings, as the tables start
    macro = (torch.rand(3, 20, 10) * 2 - 1) * bound * 0.1 * scale
    target = (torch.rand(256, 10) * 2 - 1) * bound * 0.1 * scale
    return ex.scores(macro, target)


def test_normalized_attention_q_k_term_is_order_one_at_init_and_scale_free():
    plain, normed = _scores(False), _scores(True)
    assert plain.abs().mean() < 0.02  # the plain q.k / sqrt(h) cannot act against edge logits of 0.5-9
    assert 0.3 < normed.std() < 3.0  # sqrt(h) * cos(q, k): std ~1 whatever the embeddings' scale
    torch.testing.assert_close(_scores(True, scale=50.0), normed)
    assert not torch.allclose(_scores(False, scale=50.0), plain)


def test_normalized_attention_temperature_is_learned_and_defaults_off():
    assert not ModelOptions().attention_norm and not hasattr(MacroGraphExpert(1, 4, 4, 4), "log_scale")
    torch.manual_seed(0)
    model = build_model("mgoe", META, ModelOptions(**OPTS, attention="logit", attention_norm=True))
    model(_batch(8)).sum().backward()
    grads = [ex.log_scale.grad for ex in model.graph.experts]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_zero_init_temperature_starts_as_attention_off_and_learns():
    # attention_scale_init=0: the normalized q.k term is 0 at init, so MGOE's outputs equal attention=off
    # exactly; the temperature itself takes a gradient (W_Q, W_K none until it moves), and once it moves the
    # attention acts
    def model(**kw):
        torch.manual_seed(0)
        return build_model("mgoe", META, ModelOptions(**OPTS, **kw))

    zero = model(attention="logit", attention_norm=True, attention_scale_init=0.0)
    off = model(attention="off")
    batch = _batch(8)
    assert all(not hasattr(ex, "log_scale") and ex.temperature().eq(0).all() for ex in zero.graph.experts)
    torch.testing.assert_close(zero(batch), off(batch))
    zero(batch).sum().backward()
    assert all(ex.scale.grad.abs().sum() > 0 and ex.wq.grad.abs().sum() == 0 for ex in zero.graph.experts)
    with torch.no_grad():
        for ex in zero.graph.experts:
            ex.scale.fill_(2.0)
    assert not torch.allclose(zero(batch), off(batch))


@pytest.mark.parametrize("model_name", ["mgoe", "macgnn", "mmoe_full"])
def test_macro_keyed_attention_reads_the_macro_ids_not_the_node_ids(model_name):
    # attention_key='macro': the macro attention compares the neighbors with the target's own macro embedding,
    # so two rows with the same macro ids and different node embeddings get the same graph part (with 'id'
    # they do not); a node without a macro node (id 0) gets scores 0, i.e. the edge weights alone
    torch.manual_seed(0)
    base = dict(OPTS, attention="logit", attention_norm=True)
    batch = _batch(8)
    eu, ei = torch.randn(8, 4), torch.randn(8, 4)
    other = (torch.randn(8, 4), torch.randn(8, 4))
    for key in ("id", "macro"):
        graph = build_model(model_name, META, ModelOptions(**base, attention_key=key)).graph
        um, im = batch["user_macro"], batch["item_macro"]
        out = [graph(batch["user_edges"], batch["item_edges"], *graph.keys(u, i, um, im)) for u, i in [(eu, ei), other]]
        assert torch.allclose(out[0], out[1]) is (key == "macro")
    graph = build_model("mgoe", META, ModelOptions(**base, attention_key="macro")).graph
    off = build_model("mgoe", META, ModelOptions(**OPTS, attention="off", attention_norm=True)).graph
    off.load_state_dict(graph.state_dict())
    zero = torch.zeros_like(batch["user_macro"])
    torch.testing.assert_close(
        graph(batch["user_edges"], batch["item_edges"], *graph.keys(eu, ei, zero, zero)),
        off(batch["user_edges"], batch["item_edges"], eu, ei),
    )


def test_full_gate_input_reads_the_macro_part_only_when_on():
    torch.manual_seed(0)
    eu, ei, mge = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3, 6)
    other = mge + torch.randn_like(mge)
    for full in (False, True):
        bottom = MacroGraphBottom(tasks=3, dim=4, full_dim=6 if full else 0)
        assert bottom.gate.in_features == 8 + (18 if full else 0)
        same = torch.allclose(bottom.gates(eu, ei, mge), bottom.gates(eu, ei, other))
        assert same is not full
        # the feature-major path is the same function
        fm = bottom.forward_fm(mge.permute(1, 2, 0), eu, ei)
        torch.testing.assert_close(fm.permute(2, 0, 1), bottom(mge, eu, ei))


def test_gates_off_give_each_task_its_own_macro_expert():
    torch.manual_seed(0)
    eu, ei, mge = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3, 6)
    off = MacroGraphBottom(tasks=3, dim=4, off=True)
    assert off.gate is None and not list(off.parameters())
    torch.testing.assert_close(off(mge, eu, ei), mge)  # x^t = MGE^t
    torch.testing.assert_close(off.gates(eu, ei), torch.eye(3).expand(5, -1, -1))
    torch.testing.assert_close(off.forward_fm(mge.permute(1, 2, 0), eu, ei), mge.permute(1, 2, 0))
    on = MacroGraphBottom(tasks=3, dim=4)
    assert not torch.allclose(on(mge, eu, ei), mge)  # a gate mixes the experts
    assert build_model("mgoe", META, ModelOptions(**OPTS, gate_input="off")).bottom.gate is None


def test_mgoe_gate_input_option_builds_the_full_gate():
    assert build_model("mgoe", META, ModelOptions(**OPTS, gate_input="micro")).bottom.gate.in_features == 8
    assert build_model("mgoe", META, ModelOptions(**OPTS)).bottom.gate is None  # off by default (issue 27)
    full = build_model("mgoe", META, ModelOptions(**OPTS, gate_input="full"))
    assert full.bottom.full and full.bottom.gate.in_features == 8 + 2 * full.graph.out_dim


def test_lookup_over_tasks_hand_computed():
    lookup = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 0.0], [0.25, 0.5, 1.0]])
    recent = torch.zeros(3, 3, 4, dtype=torch.long)
    recent[0, 0, :2] = 1  # 2 click items -> n = 1; 1 cart item -> n = 1; no buy
    recent[0, 1, :1] = 1
    recent[2, :, :] = 1  # 4 items each: n = 1, 2, 4
    out = lookup_over_tasks(lookup, recent)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [1 / 7, 2 / 7, 4 / 7]]))


def test_mgoe_lookup_norm_changes_only_what_reads_the_lookup():
    batch = _batch(16)
    outs = {}
    for norm in ("macros", "tasks"):
        torch.manual_seed(0)
        for name in ("mgoe", "mgoe_no_adjust"):
            model = build_model(name, META, ModelOptions(**OPTS, gamma_init=0.5, lookup_norm=norm)).eval()
            with torch.no_grad():
                outs[name, norm] = model(batch)
    assert not torch.allclose(outs["mgoe", "macros"], outs["mgoe", "tasks"])
    torch.testing.assert_close(outs["mgoe_no_adjust", "macros"], outs["mgoe_no_adjust", "tasks"])


def _depends_on(name: str, key: str, **options) -> bool:
    torch.manual_seed(0)
    model = build_model(name, META, ModelOptions(**OPTS, **options)).eval()
    batch = _batch(16)
    other = dict(batch)
    if key.endswith("_macro"):
        other[key] = (batch[key] % 3) + 1  # other macro ids, none cold
        batch = {**batch, key: torch.ones_like(batch[key])}
    elif key.endswith("_edges"):
        other[key] = batch[key].flip(-1) * 3
    else:  # recent lists: another row's (a flip along L keeps the sum)
        other[key] = batch[key].roll(1, dims=0)
    with torch.no_grad():
        return not torch.allclose(model(batch), model(other))


def test_macgnn_own_macro_option_reads_the_node_macro_ids():
    assert not _depends_on("macgnn", "user_macro")
    assert not _depends_on("macgnn", "item_macro")
    assert _depends_on("macgnn", "user_macro", macgnn_own_macro=True)
    assert _depends_on("macgnn", "item_macro", macgnn_own_macro=True)


@pytest.mark.parametrize("key", ["user_edges", "item_edges", "user_recent", "item_recent", "user_macro", "item_macro"])
def test_mmoe_full_reads_mgoe_inputs_and_mmoe_does_not(key):
    assert _depends_on("mmoe_full", key)
    assert not _depends_on("mmoe", key)


def test_the_options_are_train_config_keys_with_checked_values():
    train = load_config(
        overrides=[
            "train.attention_norm=true",
            "train.gate_input=full",
            "train.lookup_norm=tasks",
            "train.macgnn_own_macro=true",
        ]
    ).train
    opts = ModelOptions.from_train_settings(train)
    assert (opts.attention_norm, opts.gate_input, opts.lookup_norm, opts.macgnn_own_macro) == (
        True,
        "full",
        "tasks",
        True,
    )
    for bad in ("train.gate_input=all", "train.lookup_norm=users"):
        with pytest.raises(ConfigError):
            load_config(overrides=[bad])


def test_every_option_has_a_row_in_the_ablation_bench():
    from bench.model_ablation import SETTINGS

    overrides = [o for _, (_, over) in SETTINGS.items() for o in over]
    for key in ("attention_norm=true", "gate_input=full", "lookup_norm=tasks", "macgnn_own_macro=true"):
        assert f"train.{key}" in overrides, key
    assert any(model == "mmoe_full" for model, _ in SETTINGS.values())
    assert not [name for name in SETTINGS if "," in name]  # --only splits on commas


ALL_ON = dict(attention_norm=True, gate_input="full", lookup_norm="tasks", macgnn_own_macro=True, gamma_init=0.5)


@pytest.mark.parametrize("name", ["mgoe", "macgnn", "mmoe_full"])
def test_options_rebuild_from_a_checkpoint_and_export(name, tmp_path):
    import dataclasses

    from model.export import export_model, load_scorer

    torch.manual_seed(0)
    opts = ModelOptions(**OPTS, **ALL_ON)
    model = build_model(name, META, opts).eval()
    again = build_model(name, META, ModelOptions(**dataclasses.asdict(opts))).eval()  # what a checkpoint stores
    again.load_state_dict(model.state_dict())
    batch, other = _batch(12), _batch(5, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(again(batch), model(batch))
        scorer, _ = load_scorer(export_model(model, batch, tmp_path / f"{name}.pt2", {"model": name}))
        torch.testing.assert_close(scorer(other), torch.sigmoid(model(other)), rtol=1e-5, atol=1e-6)
