-- 006_p1_webhook_subscriptions.sql — P1/Fase 3: relational webhook subscriptions
--
-- Audit 3.4 "Recomendación de diseño": replace lookups into the JSON
-- public.webhooks.events with a (webhook_id, event_type) table, so the
-- dispatcher's "who subscribes to event X" is an index lookup instead of
-- parsing every webhook's JSON on every event.
--
-- Schema: integration.webhook_subscriptions.
--   Audit section 5 sets the convention "integrations in `integration`" and
--   asks to stop new tables landing in public by accident. Webhooks are an
--   integration, so the NEW table goes to `integration`. The existing
--   public.webhooks / webhook_deliveries / webhook_event_logs stay where
--   they are: moving them (ALTER TABLE ... SET SCHEMA) is cheap for the
--   database but breaks every application query that names them, so it
--   belongs in a coordinated application release, not in this migration.
--   Until then the webhook family spans two schemas; the foreign key and
--   trigger below make that harmless.
--
-- The JSON column stays the source of truth during the transition: the
-- application keeps writing public.webhooks.events, and a trigger keeps the
-- table in sync. Once all readers use webhook_subscriptions, the writers can
-- be switched and the trigger/JSON column retired in a later migration.
--   INSERT / UPDATE OF events -> trigger re-derives the rows of that webhook.
--   DELETE                    -> ON DELETE CASCADE of the foreign key. A
--                                DELETE trigger would do the same work
--                                procedurally; the FK also guarantees no
--                                orphan can ever be inserted.
-- Event names are copied verbatim (a "*" wildcard, if the app uses one, is
-- stored as the event_type '*'; dispatchers then match
-- event_type IN ('booking.created', '*')). Non-string array elements and
-- non-array JSON are ignored.
--
-- Requires the baseline. Runs as ONE transaction (no CONCURRENTLY needed:
-- the new table's index is built while it is created). First run only:
-- CREATE TRIGGER takes SHARE ROW EXCLUSIVE on public.webhooks (reads go on,
-- writes wait) and keeps it until COMMIT, which covers the backfill. That
-- is deliberate: with writes held off, no webhook can change between the
-- backfill's snapshot and the trigger going live, so nothing is missed or
-- resurrected. public.webhooks is small (thousands of rows), the backfill
-- takes milliseconds.
-- Idempotent: on re-run every step finds its object and does nothing; no
-- lock is taken on public.webhooks. To repair drift manually, call
-- integration.resync_webhook_subscriptions().
-- Works on PostgreSQL 13: trigger creation is guarded by a catalog check
-- instead of CREATE OR REPLACE TRIGGER (14+).

SET lock_timeout = '5s';

BEGIN;

DO $$
BEGIN
    IF to_regclass('public.webhooks') IS NULL THEN
        RAISE EXCEPTION 'public.webhooks not found: migrations/ apply on top of the existing '
                        'application schema (see fixtures/baseline.sql)';
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS integration;

CREATE TABLE IF NOT EXISTS integration.webhook_subscriptions (
    webhook_id  bigint      NOT NULL REFERENCES public.webhooks (id) ON DELETE CASCADE,
    event_type  text        NOT NULL CHECK (event_type <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, event_type)
);

-- Dispatch lookup: event_type = ? -> webhook ids, answered from the index
-- alone (index-only scan). The PK already serves the per-webhook direction.
-- Guarded rather than IF NOT EXISTS: the latter takes a SHARE lock on the
-- table before noticing the index exists, which would stall the trigger's
-- writes on every re-run.
DO $$
BEGIN
    IF to_regclass('integration.webhook_subscriptions_event_type_idx') IS NULL THEN
        CREATE INDEX webhook_subscriptions_event_type_idx
            ON integration.webhook_subscriptions (event_type, webhook_id);
    END IF;
END
$$;

-- json or jsonb input (the column is json in production; ::jsonb accepts
-- both) -> sorted, de-duplicated text[] of event names.
CREATE OR REPLACE FUNCTION integration.webhook_event_names(p_events jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(array_agg(DISTINCT e.value #>> '{}' ORDER BY e.value #>> '{}'), '{}')
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_events) = 'array'
                                   THEN p_events ELSE '[]'::jsonb END) AS e(value)
    WHERE jsonb_typeof(e.value) = 'string' AND e.value #>> '{}' <> ''
$$;

CREATE OR REPLACE FUNCTION integration.sync_webhook_subscriptions()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_events text[];
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.events::jsonb IS NOT DISTINCT FROM OLD.events::jsonb THEN
        RETURN NULL;  -- events rewritten with the same content
    END IF;

    v_events := integration.webhook_event_names(NEW.events::jsonb);

    IF TG_OP = 'UPDATE' THEN
        DELETE FROM integration.webhook_subscriptions s
         WHERE s.webhook_id = NEW.id
           AND s.event_type <> ALL (v_events);
    END IF;

    INSERT INTO integration.webhook_subscriptions (webhook_id, event_type)
    SELECT NEW.id, e FROM unnest(v_events) AS e
    ON CONFLICT DO NOTHING;

    RETURN NULL;
END
$$;

-- Creates the trigger and backfills, once. See header for the lock reasoning.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'public.webhooks'::regclass
                     AND tgname = 'webhooks_sync_subscriptions') THEN
        CREATE TRIGGER webhooks_sync_subscriptions
            AFTER INSERT OR UPDATE OF events ON public.webhooks
            FOR EACH ROW
            EXECUTE FUNCTION integration.sync_webhook_subscriptions();

        INSERT INTO integration.webhook_subscriptions (webhook_id, event_type)
        SELECT w.id, e
        FROM public.webhooks w
        CROSS JOIN LATERAL unnest(integration.webhook_event_names(w.events::jsonb)) AS e
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- Full re-derivation from the JSON, for operators. Takes the same SHARE ROW
-- EXCLUSIVE lock as the first run for the same reason. Returns the number
-- of rows inserted and deleted.
CREATE OR REPLACE FUNCTION integration.resync_webhook_subscriptions(
    OUT inserted bigint, OUT deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    LOCK TABLE public.webhooks IN SHARE ROW EXCLUSIVE MODE;

    WITH wanted AS (
        SELECT w.id AS webhook_id, e AS event_type
        FROM public.webhooks w
        CROSS JOIN LATERAL unnest(integration.webhook_event_names(w.events::jsonb)) AS e
    ), del AS (
        DELETE FROM integration.webhook_subscriptions s
        WHERE NOT EXISTS (SELECT 1 FROM wanted
                          WHERE wanted.webhook_id = s.webhook_id
                            AND wanted.event_type = s.event_type)
        RETURNING 1
    )
    SELECT count(*) INTO deleted FROM del;

    INSERT INTO integration.webhook_subscriptions (webhook_id, event_type)
    SELECT w.id, e
    FROM public.webhooks w
    CROSS JOIN LATERAL unnest(integration.webhook_event_names(w.events::jsonb)) AS e
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
END
$$;

COMMIT;
