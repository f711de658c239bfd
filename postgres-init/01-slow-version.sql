-- slow_version(): the lab's slow query, defined as in the seed system:
-- sleep, then return the server's version string.
--
-- The delay lives in the table lab_settings (row slow_query_seconds; 10 s when
-- the row is absent), which the database owner may write everywhere: locally
-- and on RDS, whose master is no superuser and may not set custom server
-- parameters. `cachelab db-init` upserts SLOW_QUERY_SECONDS into it.
--
-- Privileges: the app connects as its own LOGIN role (APP_DB_USER, created by
-- `cachelab db-init`), a member of the NOLOGIN group role cachelab_runtime.
-- Every postgres-init/*.sql file grants what the app needs to cachelab_runtime
-- and nothing else: no CREATE anywhere, no ownership.
--
-- Idempotent: the postgres container runs this file on its first start and
-- `cachelab db-init` re-applies every file, in order, on each boot.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cachelab_runtime') THEN
        CREATE ROLE cachelab_runtime NOLOGIN;
    END IF;
END
$$;

-- Nobody but the owner may create in this database or its public schema, or
-- connect unless granted (PUBLIC has CONNECT and TEMPORARY by default).
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cachelab_runtime', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO cachelab_runtime;

CREATE TABLE IF NOT EXISTS lab_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
REVOKE ALL ON lab_settings FROM PUBLIC;
GRANT SELECT ON lab_settings TO cachelab_runtime;

CREATE OR REPLACE FUNCTION slow_version() RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_sleep(coalesce(
        (SELECT value::double precision FROM lab_settings WHERE name = 'slow_query_seconds'),
        10));
    RETURN version();
END;
$$;
REVOKE ALL ON FUNCTION slow_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION slow_version() TO cachelab_runtime;
