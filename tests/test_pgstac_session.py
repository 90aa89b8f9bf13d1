"""The publisher's pgstac sessions: what they set whatever the catalogue server's defaults.

The session's PostgreSQL server of tests/conftest.py runs with ``synchronous_commit=off``
(fast, not crash-safe): a commit acknowledged by such a server may be lost if it is killed,
and the publisher deletes an outbox row once the catalogue's commit returns, so its own
sessions must commit synchronously there too.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])


def test_publisher_sessions_commit_synchronously_with_time_limits(postgres_server):
    from sqlalchemy.engine import make_url

    from agriseries.distribution.catalog.pgstac import PgstacCatalog

    name = make_url(postgres_server.create_database()).database
    dsn = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{name}"
    import psycopg

    with psycopg.connect(dsn) as conn:  # the server's default, as any other client sees it
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    cat = PgstacCatalog(dsn, timeout_s=4)
    try:
        conn = cat._connect()
        got = {k: conn.execute(f"SHOW {k}").fetchone()[0]
               for k in ("synchronous_commit", "statement_timeout", "lock_timeout")}
        conn.rollback()
    finally:
        cat.close()
    assert got == {"synchronous_commit": "on", "statement_timeout": "4s", "lock_timeout": "4s"}
