"""Bad input loses nothing, fuzzed: generated CSV files (random bytes, stray and doubled quotes, delimiters
inside fields, huge fields, unicode, CRLF, a BOM, blank lines, a truncated last line) through the real ingest.

Invariant: ingest does not crash, counts every line, and every line lands in ``interactions``, in
``rejects`` (with a reason) or in the duplicate count: ``rows_in = rows_out + rejects + duplicates``.
Each example is a whole file of up to 40 lines through run_ingest (Spark), so the example count is small.
"""

from __future__ import annotations

import re

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgoe_spark.config import load_config
from mgoe_spark.core.errors import UserError
from mgoe_spark.ingest.run import run_ingest

BEHAVIORS = ["pv", "fav", "cart", "buy"]
CODES = {"empty_line", "field_count", "empty_field", "bad_id", "bad_timestamp", "unknown_behavior", "bad_flag"}

# No line terminators inside a line: they end lines by definition (Spark splits on \n, \r\n and \r).
field_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
valid = st.builds(
    lambda u, i, c, b, t: f"{u},{i},{c},{b},{1_511_000_000 + t}",
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 3),
    st.sampled_from(BEHAVIORS),
    st.integers(0, 5),  # small pools: exact duplicates are likely
)
garbage = st.one_of(
    field_text,
    st.lists(field_text, min_size=1, max_size=7).map(",".join),  # wrong field counts, bad ids, unicode
    valid.map(lambda v: v.replace(",", ',"', 1)),  # a stray quote
    valid.map(lambda v: '"' + v.replace(",", '"",""', 1) + '"'),  # doubled quotes
    valid.map(lambda v: v.replace(",pv,", ',"p,v",')),  # a delimiter inside a quoted field
    st.integers(1, 6).map(lambda u: f"{u},{'9' * 20_000},1,pv,1511000000"),  # a huge field
    st.binary(max_size=20).map(lambda b: b.decode("latin-1").replace("\r", "").replace("\n", "")),
    st.just(""),  # a blank line
    st.just("1,2,3,pv"),  # a field short
)
line = st.one_of(valid, valid, garbage)


@st.composite
def csv_files(draw) -> tuple[bytes, int]:
    """(file bytes, number of lines as Spark's line reader counts them)."""
    lines = draw(st.lists(line, min_size=1, max_size=40))
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=len(lines), max_size=len(lines)))
    text = "".join(ln + end for ln, end in zip(lines, ends, strict=True))
    if len(lines[-1]) >= 2 and draw(st.booleans()):  # truncated: no terminator, cut mid-line
        cut = draw(st.integers(1, len(lines[-1]) - 1))
        text = text[: len(text) - len(lines[-1]) - len(ends[-1])] + lines[-1][:cut]
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode("utf-8"), len(lines)


def spark_line_count(data: bytes) -> int:
    """Lines in ``data`` as Hadoop's LineRecordReader splits them (\\n, \\r\\n, \\r; no empty last line)."""
    text = data.decode("utf-8")
    parts = re.split(r"\r\n|\r|\n", text)
    return len(parts) - 1 if parts[-1] == "" else len(parts)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(csv_files())
def test_every_line_lands_in_interactions_rejects_or_duplicates(spark, tmp_path_factory, generated):
    data, n_lines = generated
    assert spark_line_count(data) == n_lines  # the generator's own count agrees with the line reader's rules
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "in").mkdir()
    (tmp / "in" / "UserBehavior.csv").write_bytes(data)
    cfg = load_config(profile="test", overrides=[f"output.root={tmp / 'out'}", "input.format=taobao"])

    def table(name):
        part = tmp / "out" / name / "run_date=2026-01-01"
        return pq.read_table(part).to_pylist() if part.is_dir() else []

    try:
        summary = run_ingest(spark, cfg, str(tmp / "in"), "2026-01-01").metrics
    except UserError as exc:  # no valid line at all: a one-line error, and every line kept in rejects
        assert "no valid events" in str(exc)
        rejected = table("rejects")
        assert len(rejected) == n_lines and not table("interactions")
        assert all(r["reason"] and r["code"] in CODES for r in rejected), rejected
        return
    lines_in, rows_in = summary.get("lines_in", 0), summary.get("rows_in", 0)
    out, rejects, dups = summary.get("rows_out", 0), summary.get("rejects", 0), summary.get("duplicates", 0)
    assert lines_in == n_lines
    assert rows_in == lines_in - summary.get("header_lines", 0)
    assert rows_in == out + rejects + dups, summary
    assert len(table("interactions")) == out
    rejected = table("rejects")
    assert len(rejected) == rejects
    assert all(r["reason"] and r["code"] in CODES for r in rejected), rejected
