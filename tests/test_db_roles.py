"""Issue 10: the app connects as its own least-privilege role, never as the owner.

Locally the owner is the postgres superuser; on AWS it is the RDS master
(see test_aws_rehearsal.py, which runs the same checks on the RDS stand-in).
"""

from __future__ import annotations

import psycopg2

from tests.aws.dbroles import check_app_role, prepare_foreign_objects


def _app_connect(stack):
    return psycopg2.connect(
        host="127.0.0.1",
        port=stack.port("postgres", 5432),
        dbname="lab",
        user="cachelab_app",
        password=stack.secret("app"),
        connect_timeout=3,
    )


def test_app_role_has_only_what_it_needs(stack):
    owner = stack.pg_connect()
    try:
        prepare_foreign_objects(owner)
    finally:
        owner.close()
    app = _app_connect(stack)
    try:
        assert check_app_role(app, "cachelab_app") == []
    finally:
        app.close()


def test_the_app_itself_connects_as_the_app_role(stack):
    assert stack.get("/api/version?cache=bypass").status_code == 200
    users = stack.psql(
        "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity "
        "WHERE application_name = 'cachelab'"
    )
    assert users == "cachelab_app"


def test_delay_lives_in_lab_settings_and_pg_stat_statements_is_loaded(stack):
    assert stack.psql("SELECT value FROM lab_settings WHERE name = 'slow_query_seconds'") == "1.0"
    assert stack.psql("SHOW shared_preload_libraries") == "pg_stat_statements"
    assert (
        stack.psql("SELECT extname FROM pg_extension WHERE extname = 'pg_stat_statements'")
        == "pg_stat_statements"
    )
    # pg_stat_statements records each slow query the moment it ends.
    before = stack.slow_calls()
    assert stack.get("/api/version?cache=bypass").status_code == 200
    assert stack.slow_calls() == before + 1
