-- pg_stat_statements: PostgreSQL's own per-statement counts (calls, time), so
-- slow queries can be counted from the server. Needs the library preloaded
-- (compose.yaml: -c shared_preload_libraries=pg_stat_statements; RDS: the
-- parameter group). Idempotent.
--
-- CREATE EXTENSION needs a superuser (local first start) or RDS's master
-- (rds_superuser). When the extension already exists, IF NOT EXISTS returns
-- with a notice before any permission check, so `cachelab db-init` also works
-- for an owner that could not create it.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
