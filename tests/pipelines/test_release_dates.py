"""Every date column of a built release is DATE (condition.recorded_date was text before)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.access.built_release import demo_release

pytestmark = pytest.mark.slow


def test_every_date_column_of_a_built_release_is_date(tmp_path):
    with demo_release(tmp_path) as built:
        directory = built.home / "releases" / built.release_id
        con = duckdb.connect(str(directory / "release.duckdb"), read_only=True)
        try:
            columns = con.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        finally:
            con.close()
        dates = {(t, c): ty for t, c, ty in columns if c.endswith("_date")}
        assert ("condition", "recorded_date") in dates  # the demo asks for it
        assert set(dates.values()) == {"DATE"}, dates
        for (table, column), _ in dates.items():  # and the Parquet files researchers may read
            assert pq.read_schema(directory / f"{table}.parquet").field(column).type == pa.date32()
