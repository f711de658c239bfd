-- slow_version(): the lab's slow query, defined as in the seed system:
-- sleep, then return the server's version string.
--
-- The delay is the setting lab.slow_query_seconds (10 s when unset). Locally
-- compose.yaml passes it on the server command line (-c lab.slow_query_seconds=N);
-- on RDS `cachelab db-init` stores it with ALTER DATABASE when
-- SLOW_QUERY_SECONDS is set. Idempotent: the app image re-applies this file.
CREATE OR REPLACE FUNCTION slow_version() RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_sleep(
        coalesce(nullif(current_setting('lab.slow_query_seconds', true), ''), '10')::double precision
    );
    RETURN version();
END;
$$;
