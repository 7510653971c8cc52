"""Eq 8 weights with a user of degree 20k and an item of degree 20k, the Python workers capped at 512 MB
(``spark.executor.pyspark.memory``, an RLIMIT_AS on every worker): the 2-hop fold holds O(distinct
partners) per node and spreads a hot node over tasks, so it runs and matches a scipy oracle on S_D.

20k is enough: the 2-hop paths through the hot item number 20k^2 = 4e8 (about 6.4 GB as (long, long,
double) rows, 12x the cap), so any implementation that enumerates them in a Python worker fails under the
cap as surely as at 100k, for a fifth of the time (the pairs and the oracle grow with the degree)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.oracles import lower_quantile

REPO = Path(__file__).resolve().parents[1]
DEGREE = 20_000
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from mgoe_spark.config import load_config
    from mgoe_spark.core.session import get_spark
    from mgoe_spark.nodes.weights import capped_edges, preference_weights

    n, out = int(sys.argv[1]), sys.argv[2]
    conf = "{spark.ui.enabled: 'false', spark.executor.pyspark.memory: '512m', spark.sql.shuffle.partitions: '4'}"
    spark = get_spark(load_config(profile="test", overrides=["spark.conf=" + conf]).spark, app_name="weights-mem")
    rng = np.random.default_rng(1)
    # user 1 has every item, item 1 has every user; plus 3 random edges per user for 2-hop structure
    u = np.r_[np.ones(n, np.int64), np.arange(2, n + 1), rng.integers(2, n + 1, 3 * n)]
    i = np.r_[np.arange(1, n + 1), np.ones(n - 1, np.int64), rng.integers(2, n + 1, 3 * n)]
    pairs = np.unique(np.c_[u, i], axis=0)
    s = (pairs.sum(axis=1) % 7 + 1).astype(float)
    import pandas as pd
    frame = pd.DataFrame({"user_id": pairs[:, 0], "item_id": pairs[:, 1], "score": s})
    df = spark.createDataFrame(frame, "user_id long, item_id long, score double").repartition(4).cache()
    result = {"pairs": len(pairs)}
    for side in ("user", "item"):
        kept = capped_edges(df, side, 200, 5).collect()
        got = preference_weights(df, side, seed=5, neighbor_cap=200, quantile_rel_error=0.0).collect()
        result[side] = {"kept": [(r.node, r.mid, r.score) for r in kept],
                        "got": [(r.node_id, r.strength, r.weight) for r in got]}
    json.dump(result, open(out, "w"))
    spark.stop()
    """
)


def sparse_oracle(kept, nodes):
    """Eq 8 on the capped matrix S_D (rows = nodes of the side), scipy sparse, exact lower quantiles."""
    ids = {v: k for k, v in enumerate(sorted(nodes))}
    mids = {m: k for k, m in enumerate(sorted({m for _, m, _ in kept}))}
    rows = [ids[v] for v, _, _ in kept]
    cols = [mids[m] for _, m, _ in kept]
    s_d = sp.csr_matrix(([x for _, _, x in kept], (rows, cols)), shape=(len(ids), len(mids)))
    gram = (s_d @ s_d.T).tocoo()
    off = gram.row != gram.col
    r, x = gram.row[off], gram.data[off]
    b = lower_quantile(x, 0.5)
    a = np.bincount(r, weights=np.where(x > b, x, 0.0), minlength=len(ids))
    lo, hi = lower_quantile(a, 0.25), lower_quantile(a, 0.75)
    w = np.where(a > hi, 2.0, np.where(a < lo, 0.5, 1.0))
    return sorted(ids), a, w


@pytest.mark.slow
def test_hot_user_and_hot_item_under_a_512m_python_worker_cap(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(DEGREE), str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    for side in ("user", "item"):
        kept, got = result[side]["kept"], result[side]["got"]
        ids, a, w = sparse_oracle(kept, {n for n, _, _ in got})
        by_id = {n: (x, y) for n, x, y in got}
        assert sorted(by_id) == ids
        np.testing.assert_allclose([by_id[v][0] for v in ids], a, rtol=1e-9)
        np.testing.assert_array_equal([by_id[v][1] for v in ids], w)
    hot = max(sum(1 for n, _, _ in result["user"]["kept"] if n == 1), 0)
    assert hot > DEGREE / 2  # user 1 kept most of its edges: its 2-hop pass really is hot
