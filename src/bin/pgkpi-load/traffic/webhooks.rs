//! Webhooks: events fanned out to subscribed webhooks (the dispatch lookup differs between
//! baseline and migrated schema), delivery attempts that succeed or fail, the retry sweep with
//! exponential backoff, and event-log processing.

use rand::Rng;

use super::Worker;
use crate::db::Schema;

const EVENT_TYPES: [&str; 8] = [
    "booking.created",
    "payment.succeeded",
    "booking.confirmed",
    "booking.cancelled",
    "payment.failed",
    "booking.completed",
    "payment.refunded",
    "message.created",
];

const EVENT_LOG: &str = "\
INSERT INTO public.webhook_event_logs (event_type, payload, source)
VALUES ($1, jsonb_build_object('ref', $2::bigint), 'pgkpi-load')
RETURNING id";
const DISPATCH_MIGRATED: &str = "\
SELECT s.webhook_id
FROM integration.webhook_subscriptions s
JOIN public.webhooks w ON w.id = s.webhook_id
WHERE s.event_type = $1 AND w.active = true AND s.webhook_id >= $2
ORDER BY s.webhook_id
LIMIT 3";
// Baseline: the subscriptions live in a json column, filtered row by row.
const DISPATCH_BASELINE: &str = "\
SELECT w.id
FROM public.webhooks w
WHERE w.active = true AND w.events::jsonb ? $1 AND w.id >= $2
ORDER BY w.id
LIMIT 3";
const DELIVERY_INSERT: &str = "\
INSERT INTO public.webhook_deliveries (webhook_id, event_log_id, event_type, request_body)
VALUES ($1, $2, $3, jsonb_build_object('event_log_id', $2::bigint))
RETURNING id";
const DELIVERY_OK: &str = "\
UPDATE public.webhook_deliveries
SET attempt_count = attempt_count + 1, status = 'delivered', next_retry_at = NULL,
    response_code = 200, duration_ms = $2, error = NULL, delivered_at = now()
WHERE id = $1";
const DELIVERY_FAILED: &str = "\
UPDATE public.webhook_deliveries
SET attempt_count = attempt_count + 1,
    status = CASE WHEN attempt_count + 1 >= $2 THEN 'failed' ELSE 'retrying' END,
    next_retry_at = CASE WHEN attempt_count + 1 >= $2 THEN NULL
                         ELSE now() + make_interval(secs => least($3, power(2, attempt_count))) END,
    response_code = $4, duration_ms = $5, error = $6
WHERE id = $1";
const RETRY_SWEEP: &str = "\
SELECT id FROM public.webhook_deliveries
WHERE status = 'retrying' AND next_retry_at <= now() AND attempt_count < $1
ORDER BY next_retry_at
LIMIT 20
FOR UPDATE SKIP LOCKED";
const EVENT_LOG_SWEEP: &str = "\
SELECT id FROM public.webhook_event_logs
WHERE processed = false
ORDER BY created_at
LIMIT 20
FOR UPDATE SKIP LOCKED";
const EVENT_LOG_DONE: &str = "\
UPDATE public.webhook_event_logs SET processed = true, processed_at = now() WHERE id = ANY($1)";

/// Attempts after which a delivery is given up (status 'failed').
const WEBHOOK_MAX_ATTEMPTS: i32 = 8;

/// Webhook events, their fan-out to subscribed webhooks, delivery attempts that fail with
/// `--webhook-failure-rate`, the retry sweep with exponential backoff, and event-log processing.
pub async fn webhooks(mut w: Worker) {
    while w.next().await {
        let roll: f64 = w.rng.random();
        if roll < 0.6 {
            new_event(&mut w).await;
        } else if roll < 0.9 {
            retry_sweep(&mut w).await;
        } else {
            event_log_sweep(&mut w).await;
        }
    }
}

async fn attempt(w: &mut Worker, delivery: i64) -> bool {
    let duration: i32 = w.rng.random_range(20..900);
    if w.chance(w.shared.knobs.webhook_failure_rate) {
        let code: i32 = [500, 502, 503, 504][w.rng.random_range(0..4)];
        let cap = 30.0f64;
        let error = format!("HTTP {code}");
        w.q(
            "delivery_failed",
            DELIVERY_FAILED,
            &[
                &delivery,
                &WEBHOOK_MAX_ATTEMPTS,
                &cap,
                &code,
                &duration,
                &error,
            ],
        )
        .await
        .is_some()
    } else {
        w.q("delivery_ok", DELIVERY_OK, &[&delivery, &duration])
            .await
            .is_some()
    }
}

async fn new_event(w: &mut Worker) {
    let event_type = EVENT_TYPES[w.skewed(EVENT_TYPES.len())];
    let reference: i64 = w.rng.random_range(1..1_000_000);
    let Some(rows) = w.q("event", EVENT_LOG, &[&event_type, &reference]).await else {
        return;
    };
    let event_log: i64 = rows[0].get(0);
    let j = w.rng.random_range(0..w.shared.samples.webhooks.len());
    let from = w.shared.samples.webhooks[j];
    let dispatch = match w.shared.schema {
        Schema::Migrated => DISPATCH_MIGRATED,
        Schema::Baseline => DISPATCH_BASELINE,
    };
    let Some(targets) = w.q("dispatch", dispatch, &[&event_type, &from]).await else {
        return;
    };
    for target in targets {
        let webhook: i64 = target.get(0);
        let Some(rows) = w
            .q(
                "delivery_insert",
                DELIVERY_INSERT,
                &[&webhook, &event_log, &event_type],
            )
            .await
        else {
            continue;
        };
        let delivery: i64 = rows[0].get(0);
        attempt(w, delivery).await;
    }
}

async fn retry_sweep(w: &mut Worker) {
    if !w.control("BEGIN").await {
        return;
    }
    let Some(rows) = w
        .q("retry_sweep", RETRY_SWEEP, &[&WEBHOOK_MAX_ATTEMPTS])
        .await
    else {
        w.rollback().await;
        return;
    };
    for row in rows {
        if !attempt(w, row.get(0)).await {
            w.rollback().await;
            return;
        }
    }
    w.control("COMMIT").await;
}

async fn event_log_sweep(w: &mut Worker) {
    if !w.control("BEGIN").await {
        return;
    }
    let Some(rows) = w.q("event_sweep", EVENT_LOG_SWEEP, &[]).await else {
        w.rollback().await;
        return;
    };
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    if w.q("event_processed", EVENT_LOG_DONE, &[&ids])
        .await
        .is_none()
    {
        w.rollback().await;
        return;
    }
    w.control("COMMIT").await;
}
