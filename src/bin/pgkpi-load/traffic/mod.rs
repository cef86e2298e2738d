//! The traffic classes. Each task owns one connection named `pgkpi-load/<class>`, paces itself
//! to its share of `--rate`, and stops at the deadline, on a signal, or when the global
//! operation budget is spent.
//!
//! Every class uses fixed statement texts with bind parameters, so pg_stat_statements groups
//! them into one entry per statement shape (one "statement class" per kind below). Where the
//! schema differs (baseline vs migrated) only the queue, the webhook dispatch lookup and the
//! analytics inserts change; every other statement is identical, so its plan and latency can
//! be compared before and after the migrations.
//!
//! # Layout
//! * this file: the knobs, the shared state and the `Worker` every class runs on (connection,
//!   statement cache, pacing, recording of each operation);
//! * `queue`: producer, consumer and reaper; `webhooks`: events, deliveries and sweeps;
//!   `chat`; `bookings`; `analytics`; `locks`: the lock holder and waiter. Each file keeps the
//!   SQL it runs next to the code that runs it.

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

use crate::db::{self, BookingParties, Conversation, Samples, Schema};
use crate::stats::{Outcome, Stats};

mod analytics;
mod bookings;
mod chat;
mod locks;
mod queue;
mod webhooks;

pub use analytics::analytics;
pub use bookings::bookings;
pub use chat::chat;
pub use locks::{lock_holder, lock_waiter};
pub use queue::{consumer, producer, reaper};
pub use webhooks::webhooks;

/// Knobs the classes read; filled from the command line.
pub struct Knobs {
    pub webhook_failure_rate: f64,
    pub notification_failure_rate: f64,
    pub consumer_crash_rate: f64,
    pub batch: i32,
    pub lease: Duration,
    pub lock_hold: Duration,
    pub max_ops: u64,
    /// Behind a transaction-mode pooler: see `--pooled`.
    pub pooled: bool,
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
    /// Between BEGIN and COMMIT/ROLLBACK of an operation (pooled mode needs to know).
    in_transaction: bool,
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
            in_transaction: false,
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

    /// Drops the connection without finishing anything: a process that died. Recorded as a
    /// `crash` operation timed from `started`.
    pub fn crash(&mut self, started: std::time::Instant) {
        self.client = None;
        self.statements.clear();
        self.record("crash", started, Outcome::Ok);
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
        self.in_transaction = false;
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
        if self.shared.knobs.pooled {
            let started = std::time::Instant::now();
            let result = self.pooled_query(sql, params).await;
            return self.outcome(kind, started, result);
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
        let result = client.query(&statement, params).await;
        self.outcome(kind, started, result)
    }

    /// Records a statement's result under `kind`.
    fn outcome(
        &self,
        kind: &'static str,
        started: std::time::Instant,
        result: Result<Vec<Row>, tokio_postgres::Error>,
    ) -> Option<Vec<Row>> {
        match result {
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

    /// One statement through a transaction-mode pooler: prepared, run and closed within one
    /// transaction, so the pooler keeps it on one server connection; the Close (sent when the
    /// statement is dropped) precedes COMMIT on the same connection, so no prepared statement
    /// is left behind on a server another client gets next.
    async fn pooled_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let client = self.client.as_ref().expect("connected");
        let own = !self.in_transaction;
        if own {
            client.batch_execute("BEGIN").await?;
        }
        let result = match client.prepare(sql).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        };
        if own {
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            client.batch_execute(end).await?;
        }
        result
    }

    /// Runs transaction control (BEGIN/COMMIT/ROLLBACK); an error is unexpected.
    pub async fn control(&mut self, sql: &'static str) -> bool {
        if !self.ensure_client().await {
            return false;
        }
        let client = self.client.as_ref().expect("connected");
        match client.batch_execute(sql).await {
            Ok(()) => {
                self.in_transaction = sql.starts_with("BEGIN");
                true
            }
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
        self.in_transaction = false;
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

    /// A sampled conversation, picked with [`Worker::skewed`].
    fn conversation(&mut self) -> Conversation {
        let i = self.skewed(self.shared.samples.conversations.len());
        self.shared.samples.conversations[i]
    }

    /// A sampled booking's listing and parties, picked with [`Worker::skewed`].
    fn booking(&mut self) -> BookingParties {
        let i = self.skewed(self.shared.samples.bookings.len());
        self.shared.samples.bookings[i]
    }
}
