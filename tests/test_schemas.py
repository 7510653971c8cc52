"""Contract: for every table, the Spark schema and the pyarrow schema describe the same columns."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T

import schemas
from schemas import REGISTRY, RUN_DATE


def _arrow_of(spark_type: T.DataType) -> pa.DataType:
    simple = {
        T.ByteType: pa.int8(),
        T.IntegerType: pa.int32(),
        T.LongType: pa.int64(),
        T.FloatType: pa.float32(),
        T.DoubleType: pa.float64(),
        T.BooleanType: pa.bool_(),
        T.StringType: pa.string(),
    }
    if isinstance(spark_type, T.ArrayType):
        return pa.list_(_arrow_of(spark_type.elementType))
    return simple[type(spark_type)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_spark_and_arrow_schemas_agree(name):
    table = REGISTRY[name]
    spark_schema, arrow_schema = table.spark(), table.arrow()
    assert spark_schema.fieldNames() == arrow_schema.names
    assert spark_schema.fieldNames()[-1] == RUN_DATE
    for sf, af in zip(spark_schema.fields, arrow_schema, strict=True):
        assert _arrow_of(sf.dataType) == af.type, sf.name
        assert sf.nullable == af.nullable, sf.name


def test_every_table_is_exported():
    exported = {
        getattr(schemas, n).name for n in schemas.__all__ if isinstance(getattr(schemas, n), schemas.TableSchema)
    }
    assert exported == set(REGISTRY)


def test_bad_definitions_fail():
    with pytest.raises(ValueError, match="unknown logical type"):
        schemas.Column("x", "int128")
    with pytest.raises(ValueError, match="reserved"):
        schemas.TableSchema("bad", [schemas.Column(RUN_DATE, "string")])


def test_one_table_layout_for_the_writers_and_the_trainer():
    from mgoe_spark.core import storage
    from model import data
    from schemas import TRAINING_EXAMPLES, partition_path, run_date_of, table_path

    assert table_path("s3://b/mgoe/", "centroids") == "s3://b/mgoe/centroids"
    assert partition_path("/d", "centroids", "2026-11-23") == "/d/centroids/run_date=2026-11-23"
    assert storage.partition_path("/d", TRAINING_EXAMPLES, "2026-11-23") == partition_path(
        "/d", "training_examples", "2026-11-23"
    )
    assert run_date_of("run_date=2026-11-23") == "2026-11-23" and run_date_of("_staging") is None
    assert data.table_path is table_path and data.partition_path is partition_path  # the reader uses the same
