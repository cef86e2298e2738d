-- 004_fase2_queue_functions.sql — Fase 2: lease-based queue API
--
-- Audit 3.1 / 6 "Fase 2": workers consume core.notification_queue with
-- FOR UPDATE SKIP LOCKED and a lease (locked_at / lock_owner). Putting the
-- protocol in the database means every worker, in any language, gets the
-- same state machine and the CHECK constraints of 002 cannot be violated by
-- a half-written client.
--
--   core.claim_notifications(worker, batch, lease)   -> SETOF notification_queue
--   core.complete_notification(id, worker)            -> boolean
--   core.fail_notification(id, worker, error[, base_delay, max_delay]) -> text
--   core.extend_notification_lease(id, worker, lease) -> boolean
--   core.reclaim_expired_leases([lease])              -> integer
--   core.purge_notification_queue([keep, batch])      -> integer
--   core.notification_backoff(attempt, base, cap)     -> interval
--
-- Delivery semantics are at-least-once: a worker that outlives its lease
-- can find its item reclaimed and claimed by someone else, and then its
-- complete/fail returns false/NULL. Handlers must be idempotent (e.g. send
-- with the queue id as the provider's idempotency key).
--
-- Requires 002. No table locks beyond row locks at run time; creating the
-- functions locks nothing. Idempotent: CREATE OR REPLACE. Signatures are
-- part of the contract: changing one later needs DROP FUNCTION first, in a
-- new migration.

SET lock_timeout = '5s';

DO $$
BEGIN
    IF to_regclass('core.notification_queue') IS NULL THEN
        RAISE EXCEPTION 'core.notification_queue not found: apply 002_p0_notification_queue.sql first';
    END IF;
END
$$;

-- Exponential backoff without jitter: base * 2^(attempt-1), capped.
-- Kept separate and IMMUTABLE so the schedule can be tested and shown in
-- docs; fail_notification adds the jitter.
CREATE OR REPLACE FUNCTION core.notification_backoff(
    p_attempt    integer,
    p_base_delay interval DEFAULT interval '30 seconds',
    p_max_delay  interval DEFAULT interval '1 hour')
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- The exponent is clamped so 2^n cannot overflow an interval before the
    -- cap is applied.
    SELECT least(p_max_delay,
                 p_base_delay * power(2::double precision,
                                      least(greatest(p_attempt, 1) - 1, 30)))
$$;

CREATE OR REPLACE FUNCTION core.claim_notifications(
    p_worker text,
    p_batch  integer  DEFAULT 10,
    p_lease  interval DEFAULT interval '5 minutes')
RETURNS SETOF core.notification_queue
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_worker IS NULL OR btrim(p_worker) = '' THEN
        RAISE EXCEPTION 'claim_notifications: worker must be a non-empty name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_batch IS NULL OR p_batch < 1 OR p_batch > 10000 THEN
        RAISE EXCEPTION 'claim_notifications: batch must be between 1 and 10000, got %', p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'claim_notifications: lease must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- SKIP LOCKED: concurrent workers take disjoint sets instead of queueing
    -- on the same head rows. If a row was claimed and committed by another
    -- worker between our snapshot and our lock, READ COMMITTED re-checks
    -- status = 'ready' on the new version and drops it, so a batch can come
    -- back short but never overlaps. The final ORDER BY hands rows back in
    -- priority order (UPDATE ... RETURNING has no defined order).
    RETURN QUERY
    WITH picked AS (
        SELECT q.id
        FROM core.notification_queue q
        WHERE q.status = 'ready'
          AND q.available_at <= now()
        ORDER BY q.priority_score DESC, q.created_at, q.id
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE core.notification_queue q
           SET status           = 'leased',
               locked_at        = now(),
               lock_owner       = p_worker,
               lease_expires_at = now() + p_lease,
               updated_at       = now()
          FROM picked
         WHERE q.id = picked.id
        RETURNING q.*
    )
    SELECT * FROM claimed c
    ORDER BY c.priority_score DESC, c.created_at, c.id;
END
$$;

CREATE OR REPLACE FUNCTION core.complete_notification(p_id bigint, p_worker text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Only the current lease holder may finish an item; a worker whose lease
    -- was reclaimed gets false and must not assume its result was recorded.
    UPDATE core.notification_queue
       SET status = 'done', completed_at = now(), updated_at = now(),
           locked_at = NULL, lock_owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND status = 'leased' AND lock_owner = p_worker;
    RETURN FOUND;
END
$$;

-- Returns the new status ('ready' = will be retried, 'dead' = attempts
-- exhausted) or NULL when the caller does not hold the lease.
CREATE OR REPLACE FUNCTION core.fail_notification(
    p_id         bigint,
    p_worker     text,
    p_error      text,
    p_base_delay interval DEFAULT interval '30 seconds',
    p_max_delay  interval DEFAULT interval '1 hour')
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
BEGIN
    -- Up to +10% jitter so that items failing together (provider outage)
    -- do not all come back in the same second; the cap still applies.
    UPDATE core.notification_queue q
       SET retry_count      = q.retry_count + 1,
           status           = CASE WHEN q.retry_count + 1 >= q.max_attempts
                                   THEN 'dead' ELSE 'ready' END,
           available_at     = CASE WHEN q.retry_count + 1 >= q.max_attempts
                                   THEN q.available_at
                                   ELSE now() + least(p_max_delay,
                                        core.notification_backoff(q.retry_count + 1, p_base_delay, p_max_delay)
                                        * (1 + 0.1 * random())) END,
           completed_at     = CASE WHEN q.retry_count + 1 >= q.max_attempts
                                   THEN now() END,
           last_error       = left(p_error, 4000),
           updated_at       = now(),
           locked_at        = NULL,
           lock_owner       = NULL,
           lease_expires_at = NULL
     WHERE q.id = p_id AND q.status = 'leased' AND q.lock_owner = p_worker
    RETURNING q.status INTO v_status;
    RETURN v_status;
END
$$;

-- Heartbeat for long jobs. Moves locked_at too, so a lease is "fresh" for
-- both reclaim modes below.
CREATE OR REPLACE FUNCTION core.extend_notification_lease(
    p_id bigint, p_worker text, p_lease interval DEFAULT interval '5 minutes')
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE core.notification_queue
       SET locked_at = now(), lease_expires_at = now() + p_lease, updated_at = now()
     WHERE id = p_id AND status = 'leased' AND lock_owner = p_worker;
    RETURN FOUND;
END
$$;

-- Gives expired leases back to the queue; returns how many rows it touched.
--   p_lease NULL (default): expired = lease_expires_at has passed (the lease
--                           each claim asked for).
--   p_lease given:          expired = locked_at older than p_lease, whatever
--                           the claim asked for (operator override).
-- An expired lease counts as a failed attempt: a message that crashes its
-- worker every time would otherwise be retried forever. Such items go to
-- 'dead' once max_attempts is reached.
-- SKIP LOCKED: a row locked right now belongs to a worker that is alive and
-- completing it; leave it alone.
CREATE OR REPLACE FUNCTION core.reclaim_expired_leases(p_lease interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH expired AS (
        SELECT q.id
        FROM core.notification_queue q
        WHERE q.status = 'leased'
          AND CASE WHEN p_lease IS NULL THEN q.lease_expires_at <= now()
                   ELSE q.locked_at <= now() - p_lease END
        FOR UPDATE SKIP LOCKED
    )
    UPDATE core.notification_queue q
       SET retry_count      = q.retry_count + 1,
           status           = CASE WHEN q.retry_count + 1 >= q.max_attempts
                                   THEN 'dead' ELSE 'ready' END,
           available_at     = now(),
           completed_at     = CASE WHEN q.retry_count + 1 >= q.max_attempts
                                   THEN now() END,
           last_error       = format('lease expired: held by %s since %s', q.lock_owner, q.locked_at),
           updated_at       = now(),
           locked_at        = NULL,
           lock_owner       = NULL,
           lease_expires_at = NULL
      FROM expired
     WHERE q.id = expired.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- A queue table that keeps every finished row grows without bound and its
-- heap (not the partial claim index) bloats. Deletes finished rows in
-- bounded batches so a nightly job never holds thousands of row locks for
-- long; call it in a loop until it returns 0. Dead rows are kept unless
-- asked: they are the ones someone needs to look at.
CREATE OR REPLACE FUNCTION core.purge_notification_queue(
    p_keep         interval DEFAULT interval '7 days',
    p_batch        integer  DEFAULT 10000,
    p_include_dead boolean  DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM core.notification_queue q
     WHERE q.id IN (
        SELECT id FROM core.notification_queue
        WHERE (status = 'done' OR (p_include_dead AND status = 'dead'))
          AND completed_at < now() - p_keep
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
