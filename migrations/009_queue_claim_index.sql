-- 009_queue_claim_index.sql — the claim of core.notification_queue stops after its batch
--
-- core.claim_notifications() (004) picks
--     WHERE status = 'ready' AND available_at <= now()
--     ORDER BY priority_score DESC, created_at, id LIMIT batch FOR UPDATE SKIP LOCKED
-- 002's notification_queue_claim_idx is (available_at, priority_score DESC, created_at)
-- WHERE status = 'ready': it finds the due rows, but not in the claim's order, so every claim
-- read and sorted the whole due backlog (27 ms at 15 000 ready rows in the probe, about 100
-- single-item claims/s; a 1 000 000-row backlog took seconds per claim, just when the queue
-- must drain).
--
-- This index has the claim's ORDER BY as its key, on the rows its WHERE can return (the same
-- partial predicate as 002's). The plan becomes Limit -> LockRows -> Index Scan: it reads the
-- head of the index, skips rows that are not due yet (available_at is checked on the row) or
-- locked by another claimer, and stops after `batch` rows, whatever the backlog.
-- Cost: the scan also walks ready rows that are not due yet and rank before the first due
-- one (higher priority, scheduled for later). A queue holding many high-priority items
-- scheduled far ahead pays for them on every claim; such items belong in a separate queue.
--
-- 002's claim index stays: pgkpi's queue collector counts the due / scheduled backlog and its
-- age from it (index-only, available_at range), and reclaim/fail keep their own indexes.
--
-- Requires 002 (the table). Run with:
--     psql -v ON_ERROR_STOP=1 -f migrations/009_queue_claim_index.sql
-- NOT inside a transaction block: it uses CREATE INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE:
-- producers and workers keep inserting and claiming while it builds).
-- Idempotent: IF NOT EXISTS; an INVALID leftover of an interrupted build stops the file with
-- the DROP to run (see 002).

SET lock_timeout = '5s';
-- A role-level statement_timeout would cancel CREATE INDEX CONCURRENTLY half way and leave an
-- INVALID index.
SET statement_timeout = 0;

DO $$
BEGIN
    IF to_regclass('core.notification_queue') IS NULL THEN
        RAISE EXCEPTION 'core.notification_queue not found: apply 002_p0_notification_queue.sql first';
    END IF;
END
$$;

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO bad
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT i.indisvalid AND n.nspname = 'core'
      AND c.relname = 'notification_queue_claim_order_idx';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid index(es) left by an interrupted CREATE INDEX CONCURRENTLY: %', bad
            USING HINT = 'Run DROP INDEX CONCURRENTLY <name>; for each, then apply this file again.';
    END IF;
END
$$;

-- CIC waits for every older transaction of the database (as lock waits): see 002.
SET lock_timeout = '10min';

-- Key = the claim's ORDER BY, column for column and direction for direction; predicate = the
-- claim's status filter. id makes the order total, as in the claim.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notification_queue_claim_order_idx
    ON core.notification_queue (priority_score DESC, created_at, id)
    WHERE status = 'ready';

