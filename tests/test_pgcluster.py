import psycopg


def test_throwaway_postgres_cluster_answers_queries(pg_url: str) -> None:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)
