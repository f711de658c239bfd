-- items: data that changes, for the lab's writes, invalidation and staleness.
--
-- Every write bumps `version` and `updated_at` in a trigger (also for writes
-- made directly in SQL, which never pass through the app) and announces
-- '<id>:<version>:<insert|update>' on the channel cachelab_items when it
-- commits, which every app worker LISTENs to (the `notify` invalidation mode;
-- an insert also ends every cached "not found" of that id).
--
-- slow_calls logs each slow query with its argument when lab_settings has
-- slow_call_log = on (the test stacks): pg_stat_statements folds every
-- slow_item($1) together, and the tests count queries per key.
--
-- slow_item(id) is the read: it takes the row first, then sleeps like
-- slow_version() (lab_settings.slow_query_seconds), so its answer is the row
-- as of the start of a slow query -- like any long report, and the window in
-- which a write can race with a cache fill.
--
-- Seeded with item_count items (lab_settings, default 1000) whose payload is
-- item_payload_bytes long (default 256): `cachelab db-init` upserts both from
-- ITEM_COUNT and ITEM_PAYLOAD_BYTES before applying this file. A changed
-- payload size rewrites the seeded payloads (a new version of each item).
-- Idempotent.
--
-- db-init: reapply when item_count, item_payload_bytes change

CREATE TABLE IF NOT EXISTS items (
    id         integer PRIMARY KEY,
    payload    text NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON items FROM PUBLIC;
GRANT SELECT, UPDATE (payload) ON items TO cachelab_runtime;

CREATE OR REPLACE FUNCTION items_bump_version() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION items_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('cachelab_items', NEW.id || ':' || NEW.version || ':' || lower(TG_OP));
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS items_bump_version ON items;
CREATE TRIGGER items_bump_version BEFORE UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION items_bump_version();
DROP TRIGGER IF EXISTS items_notify ON items;
CREATE TRIGGER items_notify AFTER INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION items_notify();

CREATE TABLE IF NOT EXISTS slow_calls (
    source     text NOT NULL,
    item       integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON slow_calls FROM PUBLIC;
GRANT INSERT ON slow_calls TO cachelab_runtime;

CREATE OR REPLACE FUNCTION log_slow_call(call_source text, call_item integer) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF (SELECT value FROM lab_settings WHERE name = 'slow_call_log') = 'on' THEN
        INSERT INTO slow_calls (source, item) VALUES (call_source, call_item);
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION log_slow_call(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION log_slow_call(text, integer) TO cachelab_runtime;

CREATE OR REPLACE FUNCTION slow_item(item_id integer)
RETURNS TABLE (id integer, payload text, version bigint, updated_at timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    found items%ROWTYPE;
BEGIN
    SELECT * INTO found FROM items i WHERE i.id = item_id;
    PERFORM log_slow_call('item', item_id);
    PERFORM pg_sleep(coalesce(
        (SELECT value::double precision FROM lab_settings WHERE name = 'slow_query_seconds'),
        10));
    IF found.id IS NOT NULL THEN
        RETURN QUERY SELECT found.id, found.payload, found.version, found.updated_at;
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION slow_item(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION slow_item(integer) TO cachelab_runtime;
REVOKE ALL ON FUNCTION items_bump_version() FROM PUBLIC;
REVOKE ALL ON FUNCTION items_notify() FROM PUBLIC;

DO $$
DECLARE
    wanted_count integer := coalesce(
        (SELECT value::integer FROM lab_settings WHERE name = 'item_count'), 1000);
    wanted_bytes integer := coalesce(
        (SELECT value::integer FROM lab_settings WHERE name = 'item_payload_bytes'), 256);
BEGIN
    INSERT INTO items (id, payload)
    SELECT g, repeat('x', wanted_bytes) FROM generate_series(1, wanted_count) AS g
    ON CONFLICT (id) DO NOTHING;
    -- A new payload size applies to the seeded payloads (written by nobody else).
    UPDATE items SET payload = repeat('x', wanted_bytes)
    WHERE payload ~ '^x*$' AND length(payload) <> wanted_bytes;
END
$$;
