//! Polling: one connection per target, one schedule per collector.
//!
//! For each target a *supervisor* task owns the single connection: it connects, publishes the
//! live session on a `watch` channel, waits until the connection ends (or a collector reports
//! it unusable), and reconnects with capped exponential backoff and jitter. Each collector of
//! the target runs in its own task on its own interval, borrowing the current session from the
//! channel; when the target is down it records a failed run instead of waiting for it. Results
//! go to the [`Snapshot`](crate::snapshot::Snapshot); the HTTP side only ever reads that.
//!
//! * `connection`: the supervisor of one connection (lane) and its reconnect backoff;
//! * `databases`: a server target's databases: discovery and turns on a connection budget;
//! * `schedule`: one collector's task: its interval, one run, and what a run publishes.

mod connection;
mod databases;
mod schedule;

pub use self::databases::{BuildCollectors, DatabasePlan};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use self::connection::{supervise, Backoff};
use self::schedule::run_collector;
use crate::collector::{Collector, Lane, Session};
use crate::shared::Shared;
use crate::target::Target;

/// A collector with its effective schedule.
pub struct Scheduled {
    pub name: String,
    /// The connection it runs on.
    pub lane: Lane,
    pub interval: Duration,
    /// Client-side bound on one run.
    pub timeout: Duration,
    /// How long the last good values outlive a failing collector.
    pub stale_after: Duration,
    /// The names of the families the collector declares; anything else it returns is a bug
    /// and is dropped (see `keep_declared`).
    pub declared: BTreeSet<String>,
    pub collector: Box<dyn Collector>,
}

/// Whose values a collector task publishes: a target's own, or one database's of a server
/// target (see `databases`).
#[derive(Debug, Clone)]
pub struct Source {
    pub target: String,
    pub database: Option<String>,
}

impl Source {
    pub fn target(name: &str) -> Source {
        Source {
            target: name.to_string(),
            database: None,
        }
    }
}

/// The target's connection as collectors see it.
#[derive(Clone)]
enum Conn {
    /// Before the first connection attempt has finished.
    Connecting,
    Up(Arc<Live>),
    Down(String),
}

/// A working session and the way for collectors to report it broken.
struct Live {
    session: Session,
    /// Notified by a collector that timed out or found the connection closed; the supervisor
    /// then drops the session and reconnects.
    broken: Notify,
    /// Notified by a collector whose run filled the server session's caches (see
    /// `Collector::wants_fresh_session`): the supervisor closes the session once no collector
    /// uses it and opens a fresh one, without counting an error or lowering pg_up.
    recycle: Notify,
    /// Collectors on one connection take turns. The server runs one statement at a time per
    /// connection anyway; taking turns here makes each collector's timeout (and its measured
    /// duration) cover its own statements, not the wait behind a slow neighbour, which would
    /// otherwise time out innocent collectors and force needless reconnects.
    turn: tokio::sync::Mutex<()>,
}

/// Starts, for one target, a supervisor per connection (lane) in use and a task per collector;
/// for a server target (`databases`), also the discovery of its databases and their turns.
pub fn spawn_target(
    target: Target,
    collectors: Vec<Scheduled>,
    databases: Option<DatabasePlan>,
    backoff: (Duration, Duration),
    shared: Shared,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    shared.status.register(
        &target.name,
        &target.endpoint,
        &collectors
            .iter()
            .map(|c| (c.name.clone(), c.interval))
            .collect::<Vec<_>>(),
    );
    shared
        .telemetry
        .pg_up
        .with_label_values(&[&target.name])
        .set(0.0);
    shared
        .telemetry
        .target_info
        .with_label_values(&[&target.name, target.kind.as_str()])
        .set(1.0);
    // Counters start at 0 so that the first failure is an increase rate() can see.
    let t = &shared.telemetry;
    t.connection_attempts.with_label_values(&[&target.name]);
    t.connection_errors.with_label_values(&[&target.name]);
    t.connection_attempts_overdue
        .with_label_values(&[&target.name]);
    for c in &collectors {
        let labels = [target.name.as_str(), c.name.as_str()];
        t.collector_runs.with_label_values(&labels);
        t.collector_errors.with_label_values(&labels);
        t.collector_busy.with_label_values(&labels);
    }
    let target = Arc::new(target);
    let mut lanes: std::collections::BTreeMap<Lane, Vec<Scheduled>> = Default::default();
    lanes.entry(Lane::Main).or_default(); // always: it drives pg_up
    for scheduled in collectors {
        lanes.entry(scheduled.lane).or_default().push(scheduled);
    }
    let mut tasks = Vec::new();
    // A lane that connects wakes the others from their backoff: after an outage, all of the
    // target's connections come back together.
    let reconnected = Arc::new(Notify::new());
    let mut main = None;
    for (lane, collectors) in lanes {
        let (tx, rx) = watch::channel(Conn::Connecting);
        if lane == Lane::Main {
            main = Some(rx.clone());
        }
        tasks.push(tokio::spawn(supervise(
            target.clone(),
            lane,
            tx,
            Backoff::new(backoff.0, backoff.1),
            reconnected.clone(),
            shared.clone(),
            shutdown.clone(),
        )));
        for scheduled in collectors {
            tasks.push(tokio::spawn(run_collector(
                Source::target(&target.name),
                scheduled,
                rx.clone(),
                shared.clone(),
                shutdown.clone(),
            )));
        }
    }
    if let (Some(plan), Some(main)) = (databases, main) {
        tasks.push(tokio::spawn(databases::supervise(
            target.clone(),
            plan,
            main,
            shared.clone(),
            shutdown,
        )));
    }
    tasks
}

/// Drops values that outlived their staleness window, once a second.
pub fn spawn_janitor(shared: Shared, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for (target, database, collector) in shared.snapshot.expire(Instant::now()) {
                tracing::info!(target = %target, database = %database, collector = %collector, "dropped stale values");
                if !database.is_empty() {
                    // The collector's own metrics speak for every database of the server.
                    continue;
                }
                shared
                    .telemetry
                    .collector_stale
                    .with_label_values(&[target.as_str(), collector.as_str()])
                    .set(0.0);
                shared
                    .status
                    .update_collector(&target, &collector, |c| c.stale = false);
                shared
                    .telemetry
                    .snapshot_bytes
                    .set(shared.snapshot.body().len() as f64);
            }
        }
    })
}
