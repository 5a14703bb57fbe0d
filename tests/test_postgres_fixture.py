import uuid

import pytest
import sqlalchemy


@pytest.mark.postgres
def test_postgres_fixture_serves_sql_and_survives_restart(postgres) -> None:
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:8]}")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE t (x int)"))
        conn.execute(sqlalchemy.text("INSERT INTO t VALUES (41), (1)"))
    engine.dispose()
    postgres.restart()
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT sum(x) FROM t")).scalar() == 42
    engine.dispose()
