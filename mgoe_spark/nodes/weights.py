"""Preference-based node weights (SPEC 4.3, Eq 8) [reconstructed].

For a node v with row x_v of S_U = S S^T (users; items use S_I = S^T S)::

    A_v = sum_{j != v} x_vj * 1[x_vj > b]
    w_v = w_high if A_v > theta_high;  w_low if A_v < theta_low;  1 otherwise

- The diagonal is excluded everywhere: x_vv = sum_i s_vi^2 is a node's own activity, not a preference it
  shares with another node, and SPEC defines b over the off-diagonal entries, so A uses the same entries.
- b: ``weights.b`` if set, else the median of the non-zero off-diagonal entries of S_U. Both (v, j) and
  (j, v) are entries of the symmetric matrix, so each unordered pair counts twice (it does not move the
  median). All scores are > 0, so every 2-hop pair gives a non-zero entry.
- theta_low / theta_high: the ``q_low`` / ``q_high`` quantiles of A over the nodes of that side (every node
  with a non-zero in S, A = 0 included). Strict inequalities: with many A = 0 and theta_low = 0 nobody is
  below theta_low.
- Quantiles are Spark's ``percentile_approx`` with relative rank error ``quantile_rel_error`` (accuracy
  1 / rel_error); ``rel_error = 0`` asks for the exact lower quantile (smallest value with at least
  ceil(q * n) values <= it), which keeps every value in one task's memory: for tests and small data only.
  b's quantile runs on a seeded uniform sample of about (0.5 / rel_error)^2 entries (rank standard deviation
  rel_error), not on all of them: S_U has far more entries than there are nodes.
- ``enabled = False`` (the "w/o preference" ablation): every weight is 1, strength 0, nothing is computed.

Entries of S_U need 2-hop pairs (v, j) through shared items. A hot item with deg users has deg^2 of them,
so each item keeps at most D = ``neighbor_cap`` of its users (chosen by a seeded hash rank, the same on
any cluster) and A is computed exactly on that capped matrix S_D. That makes A an estimate whenever an item
has more than D users: contributions through a hot item are dropped for the pairs not sampled (biased low
for users of hot items; no rescaling, so entries keep their natural scale for the b threshold). With no item
above the cap it is Eq 8 exactly. Items symmetric: at most D items per user.

Complexity (users; items symmetric), with m_i = min(deg_i, D): the cap is a per-item top-D by hash,
O(nnz log D) with Spark's window group limit (partial top-D before the shuffle). Each capped edge (v, i)
is then joined with item i's capped user list (O(nnz) rows holding sum_i m_i^2 <= D * nnz list entries:
the 2-hop paths), shuffled by (v, bucket), sorted by i and folded per (v, j) in numpy as the rows stream
(:func:`gram_rows`): a worker holds one Arrow batch, one chunk of path entries and the running sums of
one node, O(distinct partners), never a node's rows, whatever its degree. A node with more than
``PATHS_PER_TASK`` paths is spread over several buckets (tasks) by a hash of i and its partial sums
merged afterwards. The Gram rows (node, x array) are persisted once and feed both b and A. The
quantiles are single passes over a bounded sample / the nodes; the driver sees a handful of numbers.
"""

from __future__ import annotations

import math
from typing import Literal

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mgoe_spark.core import rand
from mgoe_spark.core.names import SIDES
from schemas.tables import NODE_WEIGHTS

Side = Literal["user", "item"]
_KEYS = {"user": ("user_id", "item_id"), "item": ("item_id", "user_id")}
"""side -> (the node column of that side, the shared middle column of its 2-hop paths)."""
_MAX_ACCURACY = 2**31 - 1


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"weights: side must be one of {SIDES}, got {side!r}")


def _accuracy(rel_error: float) -> int:
    """``percentile_approx`` accuracy for a relative rank error (0 -> the largest: exact for n < 2^31)."""
    if not 0 <= rel_error < 1 or math.isnan(rel_error):
        raise ValueError(f"weights: quantile_rel_error must be in [0, 1), got {rel_error!r}")
    return _MAX_ACCURACY if rel_error == 0 else min(_MAX_ACCURACY, max(1, round(1 / rel_error)))


def capped_edges(scores: DataFrame, side: Side, cap: int, seed: int) -> DataFrame:
    """S restricted to at most ``cap`` nodes of ``side`` per middle node: ``(node, mid, score)``.

    For ``side='user'``: each item keeps the ``cap`` users with the smallest hash(seed, user, item) (ties by
    user id), a seeded uniform sample without replacement, independent of partitioning.
    """
    _check_side(side)
    if not isinstance(cap, int) or cap < 1:
        raise ValueError(f"weights: neighbor_cap must be a positive integer, got {cap!r}")
    node, mid = _KEYS[side]
    edges = scores.select(F.col(node).cast("long").alias("node"), F.col(mid).cast("long").alias("mid"), "score")
    key = rand.uniform(seed, f"cap_{side}", F.col("node"), F.col("mid"))
    rank = F.row_number().over(Window.partitionBy("mid").orderBy(key, F.col("node")))
    return edges.withColumn("_rank", rank).where(F.col("_rank") <= cap).drop("_rank")


def two_hop_lists(scores: DataFrame, side: Side, cap: int, seed: int) -> DataFrame:
    """Each capped edge (v, mid) with the capped list of ``mid``'s nodes: ``(node, mid, score, partners,
    partner_scores)``, where the lists hold up to ``cap`` (node, score) of ``mid``, v itself included.

    The lists' total length is sum_mid m^2 with m = min(deg(mid), cap), i.e. every 2-hop path v - mid - j
    of S_D (plus the m self-paths j = v, dropped later); exposed so tests can count it. One shuffle of the
    capped edges by ``mid`` for the lists, one join (broadcast when the lists are small).
    """
    e = capped_edges(scores, side, cap, seed)
    return e.join(_partner_lists(e), on="mid").select("node", "mid", "score", "partners", "partner_scores")


def _partner_lists(edges: DataFrame) -> DataFrame:
    """(mid, partners, partner_scores): the capped nodes of each mid, at most ``cap`` per row."""
    return edges.groupBy("mid").agg(
        F.collect_list("node").alias("partners"), F.collect_list("score").alias("partner_scores")
    )


PATHS_PER_TASK = 4_000_000
"""Path entries one task folds for one node before that node's work is spread over more tasks."""
FOLD_ENTRIES = 1 << 20
"""Path entries a worker expands at once (rows of a batch are folded in chunks of about this many)."""


def _group_starts(v, b):
    """Indices where a new (node, bucket) group starts in entries grouped by (node, bucket)."""
    import numpy as np

    return np.flatnonzero(np.r_[True, (v[1:] != v[:-1]) | (b[1:] != b[:-1])])


def _emit_partials(v, b, nb, j, x):
    """Summed entries grouped by (node, bucket), partners in id order -> one ``_PARTIAL_SCHEMA`` Arrow batch,
    one row per group (None when there are no entries). ``partners`` is null for a node in one bucket:
    partner ids are only kept where a merge needs them. O(entries), zero-copy list offsets."""
    import numpy as np
    import pyarrow as pa

    if len(v) == 0:
        return None
    out_schema = pa.schema(
        [
            ("node", pa.int64()),
            ("bucket", pa.int32()),
            ("buckets", pa.int32()),
            ("partners", pa.list_(pa.int64())),
            ("x", pa.list_(pa.float64())),
        ]
    )
    starts = _group_starts(v, b)
    offsets = pa.array(np.r_[starts, len(v)].astype(np.int32))
    spread = nb[starts] > 1
    if spread.any():  # partner ids only where a merge needs them
        mask = pa.array(~spread)
        partners = pa.ListArray.from_arrays(offsets, pa.array(j, pa.int64()), mask=mask)
    else:
        partners = pa.nulls(len(starts), pa.list_(pa.int64()))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(v[starts], pa.int64()),
            pa.array(b[starts], pa.int32()),
            pa.array(nb[starts], pa.int32()),
            partners,
            pa.ListArray.from_arrays(offsets, pa.array(x, pa.float64())),
        ],
        schema=out_schema,
    )


def _path_entries(rows):
    """Two-hop list rows -> their path entries ``(v, b, nb, j, x)``: one per (row, partner j) with
    x = s(v, mid) * s(j, mid), the self-paths j = v dropped. O(entries) numpy, one copy."""
    import numpy as np

    node = rows.column("node").to_numpy()
    bucket = rows.column("bucket").to_numpy()
    nbuckets = rows.column("buckets").to_numpy()
    partners = rows.column("partners").combine_chunks()
    pscores = rows.column("partner_scores").combine_chunks()
    lengths = partners.value_lengths().to_numpy(zero_copy_only=False)
    v = np.repeat(node, lengths)
    b = np.repeat(bucket, lengths)
    nb = np.repeat(nbuckets, lengths)
    j = partners.flatten().to_numpy()
    x = np.repeat(rows.column("score").to_numpy(), lengths) * pscores.flatten().to_numpy()
    keep = j != v
    return v[keep], b[keep], nb[keep], j[keep], x[keep]


def _with_carry(v, b, nb, j, x, carry):
    """The entries with the carried group's running sums ``(node, bucket, buckets, j, x)`` entering first."""
    import numpy as np

    cv, cb, cnb, cj, cx = carry
    n = len(cj)
    v = np.r_[np.full(n, cv, np.int64), v]
    b = np.r_[np.full(n, cb, b.dtype), b]
    nb = np.r_[np.full(n, cnb, nb.dtype), nb]
    return v, b, nb, np.r_[cj, j], np.r_[cx, x]


def _sum_per_partner(v, b, nb, j, x):
    """Entries grouped by (node, bucket) -> one entry per (node, bucket, partner) in partner-id order, x summed
    sequentially in arrival order (carry first, then mid order). One stable sort: O(entries log entries)."""
    import numpy as np

    # The rows arrive sorted by (node, bucket), so (v, b) is already grouped: one stable sort on
    # (group, partner) keeps, per partner, the carry first and then mid order (2-3x a 3-key lexsort).
    group = np.r_[0, np.cumsum((v[1:] != v[:-1]) | (b[1:] != b[:-1]))].astype(np.int64)
    span = int(j.max()) + 1
    if int(group[-1]) < (2**62) // span:
        order = np.argsort(group * span + j, kind="stable")
    else:  # ids too large for one int64 key
        order = np.lexsort((j, group))
    v, b, nb, j, x = v[order], b[order], nb[order], j[order], x[order]
    starts = np.flatnonzero(np.r_[True, (v[1:] != v[:-1]) | (b[1:] != b[:-1]) | (j[1:] != j[:-1])])
    sums = np.add.reduceat(x, starts)
    return v[starts], b[starts], nb[starts], j[starts], sums


def _fold_chunk(rows, carry, last: bool):
    """Fold one chunk of two-hop list rows (after the ``carry`` of the previous chunk) -> (the partial Gram
    rows of its complete (node, bucket) groups as an Arrow batch or None, the new carry). Unless ``last``, the
    chunk's last group may continue in the next chunk: its running sums ``(node, bucket, buckets, j, x)`` are
    carried instead of emitted. Memory: the chunk's path entries."""
    v, b, nb, j, x = _path_entries(rows)
    if carry is not None:  # the running sums of the carried group enter first
        v, b, nb, j, x = _with_carry(v, b, nb, j, x, carry)
    if len(v) == 0:
        return None, None
    v, b, nb, j, sums = _sum_per_partner(v, b, nb, j, x)
    carry = None
    if not last:  # the last group may continue in the next chunk: carry its sums
        tail = int(_group_starts(v, b)[-1])
        carry = (v[tail], b[tail], nb[tail], j[tail:], sums[tail:])
        v, b, nb, j, sums = v[:tail], b[:tail], nb[:tail], j[:tail], sums[:tail]
    return _emit_partials(v, b, nb, j, sums), carry


def _chunk_bounds(table, entries: int) -> list[int]:
    """Row bounds ``[0, ..., num_rows]`` cutting a table of two-hop list rows into chunks of about ``entries``
    path entries: a cut after each row where the running entry count crosses a multiple of ``entries``."""
    import numpy as np

    lengths = table.column("partners").combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    cuts = np.searchsorted(np.cumsum(lengths), np.arange(entries, int(lengths.sum()), entries))
    return [0, *sorted({int(c) + 1 for c in cuts if int(c) + 1 < table.num_rows}), table.num_rows]


def _fold_fn(entries: int = FOLD_ENTRIES):
    """mapInArrow: two-hop list rows sorted by (node, bucket, mid) -> ``(node, bucket, buckets, partners,
    x)``, the (node, bucket)'s summed off-diagonal Gram entries, partners in id order (``partners`` is
    null for a node in one bucket: nothing merges it, and the Gram rows keep only the values).

    Folds as it streams: the rows are expanded to path entries in chunks of about ``entries`` and summed
    per (node, bucket, partner); the last group of a chunk is carried into the next chunk as its partial
    sums (one entry per distinct partner, entering first), never as its rows. Memory: one Arrow batch
    plus one chunk plus O(distinct partners) of the carried group, whatever the degree. Per partner the
    contributions are summed sequentially in mid order (the carry is the running sum), so the result does
    not depend on batch or chunk boundaries. The work is done by module-level helpers (:func:`_fold_chunk`
    and below), which the workers import with this module.
    """

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        carry = None  # (node, bucket, buckets, j sorted, x)
        pending = None  # the batch's last chunk: folded with last=True if no batch follows
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if pending is not None:
                done, carry = _fold_chunk(pending, carry, last=False)
                if done is not None:
                    yield done
            table = pa.Table.from_batches([batch])
            bounds = _chunk_bounds(table, entries)
            for lo, hi in zip(bounds[:-2], bounds[1:-1], strict=True):
                done, carry = _fold_chunk(table.slice(lo, hi - lo), carry, last=False)
                if done is not None:
                    yield done
            pending = table.slice(bounds[-2], bounds[-1] - bounds[-2])
        if pending is not None:
            done, carry = _fold_chunk(pending, carry, last=True)
            if done is not None:
                yield done
        elif carry is not None:
            cv, cb, cnb, cj, cx = carry
            yield _emit_partials(np.full(len(cj), cv), np.full(len(cj), cb), np.full(len(cj), cnb), cj, cx)

    return fn


def _merge_fn():
    """mapInArrow: partial Gram rows of spread nodes sorted by (node, bucket) -> ``(node, x)``: the
    partials of a node summed per partner, in bucket order, one row at a time into a running sum.
    Memory: one partial row plus O(distinct partners) of the running sum."""

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        out_schema = pa.schema([("node", pa.int64()), ("x", pa.list_(pa.float64()))])
        cur, acc_j, acc_x = None, None, None

        def out(node, x):
            lists = pa.ListArray.from_arrays(pa.array([0, len(x)], pa.int32()), pa.array(x, pa.float64()))
            return pa.RecordBatch.from_arrays([pa.array([node], pa.int64()), lists], schema=out_schema)

        for batch in batches:
            nodes = batch.column("node").to_numpy()
            partners, xs = batch.column("partners"), batch.column("x")
            for r in range(batch.num_rows):
                j = partners[r].values.to_numpy()
                x = xs[r].values.to_numpy()
                if cur is not None and nodes[r] != cur:
                    yield out(cur, acc_x)
                    acc_j = None
                cur = int(nodes[r])
                if acc_j is None:
                    acc_j, acc_x = j, x
                    continue
                jj, xx = np.r_[acc_j, j], np.r_[acc_x, x]
                order = np.lexsort((np.arange(len(jj)), jj))  # running sum first, then this bucket
                jj, xx = jj[order], xx[order]
                starts = np.flatnonzero(np.r_[True, jj[1:] != jj[:-1]])
                acc_j, acc_x = jj[starts], np.add.reduceat(xx, starts)
        if cur is not None:
            yield out(cur, acc_x)

    return fn


GRAM_ROW_SCHEMA = "node long, x array<double>"
_PARTIAL_SCHEMA = "node long, bucket int, buckets int, partners array<bigint>, x array<double>"


def gram_rows(scores: DataFrame, side: Side, cap: int, seed: int, paths_per_task: int = PATHS_PER_TASK) -> DataFrame:
    """The non-zero off-diagonal entries of S_D S_D^T (users) / S_D^T S_D (items), one row per node:
    ``(node, x array<double>)`` (the row's non-zero values, in partner-id order).

    When some node's degree x cap exceeds ``paths_per_task`` (one max aggregate tells), each node's path
    count P_v = sum over its capped edges (v, mid) of m_mid is computed on the small edge rows (no lists),
    and a node with P_v > ``paths_per_task`` has its edges spread over
    ceil(P_v / paths_per_task) buckets by a hash of mid, so its work runs in that many tasks. The two-hop
    list rows are shuffled by (node, bucket), sorted by mid and folded per (node, bucket, partner) in numpy
    as they stream (:func:`_fold_fn`); the partials of spread nodes are then merged per node
    (:func:`_merge_fn`, a shuffle of at most buckets x distinct partners entries per spread node).
    Work O(sum_mid m^2 log); memory per task one Arrow batch + one chunk of FOLD_ENTRIES path entries +
    O(distinct partners) of one node, whatever its degree; no per-pair rows in Spark.
    """
    capped = capped_edges(scores, side, cap, seed).persist(StorageLevel.MEMORY_AND_DISK)  # read three times
    # Bound each node's paths by degree x cap (one number to the driver); only when some node may exceed
    # paths_per_task are the exact path counts computed and the hot nodes spread.
    worst = capped.groupBy("node").agg(F.count("*").alias("_deg")).agg(F.max("_deg")).first()[0] or 0
    if worst * cap <= paths_per_task:
        e = capped.select("*", F.lit(0).alias("bucket"), F.lit(1).alias("buckets"))
    else:
        sizes = capped.groupBy("mid").agg(F.count("*").alias("_m"))
        load = capped.join(sizes, "mid").groupBy("node").agg(F.sum("_m").alias("_paths"))
        buckets = F.greatest(F.lit(1), F.ceil(F.col("_paths") / F.lit(float(paths_per_task)))).cast("int")
        e = capped.join(load.select("node", buckets.alias("buckets")), "node")
        e = e.withColumn("bucket", F.pmod(F.xxhash64(F.lit(seed), F.col("mid")), F.col("buckets")).cast("int"))
    work = e.join(_partner_lists(capped), on="mid")
    work = work.select("node", "bucket", "buckets", "mid", "score", "partners", "partner_scores")
    partial = (
        work.repartition("node", "bucket")
        .sortWithinPartitions("node", "bucket", "mid")
        .mapInArrow(_fold_fn(), _PARTIAL_SCHEMA)
    )
    if worst * cap <= paths_per_task:
        return partial.select("node", "x")  # every node in one bucket: nothing to merge
    partial = partial.persist(StorageLevel.MEMORY_AND_DISK)  # read twice: single-bucket rows, spread partials
    single = partial.where(F.col("buckets") == 1).select("node", "x")
    spread = partial.where(F.col("buckets") > 1).repartition("node").sortWithinPartitions("node", "bucket")
    return single.unionByName(spread.mapInArrow(_merge_fn(), GRAM_ROW_SCHEMA))


def gram_entries(scores: DataFrame, side: Side, cap: int, seed: int, paths_per_task: int = PATHS_PER_TASK) -> DataFrame:
    """The entries of :func:`gram_rows` as ``(node, x)`` rows (for tests and inspection)."""
    return gram_rows(scores, side, cap, seed, paths_per_task).select("node", F.explode("x").alias("x"))


def _list_parts(x):
    """(flat values, row lengths, row starts in the flat values) of an Arrow list<double> column."""
    import numpy as np

    x = x.combine_chunks() if hasattr(x, "combine_chunks") else x
    lengths = x.value_lengths().to_numpy(zero_copy_only=False)
    values = x.flatten().to_numpy(zero_copy_only=False)
    return values, lengths, np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)


def _sample_fn(stride: int):
    """mapInArrow: ``(x, _offset)`` rows -> ``(x)``: entry i of a row is kept when (i + offset) % stride == 0.
    Vectorized per Arrow batch; memory one batch."""

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        for batch in batches:
            values, lengths, starts = _list_parts(batch.column("x"))
            index = np.arange(len(values)) - np.repeat(starts, lengths)
            keep = (index + np.repeat(batch.column("_offset").to_numpy(), lengths)) % stride == 0
            yield pa.RecordBatch.from_arrays([pa.array(values[keep], pa.float64())], names=["x"])

    return fn


def _strength_fn(b: float | None):
    """mapInArrow: ``(node, x)`` Gram rows -> ``(node, A)``: A = the sum of the row's entries above ``b``
    (0 where none is, or where ``b`` is None). Vectorized per Arrow batch; memory one batch."""

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        for batch in batches:
            values, lengths, starts = _list_parts(batch.column("x"))
            strength = np.zeros(batch.num_rows)
            if b is not None and len(values):
                kept = np.where(values > b, values, 0.0)
                full = lengths > 0
                strength[full] = np.add.reduceat(kept, starts[full])
            yield pa.RecordBatch.from_arrays(
                [batch.column("node"), pa.array(strength, pa.float64())], names=["node", "strength"]
            )

    return fn


def _median_threshold(rows: DataFrame, rel_error: float, accuracy: int, seed: int) -> float | None:
    """b: the median of all entries of ``rows.x`` (None when there are none); one number to the driver.

    Exact (``rel_error = 0``): ``percentile_approx`` over every entry. Otherwise over a seeded systematic
    sample of the entries, of size about n = (0.5 / rel_error)^2 (the sample median's rank has standard
    deviation 0.5 / sqrt(n) = rel_error), so the quantile sketch sees a bounded number of values however
    many entries the Gram matrix has. Cost: one pass counting the entries, one pass sampling them (numpy,
    per Arrow batch), a quantile sketch of the sample.
    """
    if rel_error == 0:
        values = rows.select(F.explode("x").alias("x"))
    else:
        total = rows.agg(F.sum(F.size("x"))).first()[0] or 0  # one number
        target = (0.5 / rel_error) ** 2
        stride = max(1, int(total // target))
        # Systematic sample: every stride-th entry of each row from a seeded per-row offset. Rows list their
        # entries in partner-id order, unrelated to the values, so this is a uniform 1/stride sample.
        offset = F.pmod(F.xxhash64(F.lit(seed), F.lit("median"), F.col("node")), F.lit(stride))
        values = rows.select("x", offset.alias("_offset")).mapInArrow(_sample_fn(stride), "x double")
    return values.agg(F.percentile_approx("x", 0.5, accuracy).alias("b")).first()["b"]


def preference_weights(
    scores: DataFrame,
    side: Side,
    *,
    seed: int,
    enabled: bool = True,
    w_high: float = 2.0,
    w_low: float = 0.5,
    b: float | None = None,
    q_high: float = 0.75,
    q_low: float = 0.25,
    neighbor_cap: int = 200,
    quantile_rel_error: float = 0.001,
) -> DataFrame:
    """Eq 8 weights of every node of ``side`` that has a non-zero in S.

    Args:
        scores: S as PAIR_SCORES rows (``user_id, item_id, score``, score > 0).
        side: ``user`` (rows of S S^T) or ``item`` (rows of S^T S).
        seed: seeds the neighbor-cap sample (use ``cfg.sub_seed("weights")``).
        enabled: ``False`` is the ablation: weight 1, strength 0 for every node.
        w_high, w_low, b, q_high, q_low, neighbor_cap, quantile_rel_error: the ``weights.*`` settings.

    Returns:
        NODE_WEIGHTS ``(side, node_id, strength = A_v, weight = w_v)``; lazy. Cost: see the module docstring.
    """
    _check_side(side)
    if not 0 < q_low <= q_high < 1:
        raise ValueError(f"weights: need 0 < q_low <= q_high < 1, got q_low={q_low}, q_high={q_high}")
    if b is not None and not math.isfinite(b):
        raise ValueError(f"weights: b must be a finite number or null, got {b!r}")
    accuracy = _accuracy(quantile_rel_error)
    node = _KEYS[side][0]
    nodes = scores.select(F.col(node).cast("long").alias("node")).distinct()
    if not enabled:
        return nodes.select(
            F.lit(side).alias("side"),
            F.col("node").alias("node_id"),
            F.lit(0.0).alias("strength"),
            F.lit(1.0).alias("weight"),
        )

    rows = gram_rows(scores, side, neighbor_cap, seed).persist(StorageLevel.MEMORY_AND_DISK)
    # None when S_U has no off-diagonal non-zero (then A = 0 everywhere).
    threshold = _median_threshold(rows, quantile_rel_error, accuracy, seed) if b is None else float(b)
    a = rows.mapInArrow(_strength_fn(threshold), "node long, strength double")
    strength = nodes.join(a, on="node", how="left").select("node", F.coalesce("strength", F.lit(0.0)).alias("A"))

    thetas = strength.agg(F.percentile_approx("A", F.array(F.lit(q_low), F.lit(q_high)), accuracy).alias("q"))
    thetas = thetas.select(F.col("q")[0].alias("theta_low"), F.col("q")[1].alias("theta_high"))
    weight = (
        F.when(F.col("A") > F.col("theta_high"), F.lit(float(w_high)))
        .when(F.col("A") < F.col("theta_low"), F.lit(float(w_low)))
        .otherwise(F.lit(1.0))
    )
    return strength.crossJoin(F.broadcast(thetas)).select(
        F.lit(side).alias("side"),
        F.col("node").alias("node_id"),
        F.col("A").alias("strength"),
        weight.alias("weight"),
    )


def node_weights(scores: DataFrame, cfg, side: Side) -> DataFrame:
    """:func:`preference_weights` with the ``weights.*`` settings and ``weights`` sub-seed of a config."""
    w = cfg.weights
    return preference_weights(
        scores,
        side,
        seed=cfg.sub_seed("weights"),
        enabled=w.enabled,
        w_high=w.w_high,
        w_low=w.w_low,
        b=w.b,
        q_high=w.q_high,
        q_low=w.q_low,
        neighbor_cap=w.neighbor_cap,
        quantile_rel_error=w.quantile_rel_error,
    )


__all__ = [
    "NODE_WEIGHTS",
    "capped_edges",
    "gram_entries",
    "gram_rows",
    "node_weights",
    "preference_weights",
    "two_hop_lists",
]
