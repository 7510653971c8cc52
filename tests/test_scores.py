"""Pair scores (SPEC 4.1, Eq 6-7) against the formula, exhaustively on small task sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgoe_spark.nodes.scores import pair_scores
from schemas.tables import INTERACTIONS, PAIR_SCORES

TASK_NAMES = ["click", "fav", "cart", "buy"]
CUTOFF = 1_000


def oracle_score(tasks: set[str], order: list[str], beta: float) -> tuple[int, float]:
    """rho(C) = sum_{t_k in C} 2^(k-1) with 1-based k (SPEC 4.1), then Box-Cox (Eq 6)."""
    rho = sum(2 ** (k - 1) for k, t in enumerate(order, start=1) if t in tasks)
    score = math.log(rho + 1) if beta == 0 else ((rho + 1) ** beta - 1) / beta
    return rho, score


def make_events(spark, rows):
    schema = INTERACTIONS.spark(with_partition=False)
    return spark.createDataFrame([(u, i, t, ts, None) for u, i, t, ts in rows], schema)


@pytest.fixture(scope="module")
def combo_events(spark):
    """For n in 2..4 tasks: one user per non-empty task subset, with distractors the scores must ignore."""
    out = {}
    for n in (2, 3, 4):
        order = TASK_NAMES[:n]
        rows = []
        for size in range(1, n + 1):
            for subset in itertools.combinations(order, size):
                user = sum(1 << order.index(t) for t in subset)  # a unique id per subset
                for t in subset:
                    rows.append((user, 7, t, CUTOFF - 5))
                    rows.append((user, 7, t, CUTOFF))  # repeated event: C_ui is a set; ts == cutoff counts
                rows.append((user, 7, "impression", CUTOFF - 1))  # exposure pseudo-task: no preference bit
                for t in order:
                    rows.append((user, 7, t, CUTOFF + 1))  # after the cutoff: must not count
        out[n] = (order, make_events(spark, rows).cache())
    return out


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_task_combination_matches_formula(combo_events, n, beta):
    order, events = combo_events[n]
    got = {r.user_id: r for r in pair_scores(events, order, beta, cutoff=CUTOFF).collect()}
    subsets = [set(s) for size in range(1, n + 1) for s in itertools.combinations(order, size)]
    assert len(got) == len(subsets) == 2**n - 1
    for subset in subsets:
        rho, score = oracle_score(subset, order, beta)
        row = got[sum(1 << order.index(t) for t in subset)]
        assert row.item_id == 7
        assert row.mask == rho and row.rho == rho
        assert row.score == pytest.approx(score, rel=1e-12)
        assert row.score > 0


def test_beta_one_score_equals_rho_and_order_is_respected(spark):
    ev = make_events(spark, [(1, 1, "buy", 1), (1, 2, "click", 1), (2, 1, "fav", 1), (2, 1, "cart", 2)])
    got = {(r.user_id, r.item_id): (r.rho, r.score) for r in pair_scores(ev, TASK_NAMES, 1.0).collect()}
    assert got == {(1, 1): (8, 8.0), (1, 2): (1, 1.0), (2, 1): (6, 6.0)}
    # A different importance order changes the code: buy is now the least important task.
    rev = {(r.user_id, r.item_id): r.rho for r in pair_scores(ev, TASK_NAMES[::-1], 1.0).collect()}
    assert rev == {(1, 1): 1, (1, 2): 8, (2, 1): 2 + 4}


def test_binary_scores_are_one_graph_of_all_behaviors(spark):
    ev = make_events(spark, [(1, 1, "buy", 1), (1, 2, "click", 1), (2, 1, "fav", 1), (2, 1, "cart", 2)])
    got = {(r.user_id, r.item_id): (r.rho, r.score) for r in pair_scores(ev, TASK_NAMES, 1.0, binary=True).collect()}
    assert got == {(1, 1): (8, 1.0), (1, 2): (1, 1.0), (2, 1): (6, 1.0)}  # tasks kept in rho, score 1


def test_output_schema_and_only_scored_pairs(spark):
    ev = make_events(spark, [(1, 1, "impression", 1), (1, 2, "click", 5), (3, 3, "click", 9)])
    df = pair_scores(ev, TASK_NAMES, 0.5, cutoff=5)
    assert [f.name for f in df.schema.fields] == PAIR_SCORES.column_names
    expected = PAIR_SCORES.spark(with_partition=False)
    assert [f.dataType for f in df.schema.fields] == [f.dataType for f in expected.fields]
    assert [(r.user_id, r.item_id) for r in df.collect()] == [(1, 2)]


def test_bad_input_is_a_clear_error(spark):
    ev = make_events(spark, [(1, 1, "click", 1)])
    with pytest.raises(ValueError, match="lacks column"):
        pair_scores(ev.drop("task"), TASK_NAMES, 1.0)
    with pytest.raises(ValueError, match="repeated task"):
        pair_scores(ev, ["click", "click"], 1.0)
    with pytest.raises(ValueError, match="finite"):
        pair_scores(ev, TASK_NAMES, float("nan"))


events_strategy = st.lists(
    st.tuples(
        st.integers(1, 4),  # user
        st.integers(1, 4),  # item
        st.sampled_from([*TASK_NAMES, "impression"]),
        st.integers(0, 20),  # ts
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=events_strategy,
    cutoff=st.one_of(st.none(), st.integers(0, 20)),
    beta=st.floats(-2, 3, allow_nan=False).map(lambda b: round(b, 3)),
)
def test_property_matches_groupby_oracle(spark, rows, cutoff, beta):
    """Random logs: S equals a pure-Python group-by; scores are strictly increasing in rho for any beta."""
    got = {
        (r.user_id, r.item_id): (r.rho, r.score)
        for r in pair_scores(make_events(spark, rows), TASK_NAMES, beta, cutoff).collect()
    }
    sets: dict[tuple[int, int], set[str]] = {}
    for u, i, t, ts in rows:
        if (cutoff is None or ts <= cutoff) and t in TASK_NAMES:
            sets.setdefault((u, i), set()).add(t)
    assert set(got) == set(sets)
    for key, tasks in sets.items():
        rho, score = oracle_score(tasks, TASK_NAMES, beta)
        assert got[key][0] == rho
        assert got[key][1] == pytest.approx(score, rel=1e-9, abs=1e-12)
    by_rho = sorted({v for v in got.values()})
    scores = np.array([s for _, s in by_rho])
    assert np.all(np.diff(scores) > 0) and np.all(scores > 0)
