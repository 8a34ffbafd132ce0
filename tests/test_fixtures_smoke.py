import psycopg

from daemon.servers import NatsServer


def test_nats_server_listens(nats_server: NatsServer) -> None:
    assert nats_server.proc is not None and nats_server.proc.poll() is None


def test_database_is_fresh(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        name = conn.execute("select current_database()").fetchone()
        assert name is not None and name[0].startswith("bis_test_")
