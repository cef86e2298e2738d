//! The notification queue: producers insert notifications with their queue entries, consumers
//! claim and complete or fail them (and sometimes crash mid-batch), and the reaper gives
//! expired leases back. The migrated schema uses `core.notification_queue` and its functions;
//! the baseline uses pending `chat.push_notifications` rows locked with a plain `FOR UPDATE`.

use rand::Rng;

use super::Worker;
use crate::db::Schema;

const CHANNELS: [&str; 4] = ["push", "email", "sms", "in_app"];
const PLATFORMS: [&str; 3] = ["fcm", "apns", "webpush"];

const PRODUCE_MIGRATED: &str = "\
WITH n AS (
    INSERT INTO core.notifications (user_id, type, title, body)
    VALUES ($1, 'booking_update', 'Your booking changed', 'pgkpi-load')
    RETURNING id)
INSERT INTO core.notification_queue (notification_id, channel, priority_score, available_at)
SELECT id, $2, $3, now() + make_interval(secs => $4) FROM n";

const PRODUCE_BASELINE: &str = "\
WITH n AS (
    INSERT INTO core.notifications (user_id, type, title, body)
    VALUES ($1, 'booking_update', 'Your booking changed', 'pgkpi-load')
    RETURNING id, user_id)
INSERT INTO chat.push_notifications (user_id, platform, device_token, status)
SELECT user_id, $2, md5(user_id::text), 'pending' FROM n";

/// Inserts notifications and their queue entries (migrated: `core.notification_queue`;
/// baseline: a pending `chat.push_notifications` row, the only queue the baseline has).
pub async fn producer(mut w: Worker) {
    while w.next().await {
        let user = w.conversation().client;
        match w.shared.schema {
            Schema::Migrated => {
                let channel = CHANNELS[w.skewed(CHANNELS.len())];
                let priority: i32 = w.rng.random_range(0..100);
                // One in ten is scheduled a few seconds ahead, as reminders are.
                let delay: f64 = if w.chance(0.1) {
                    w.rng.random_range(1.0..5.0)
                } else {
                    0.0
                };
                w.q(
                    "produce",
                    PRODUCE_MIGRATED,
                    &[&user, &channel, &priority, &delay],
                )
                .await;
            }
            Schema::Baseline => {
                let platform = PLATFORMS[w.rng.random_range(0..PLATFORMS.len())];
                w.q("produce", PRODUCE_BASELINE, &[&user, &platform]).await;
            }
        }
    }
}

const CLAIM: &str = "\
SELECT id, notification_id, channel, retry_count
FROM core.claim_notifications($1, $2, make_interval(secs => $3))";
const COMPLETE: &str = "SELECT core.complete_notification($1, $2)";
const FAIL: &str = "\
SELECT core.fail_notification($1, $2, $3, make_interval(secs => $4), make_interval(secs => $5))";
const DELIVERY: &str = "\
INSERT INTO core.notification_deliveries
    (notification_id, channel, provider, status, attempt_count, next_attempt_at, last_error,
     provider_message_id, delivered_at)
VALUES ($1::bigint, $2::text, 'pgkpi-load', $3::text, $4::int,
        CASE WHEN $3::text = 'failed' THEN now() + interval '1 second' END,
        CASE WHEN $3::text = 'failed' THEN 'provider timeout' END,
        CASE WHEN $3::text = 'sent' THEN md5($1::bigint::text || clock_timestamp()::text) END,
        CASE WHEN $3::text = 'sent' THEN now() END)";

// Baseline: no lease, no SKIP LOCKED. Every consumer asks for the same oldest rows and
// queues behind whoever locked them first: the behaviour the audit's section 3.1 fixes.
const CLAIM_BASELINE: &str = "\
SELECT id, user_id FROM chat.push_notifications
WHERE status = 'pending'
ORDER BY created_at, id
LIMIT $1
FOR UPDATE";
const COMPLETE_BASELINE: &str = "\
UPDATE chat.push_notifications SET status = 'sent', sent_at = now(), error = NULL WHERE id = $1";
const FAIL_BASELINE: &str = "\
UPDATE chat.push_notifications SET status = 'failed', error = $2 WHERE id = $1";

/// Claims and processes queue items. Some fail (and are retried with backoff by
/// `fail_notification`), and with `--consumer-crash-rate` a consumer dies after a claim: on the
/// migrated schema its lease expires and the reaper gives the items back; on the baseline its
/// row locks are held until the connection drops, and every other consumer waits.
pub async fn consumer(mut w: Worker) {
    let mut full = false;
    loop {
        let go = if full { w.next_now() } else { w.next().await };
        if !go {
            break;
        }
        full = match w.shared.schema {
            Schema::Migrated => consume_migrated(&mut w).await,
            Schema::Baseline => consume_baseline(&mut w).await,
        };
    }
}

/// One claim; true when the batch came back full (more work is waiting).
async fn consume_migrated(w: &mut Worker) -> bool {
    let owner = w.owner();
    let batch = w.shared.knobs.batch;
    let lease = w.shared.knobs.lease.as_secs_f64();
    let Some(rows) = w.q("claim", CLAIM, &[&owner, &batch, &lease]).await else {
        return false;
    };
    if !rows.is_empty() && w.chance(w.shared.knobs.consumer_crash_rate) {
        w.crash(std::time::Instant::now());
        return false;
    }
    for row in &rows {
        let id: i64 = row.get(0);
        let notification: i64 = row.get(1);
        let channel: String = row.get(2);
        let attempt: i32 = row.get::<_, i32>(3) + 1;
        let status = if w.chance(w.shared.knobs.notification_failure_rate) {
            let (base, cap) = (1.0f64, 10.0f64);
            w.q(
                "fail",
                FAIL,
                &[&id, &owner, &"provider timeout", &base, &cap],
            )
            .await;
            "failed"
        } else {
            w.q("complete", COMPLETE, &[&id, &owner]).await;
            "sent"
        };
        w.q(
            "delivery",
            DELIVERY,
            &[&notification, &channel, &status, &attempt],
        )
        .await;
    }
    rows.len() as i32 == batch
}

async fn consume_baseline(w: &mut Worker) -> bool {
    let batch = i64::from(w.shared.knobs.batch);
    if !w.control("BEGIN").await {
        return false;
    }
    let Some(rows) = w.q("claim", CLAIM_BASELINE, &[&batch]).await else {
        w.rollback().await;
        return false;
    };
    if !rows.is_empty() && w.chance(w.shared.knobs.consumer_crash_rate) {
        // Dies mid-batch: the locks stay until the server notices the connection is gone.
        let started = std::time::Instant::now();
        let hold = w.shared.knobs.lock_hold;
        w.sleep(hold).await;
        w.crash(started);
        return false;
    }
    for row in &rows {
        let id: i64 = row.get(0);
        let ok = if w.chance(w.shared.knobs.notification_failure_rate) {
            w.q("fail", FAIL_BASELINE, &[&id, &"provider timeout"])
                .await
        } else {
            w.q("complete", COMPLETE_BASELINE, &[&id]).await
        };
        if ok.is_none() {
            w.rollback().await;
            return false;
        }
    }
    w.control("COMMIT").await;
    rows.len() as i64 == batch
}

/// Migrated schema only: gives expired leases back (what a cron job or a worker does).
pub async fn reaper(mut w: Worker) {
    while w.next().await {
        w.q("reclaim", "SELECT core.reclaim_expired_leases()", &[])
            .await;
    }
}
