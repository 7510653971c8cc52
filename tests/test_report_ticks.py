"""Plots label macro ids with integer ticks (a bar chart of K=4 clusters once showed 1.5, 2.5, ...)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mgoe_spark.core.report import macro_id_ticks  # noqa: E402


def _ticks(ids: list[int]) -> list[float]:
    fig, ax = plt.subplots()
    ax.bar(ids, [1.0] * len(ids))
    macro_id_ticks(ax, ids)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    plt.close(fig)
    return ticks


def test_few_macro_ids_get_one_tick_each():
    assert _ticks([1, 2, 3, 4]) == [1, 2, 3, 4]


def test_many_macro_ids_get_integer_ticks():
    ticks = _ticks(list(range(1, 65)))
    assert 3 <= len(ticks) <= 13 and all(float(t).is_integer() for t in ticks)
