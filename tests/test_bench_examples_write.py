"""bench.examples_write's blob stand-in carries exactly the bytes of the list values it replaces."""

from types import SimpleNamespace

from pyspark.sql import functions as F


def test_blobs_have_four_bytes_per_list_element(spark):
    from bench.examples_write import _blobs

    schema = SimpleNamespace(columns=[
        SimpleNamespace(name="user_id", type="int64"),
        SimpleNamespace(name="edges", type="list<list<float32>>"),
        SimpleNamespace(name="lookup", type="list<float32>"),
    ])  # fmt: skip
    df = spark.createDataFrame(
        [(1, [[0.5, 1.0], [2.0]], [1.0, 2.0, 3.0, 4.0]), (2, [[], [3.0, 4.0, 5.0, 6.0]], [])],
        "user_id long, edges array<array<float>>, lookup array<float>",
    )
    out = _blobs(df, schema)
    assert dict(out.dtypes) == {"user_id": "bigint", "edges": "binary", "lookup": "binary"}
    got = out.select("user_id", F.octet_length("edges"), F.octet_length("lookup")).orderBy("user_id").collect()
    assert [tuple(r) for r in got] == [(1, 12, 16), (2, 16, 0)]
