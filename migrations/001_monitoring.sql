-- 001_monitoring.sql — query statistics and a least-privilege role for pgkpi
--
-- Who runs it: a superuser (or the managed-service equivalent such as
-- rds_superuser / cloudsqlsuperuser). pg_stat_statements is not a trusted
-- extension, and on PostgreSQL 16+ granting pg_monitor needs ADMIN on it.
-- Every later migration only needs the owner of the application tables.
--
-- Prerequisite outside SQL: pg_stat_statements must be listed in
-- shared_preload_libraries (server restart). The extension can be created
-- without it, but its views then raise an error when read; this file warns
-- in that case instead of failing, so the rest of the chain can proceed.
--
-- Works on an empty database: it only touches schemas/tables that exist.
--
-- Password: deliberately none here (a migration file ends up in git, CI logs
-- and backups). Set it out of band, e.g. in psql:
--     \password pgkpi
-- or  ALTER ROLE pgkpi PASSWORD 'SCRAM-SHA-256$...';  (a pre-hashed verifier)
-- and give the exporter a ~/.pgpass line or PGPASSFILE:
--     db.example.internal:5432:appdb:pgkpi:<secret>
--
-- Idempotent: extension/role creation is conditional, GRANTs and
-- ALTER ROLE ... SET are naturally repeatable.
-- Locks: none on application tables (GRANT only updates catalog ACLs).
-- Not wrapped in BEGIN/COMMIT: nothing here needs atomicity, and a failed
-- GRANT should not undo the extension.

SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

DO $$
BEGIN
    IF current_setting('shared_preload_libraries') !~ '(^|[ ,])pg_stat_statements($|[ ,])' THEN
        RAISE WARNING 'pg_stat_statements is not in shared_preload_libraries; '
                      'its views will error until the server is restarted with it';
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    NULL;  -- setting not readable by this role: nothing to check against
END
$$;

-- The role is created only if missing. If it already exists we do not
-- ALTER its attributes (that needs privileges over a role someone else may
-- own); we only shout if it is more powerful than a metrics reader should be.
DO $$
DECLARE
    r pg_catalog.pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO r FROM pg_catalog.pg_roles WHERE rolname = 'pgkpi';
    IF NOT FOUND THEN
        -- CONNECTION LIMIT: one scrape connection plus headroom for a
        -- restart overlap; a leak in the exporter must not eat the pool.
        CREATE ROLE pgkpi LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 5;
    ELSIF r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls THEN
        RAISE WARNING 'role pgkpi already exists with elevated attributes '
                      '(superuser/createrole/createdb/replication/bypassrls); '
                      'it should be a plain LOGIN role';
    END IF;

    -- Session defaults that keep a metrics scraper harmless even when a
    -- query or the network misbehaves: it never writes, never waits in a
    -- lock queue behind DDL (which would block everything queued after it),
    -- and never holds a transaction (and thus the xmin horizon) open.
    -- The exporter may still lower/raise statement_timeout per session.
    BEGIN
        ALTER ROLE pgkpi SET default_transaction_read_only = on;
        ALTER ROLE pgkpi SET statement_timeout = '10s';
        ALTER ROLE pgkpi SET lock_timeout = '1s';
        ALTER ROLE pgkpi SET idle_in_transaction_session_timeout = '60s';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'not allowed to set session defaults on role pgkpi (%); '
                      'ask its owner to apply them', SQLERRM;
    END;

    -- Database name is only known at run time, hence dynamic SQL. Needed
    -- where CONNECT has been revoked from PUBLIC (hardened setups).
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO pgkpi', current_database());

    -- pg_monitor = pg_read_all_settings + pg_read_all_stats +
    -- pg_stat_scan_tables: every pg_stat_* view and pg_stat_statements
    -- query text, without any access to table contents.
    GRANT pg_monitor TO pgkpi;
END
$$;

-- Table access for the KPIs (queue depth/age, delivery and retry backlogs,
-- webhook success, event-log lag, booking expiry backlog).
--
-- Why a DO block over "whatever exists": notification_queue and
-- notification_deliveries are created by 002, after this file. Granting on
-- a missing table is an error, so this block grants on the subset present
-- now and migrations/008_grants.sql repeats the same block once every table
-- exists. Re-run 008 whenever one of these tables gains a column.
--
-- Why column-level SELECT: least privilege is about data, not just tables.
-- Columns that can carry secrets or personal data (webhook signing secret,
-- target URLs that often embed tokens, event/request/response payloads) are
-- withheld; counts, statuses and timestamps are all pgkpi needs.
-- count(*) works with column-level privileges.
DO $$
DECLARE
    t record;
    cols text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgkpi') THEN
        RETURN;
    END IF;

    FOR t IN
        SELECT n.nspname, c.relname, c.oid
        FROM (VALUES ('core',   'notification_queue'),
                     ('core',   'notification_deliveries'),
                     ('public', 'webhook_deliveries'),
                     ('public', 'webhook_event_logs'),
                     ('public', 'webhooks'),
                     ('core',   'bookings')) AS w(sch, tab)
        JOIN pg_catalog.pg_namespace n ON n.nspname = w.sch
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.tab
        WHERE c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgkpi', t.nspname);

        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('secret', 'url', 'payload', 'request_body', 'response_body');

        EXECUTE format('GRANT SELECT (%s) ON TABLE %I.%I TO pgkpi', cols, t.nspname, t.relname);
    END LOOP;
END
$$;
