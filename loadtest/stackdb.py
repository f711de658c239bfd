"""The PostgreSQL of a Compose stack: its passwords, a direct connection, psql,
and the slow queries counted on the database's side.

:class:`StackDatabase` is a part of :class:`loadtest.stack.Stack` (it inherits
it). Slow queries are counted where they run -- ``pg_stat_statements`` for
the finished ones, ``pg_stat_activity`` for the running ones, and the table
``slow_calls`` per item -- never by counters the app keeps about itself.
"""

from __future__ import annotations

from typing import Any

# The generated passwords (compose.yaml's `passwords` service): which running
# container mounts each, and the variable that overrides it.
SECRETS = {
    "owner": ("postgres", "POSTGRES_PASSWORD"),
    "app": ("app", "APP_DB_PASSWORD"),
}
# Statements counted as slow queries (pg_stat_statements' normalised text).
SLOW_STATEMENTS = {
    "version": "SELECT slow_version()",
    "item": "SELECT id, payload, version, updated_at FROM slow_item($1)",
}


class StackDatabase:
    """Needs the stack's ``env``, ``container(service)`` and ``port(service, port)``."""

    env: dict[str, str]

    def container(self, service: str) -> Any:
        raise NotImplementedError

    def port(self, service: str, container_port: int) -> str:
        raise NotImplementedError

    def secret(self, name: str) -> str:
        """A database password (owner, app): the environment's when the run chose
        it, else the one the `passwords` service generated (read in a container
        that mounts it)."""
        service, variable = SECRETS[name]
        if self.env.get(variable):
            return self.env[variable]
        code, out = self.container(service).exec_run(["cat", f"/run/lab-secrets/{name}/password"])
        if code != 0:
            raise RuntimeError(f"cannot read the {name} password: {out!r}")
        return out.decode().strip()

    def pg_connect(self):
        import psycopg2  # only tests need a direct connection (published port)

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port("postgres", 5432),
            user="lab",
            password=self.secret("owner"),
            dbname="lab",
            connect_timeout=3,
        )

    def psql(self, query: str) -> str:
        """Run one query with psql inside the postgres container (local socket)."""
        code, out = self.container("postgres").exec_run(
            [
                "sh",
                "-c",
                'psql -X -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "$0"',
                query,
            ]
        )
        if code != 0:
            raise RuntimeError(f"psql failed: {out.decode(errors='replace')[-500:]}")
        return out.decode().strip()

    def slow_calls(self, source: str = "version") -> int:
        """Slow queries PostgreSQL has finished (pg_stat_statements, updated
        before the query's result reaches the app, so exact at once)."""
        return int(
            self.psql(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                f"WHERE query = '{SLOW_STATEMENTS[source]}'"
            )
        )

    def slow_calls_by_item(self) -> dict[int, int]:
        """Item queries PostgreSQL started, per item id (the table slow_calls,
        which slow_item() writes when SLOW_CALL_LOG=on: the test stacks)."""
        out = self.psql("SELECT item, count(*) FROM slow_calls WHERE source = 'item' GROUP BY item")
        counts: dict[int, int] = {}
        for line in out.splitlines():
            item, calls = line.split("|")
            counts[int(item)] = int(calls)
        return counts

    def running_slow_queries(self, source: str = "version") -> int:
        """Slow queries running now (started, not finished)."""
        pattern = {"version": "%slow_version()%", "item": "%slow_item(%"}[source]
        return int(
            self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                f"AND query LIKE '{pattern}' AND pid <> pg_backend_pid()"
            )
        )
