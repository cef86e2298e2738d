-- 008_grants.sql — re-apply pgkpi's read grants now that every table exists
--
-- 001 created the pgkpi role and granted on the KPI tables that existed at
-- the time; core.notification_queue and core.notification_deliveries only
-- appear in 002. This is the same table-grant block as in 001, run again
-- last. It is also the file to re-run after any of these tables gains a
-- column (column-level grants do not extend to new columns by themselves).
--
-- Only table/schema privileges here, so the owner of the application tables
-- can run it; CONNECT and pg_monitor stay in 001 (they need more rights).
-- Skips silently if the role does not exist (001 not applied).
--
-- Idempotent: GRANT is repeatable. Locks: none on tables (catalog ACLs).
-- Deliberately no ALTER DEFAULT PRIVILEGES: pgkpi gets the tables it needs
-- by name, not every table someone creates in the future.

SET lock_timeout = '5s';

DO $$
DECLARE
    t record;
    cols text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgkpi') THEN
        RAISE NOTICE 'role pgkpi does not exist (001_monitoring.sql not applied); nothing to grant';
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

        -- Same withheld columns as 001: secrets, token-bearing URLs, payloads.
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('secret', 'url', 'payload', 'request_body', 'response_body');

        EXECUTE format('GRANT SELECT (%s) ON TABLE %I.%I TO pgkpi', cols, t.nspname, t.relname);
    END LOOP;
END
$$;
