//! The traffic classes. Each task owns one connection named `pgkpi-load/<class>`, paces itself
//! to its share of `--rate`, and stops at the deadline, on a signal, or when the global
//! operation budget is spent.
//!
//! Every class uses fixed statement texts with bind parameters, so pg_stat_statements groups
//! them into one entry per statement shape (one "statement class" per kind below). Where the
//! schema differs (baseline vs migrated) only the queue, the webhook dispatch lookup and the
//! analytics inserts change; every other statement is identical, so its plan and latency can
//! be compared before and after the migrations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};

use crate::db::{self, Samples, Schema};
use crate::stats::{Outcome, Stats};

/// Knobs the classes read; filled from the command line.
pub struct Knobs {
    pub webhook_failure_rate: f64,
    pub notification_failure_rate: f64,
    pub consumer_crash_rate: f64,
    pub batch: i32,
    pub lease: Duration,
    pub lock_hold: Duration,
    pub max_ops: u64,
}

/// State shared by all tasks (read-only apart from the stats).
pub struct Shared {
    pub base: Config,
    pub schema: Schema,
    pub samples: Samples,
    pub stats: Arc<Stats>,
    pub knobs: Knobs,
    pub deadline: Instant,
}

/// One task: a connection, a statement cache, a pacer and a deterministic RNG.
pub struct Worker {
    shared: Arc<Shared>,
    class: &'static str,
    /// Distinguishes tasks of a class; also the queue `lock_owner`.
    name: String,
    client: Option<Client>,
    statements: HashMap<&'static str, Statement>,
    /// SQL run on every new connection (e.g. the lock waiter's lock_timeout).
    init_sql: Option<&'static str>,
    /// SQLSTATEs this class provokes on purpose; counted as expected.
    expected: Vec<SqlState>,
    /// None: no pacing (the caller decides when to wait).
    interval: Option<Interval>,
    stop: watch::Receiver<bool>,
    pub rng: StdRng,
    /// Connections opened so far (a crashed consumer comes back as a new process).
    generation: u32,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        class: &'static str,
        index: usize,
        rate: Option<f64>,
        seed: u64,
        stop: watch::Receiver<bool>,
    ) -> Worker {
        let interval = rate.map(|r| {
            let period = Duration::from_secs_f64((1.0 / r.max(0.01)).min(100.0));
            let mut interval = tokio::time::interval(period);
            // A slow operation delays the next one instead of causing a burst.
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let class_hash = class
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) + b as u64);
        Worker {
            shared,
            class,
            name: format!("pgkpi-load-{class}-{index}"),
            client: None,
            statements: HashMap::new(),
            init_sql: None,
            expected: vec![SqlState::T_R_DEADLOCK_DETECTED],
            interval,
            stop,
            rng: StdRng::seed_from_u64(seed ^ class_hash.rotate_left(17) ^ index as u64),
            generation: 0,
        }
    }

    fn finished(&self) -> bool {
        *self.stop.borrow() || Instant::now() >= self.shared.deadline
    }

    /// Waits for the next tick; false when the task must stop.
    pub async fn next(&mut self) -> bool {
        if self.finished() {
            return false;
        }
        if let Some(interval) = &mut self.interval {
            let deadline = self.shared.deadline;
            tokio::select! {
                _ = interval.tick() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.stop.changed() => return false,
            }
        }
        self.next_now()
    }

    /// Starts the next operation without waiting; false when the task must stop.
    pub fn next_now(&mut self) -> bool {
        !self.finished() && self.shared.stats.take_op(self.shared.knobs.max_ops)
    }

    /// Sleeps, unless the run ends first; false when the task must stop.
    pub async fn sleep(&mut self, duration: Duration) -> bool {
        let until = (Instant::now() + duration).min(self.shared.deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => !self.finished(),
            _ = self.stop.changed() => false,
        }
    }

    /// The worker's current name (changes after a simulated crash).
    pub fn owner(&self) -> String {
        format!("{}.{}", self.name, self.generation)
    }

    /// Drops the connection without finishing anything: a process that died.
    pub fn crash(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    async fn ensure_client(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        self.statements.clear();
        let started = std::time::Instant::now();
        let connected = db::connect(&self.shared.base, self.class).await;
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                self.record("connect", started, Outcome::Unexpected(db::describe(&e)));
                self.sleep(Duration::from_secs(1)).await;
                return false;
            }
        };
        if let Some(sql) = self.init_sql {
            if let Err(e) = client.batch_execute(sql).await {
                self.record("connect", started, Outcome::Unexpected(db::describe(&e)));
                return false;
            }
        }
        self.generation += 1;
        self.client = Some(client);
        true
    }

    fn record(&self, kind: &'static str, started: std::time::Instant, outcome: Outcome) {
        self.shared
            .stats
            .record(self.class, kind, started.elapsed(), outcome);
    }

    /// Runs one statement (prepared once per connection) and records it under `kind`.
    /// None on error; inside a transaction the caller then calls [`Worker::rollback`].
    pub async fn q(
        &mut self,
        kind: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Option<Vec<Row>> {
        if !self.ensure_client().await {
            return None;
        }
        let client = self.client.as_ref().expect("connected");
        let statement = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => match client.prepare(sql).await {
                Ok(s) => {
                    self.statements.insert(sql, s.clone());
                    s
                }
                Err(e) => {
                    let message = format!("prepare {kind}: {}", db::describe(&e));
                    self.record(
                        kind,
                        std::time::Instant::now(),
                        Outcome::Unexpected(message),
                    );
                    return None;
                }
            },
        };
        let started = std::time::Instant::now();
        match client.query(&statement, params).await {
            Ok(rows) => {
                self.record(kind, started, Outcome::Ok);
                Some(rows)
            }
            Err(e) => {
                let expected = e.code().is_some_and(|c| self.expected.contains(c));
                let outcome = if expected {
                    Outcome::Expected
                } else {
                    Outcome::Unexpected(format!("{kind}: {}", db::describe(&e)))
                };
                self.record(kind, started, outcome);
                None
            }
        }
    }

    /// Runs transaction control (BEGIN/COMMIT/ROLLBACK); an error is unexpected.
    pub async fn control(&mut self, sql: &'static str) -> bool {
        if !self.ensure_client().await {
            return false;
        }
        let client = self.client.as_ref().expect("connected");
        match client.batch_execute(sql).await {
            Ok(()) => true,
            Err(e) => {
                self.record(
                    "transaction",
                    std::time::Instant::now(),
                    Outcome::Unexpected(format!("{sql}: {}", db::describe(&e))),
                );
                false
            }
        }
    }

    pub async fn rollback(&mut self) {
        if let Some(client) = &self.client {
            let _ = client.batch_execute("ROLLBACK").await;
        }
    }

    /// An index skewed towards the front (where the seed puts its heavy rows).
    pub fn skewed(&mut self, len: usize) -> usize {
        let u: f64 = self.rng.random();
        ((len as f64 * u * u) as usize).min(len.saturating_sub(1))
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }
}

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
const CHANNELS: [&str; 4] = ["push", "email", "sms", "in_app"];
const PLATFORMS: [&str; 3] = ["fcm", "apns", "webpush"];

// ------------------------------------------------------------------ queue --

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
        let n = w.shared.samples.conversations.len();
        let i = w.skewed(n);
        let user = w.shared.samples.conversations[i].client;
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
        let started = std::time::Instant::now();
        w.crash();
        w.record("crash", started, Outcome::Ok);
        return false;
    }
    for row in &rows {
        let id: i64 = row.get(0);
        let notification: i64 = row.get(1);
        let channel: String = row.get(2);
        let attempt: i32 = row.get::<_, i32>(3) + 1;
        if w.chance(w.shared.knobs.notification_failure_rate) {
            let (base, cap) = (1.0f64, 10.0f64);
            w.q(
                "fail",
                FAIL,
                &[&id, &owner, &"provider timeout", &base, &cap],
            )
            .await;
            w.q(
                "delivery",
                DELIVERY,
                &[&notification, &channel, &"failed", &attempt],
            )
            .await;
        } else {
            w.q("complete", COMPLETE, &[&id, &owner]).await;
            w.q(
                "delivery",
                DELIVERY,
                &[&notification, &channel, &"sent", &attempt],
            )
            .await;
        }
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
        w.crash();
        w.record("crash", started, Outcome::Ok);
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

// --------------------------------------------------------------- webhooks --

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

// ------------------------------------------------------------------- chat --

const MESSAGE_INSERT: &str = "\
INSERT INTO chat.messages (conversation_id, sender_user_id, body) VALUES ($1, $2, $3)";
const CONVERSATION_TOUCH: &str = "\
UPDATE chat.conversations SET last_message_preview = left($2, 100), updated_at = now()
WHERE id = $1";
const TIMELINE: &str = "\
SELECT id, sender_user_id, body, status, created_at
FROM chat.messages
WHERE conversation_id = $1
ORDER BY created_at DESC
LIMIT 50";
const UNREAD: &str = "\
SELECT count(*)
FROM chat.messages
WHERE conversation_id = $1
  AND status IN ('SENT', 'DELIVERED')
  AND sender_user_id <> $2
  AND is_deleted = false";
const MARK_READ: &str = "\
UPDATE chat.messages
SET status = 'READ', read_at = now()
WHERE conversation_id = $1
  AND sender_user_id = $2
  AND status IN ('SENT', 'DELIVERED')";
const INBOX_CLIENT: &str = "\
SELECT id, owner_user_id, last_message_preview, updated_at
FROM chat.conversations
WHERE client_user_id = $1 AND archived_by_client = false
ORDER BY updated_at DESC
LIMIT 20";
const INBOX_OWNER: &str = "\
SELECT id, client_user_id, last_message_preview, updated_at
FROM chat.conversations
WHERE owner_user_id = $1 AND archived_by_owner = false
ORDER BY updated_at DESC
LIMIT 20";

/// Chat: messages sent, timelines and unread counts read, conversations marked read, inboxes.
pub async fn chat(mut w: Worker) {
    while w.next().await {
        let n = w.shared.samples.conversations.len();
        let i = w.skewed(n);
        let c = w.shared.samples.conversations[i];
        // The reader is one participant, the other one sent the messages.
        let (reader, other) = if w.chance(0.5) {
            (c.client, c.owner)
        } else {
            (c.owner, c.client)
        };
        let roll: f64 = w.rng.random();
        if roll < 0.25 {
            let body = format!("pgkpi-load message {}", w.rng.random::<u32>());
            if w.q("send", MESSAGE_INSERT, &[&c.id, &reader, &body])
                .await
                .is_some()
            {
                w.q("conversation_touch", CONVERSATION_TOUCH, &[&c.id, &body])
                    .await;
            }
        } else if roll < 0.60 {
            w.q("timeline", TIMELINE, &[&c.id]).await;
        } else if roll < 0.75 {
            w.q("unread", UNREAD, &[&c.id, &reader]).await;
        } else if roll < 0.85 {
            w.q("mark_read", MARK_READ, &[&c.id, &other]).await;
        } else if reader == c.client {
            w.q("inbox", INBOX_CLIENT, &[&reader]).await;
        } else {
            w.q("inbox", INBOX_OWNER, &[&reader]).await;
        }
    }
}

// --------------------------------------------------------------- bookings --

const BY_HOST: &str = "\
SELECT id, guest_user_id, status, check_in_date, check_out_date
FROM core.bookings
WHERE host_user_id = $1
ORDER BY created_at DESC
LIMIT 20";
const BY_GUEST: &str = "\
SELECT id, host_user_id, status, check_in_date, check_out_date
FROM core.bookings
WHERE guest_user_id = $1
ORDER BY created_at DESC
LIMIT 20";
const AVAILABILITY: &str = "\
SELECT id, status, check_in_date, check_out_date
FROM core.bookings
WHERE listing_id = $1
  AND status IN ('pending_payment', 'confirmed')
  AND check_in_date < current_date + $3::int
  AND check_out_date > current_date + $2::int";
const BOOKING_INSERT: &str = "\
INSERT INTO core.bookings (listing_id, host_user_id, guest_user_id, status, check_in_date,
                           check_out_date, guests, total_amount, payment_deadline)
VALUES ($1, $2, $3, 'pending_payment', current_date + $4::int, current_date + $5::int, 2,
        $6::float8, now() + make_interval(secs => $7))
RETURNING id";
const PAYMENT_INSERT: &str = "\
INSERT INTO core.booking_payments (booking_id, payment_type, status, amount)
VALUES ($1, 'charge', 'pending', $2::float8)";
const PAYMENT_SUCCEEDED: &str = "\
UPDATE core.booking_payments SET status = 'succeeded', updated_at = now()
WHERE booking_id = $1 AND status = 'pending'";
const BOOKING_CONFIRM: &str = "\
UPDATE core.bookings SET status = 'confirmed', updated_at = now()
WHERE id = $1 AND status = 'pending_payment'";
const PAYMENTS_BY_BOOKING: &str = "\
SELECT id, payment_type, status, amount, created_at
FROM core.booking_payments
WHERE booking_id = $1
ORDER BY created_at DESC";
const EXPIRE: &str = "\
UPDATE core.bookings SET status = 'expired', updated_at = now()
WHERE id IN (SELECT id FROM core.bookings
             WHERE status = 'pending_payment' AND payment_deadline < now()
             ORDER BY payment_deadline
             LIMIT 100
             FOR UPDATE SKIP LOCKED)";

/// Bookings: host and guest lists, availability checks, new bookings with a payment (most
/// are paid, the rest expire and are swept by the payment-deadline job).
pub async fn bookings(mut w: Worker) {
    let mut created: Vec<i64> = Vec::new();
    while w.next().await {
        let n = w.shared.samples.bookings.len();
        let i = w.skewed(n);
        let b = w.shared.samples.bookings[i];
        let roll: f64 = w.rng.random();
        if roll < 0.25 {
            w.q("by_host", BY_HOST, &[&b.host]).await;
        } else if roll < 0.45 {
            w.q("by_guest", BY_GUEST, &[&b.guest]).await;
        } else if roll < 0.65 {
            let from: i32 = w.rng.random_range(1..120);
            let to = from + w.rng.random_range(1..10);
            w.q("availability", AVAILABILITY, &[&b.listing, &from, &to])
                .await;
        } else if roll < 0.85 {
            let check_in: i32 = w.rng.random_range(1..180);
            let check_out = check_in + w.rng.random_range(1..14);
            let amount: f64 = w.rng.random_range(50.0..2000.0);
            let deadline: f64 = w.rng.random_range(2.0..30.0);
            let Some(rows) = w
                .q(
                    "create",
                    BOOKING_INSERT,
                    &[
                        &b.listing, &b.host, &b.guest, &check_in, &check_out, &amount, &deadline,
                    ],
                )
                .await
            else {
                continue;
            };
            let id: i64 = rows[0].get(0);
            w.q("payment", PAYMENT_INSERT, &[&id, &amount]).await;
            if w.chance(0.7) {
                w.q("payment_succeeded", PAYMENT_SUCCEEDED, &[&id]).await;
                w.q("confirm", BOOKING_CONFIRM, &[&id]).await;
            }
            if created.len() < 10_000 {
                created.push(id);
            }
        } else if roll < 0.95 {
            let id = if created.is_empty() || w.chance(0.5) {
                w.shared.samples.hot_booking + w.skewed(n) as i64
            } else {
                created[w.rng.random_range(0..created.len())]
            };
            w.q("payments_by_booking", PAYMENTS_BY_BOOKING, &[&id])
                .await;
        } else {
            w.q("expire", EXPIRE, &[]).await;
        }
    }
}

// -------------------------------------------------------------- analytics --

const ANALYTICS_EVENT: &str = "\
INSERT INTO core.analytics_events (occurred_at, event_type, user_id, session_id, properties)
VALUES (now(), $1, $2, $3, jsonb_build_object('source', 'pgkpi-load'))";
const LISTING_VIEW: &str = "\
INSERT INTO core.listing_views (viewed_at, listing_id, viewer_user_id, session_id, referrer)
VALUES (now(), $1, $2, $3, $4)";
const USER_ACTIVITY: &str = "\
INSERT INTO core.user_activity (user_id, activity_type) VALUES ($1, $2)";
const API_LOG: &str = "\
INSERT INTO integration.external_api_logs (provider, endpoint, status_code, duration_ms, error)
VALUES ($1, $2, $3, $4, CASE WHEN $3 >= 500 THEN 'upstream error' END)";
const USER_EVENTS: &str = "\
SELECT event_type, count(*)
FROM core.analytics_events
WHERE user_id = $1 AND occurred_at >= now() - interval '30 days'
GROUP BY event_type";

/// Migrated schema only (the partitioned history tables of 007): analytics events, listing
/// views, user activity and external API call logs, plus a per-user read.
pub async fn analytics(mut w: Worker) {
    const KINDS: [&str; 5] = [
        "page_view",
        "search",
        "listing_click",
        "booking_start",
        "login",
    ];
    while w.next().await {
        let n = w.shared.samples.conversations.len();
        let i = w.skewed(n);
        let user = w.shared.samples.conversations[i].client;
        let session = format!("{:016x}", w.rng.random::<u64>());
        let roll: f64 = w.rng.random();
        if roll < 0.6 {
            let kind = KINDS[w.skewed(KINDS.len())];
            w.q("event", ANALYTICS_EVENT, &[&kind, &user, &session])
                .await;
        } else if roll < 0.8 {
            let nb = w.shared.samples.bookings.len();
            let j = w.skewed(nb);
            let listing = w.shared.samples.bookings[j].listing;
            w.q(
                "listing_view",
                LISTING_VIEW,
                &[&listing, &user, &session, &"search"],
            )
            .await;
        } else if roll < 0.9 {
            w.q("user_activity", USER_ACTIVITY, &[&user, &"login"])
                .await;
        } else if roll < 0.95 {
            let status: i32 = if w.chance(0.04) { 500 } else { 200 };
            let duration: i32 = w.rng.random_range(20..2000);
            w.q(
                "api_log",
                API_LOG,
                &[&"stripe", &"/v1/charges", &status, &duration],
            )
            .await;
        } else {
            w.q("user_events", USER_EVENTS, &[&user]).await;
        }
    }
}

// ---------------------------------------------------------- lock contention --

const HOLD: &str = "SELECT id FROM core.bookings WHERE id = $1 FOR UPDATE";
const WAIT: &str = "UPDATE core.bookings SET updated_at = now() WHERE id = $1";

/// Every `--lock-every`, locks one booking row and keeps the transaction open for
/// `--lock-hold`, like a request that does slow work (an HTTP call) inside a transaction.
pub async fn lock_holder(mut w: Worker) {
    let hot = w.shared.samples.hot_booking;
    let hold = w.shared.knobs.lock_hold;
    while w.next().await {
        if !w.control("BEGIN").await {
            continue;
        }
        if w.q("hold", HOLD, &[&hot]).await.is_none() {
            w.rollback().await;
            continue;
        }
        w.sleep(hold).await;
        w.control("COMMIT").await;
    }
}

/// Updates the same row with `lock_timeout = 1s`: waits while it is held, and gives up
/// (expected 55P03, counted separately) when the hold outlasts the timeout.
pub async fn lock_waiter(mut w: Worker) {
    w.init_sql = Some("SET lock_timeout = '1s'");
    w.expected.push(SqlState::LOCK_NOT_AVAILABLE);
    let hot = w.shared.samples.hot_booking;
    while w.next().await {
        w.q("wait", WAIT, &[&hot]).await;
    }
}
