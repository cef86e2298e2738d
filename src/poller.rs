//! Polling: one connection per target, one schedule per collector.
//!
//! For each target a *supervisor* task owns the single connection: it connects, publishes the
//! live session on a `watch` channel, waits until the connection ends (or a collector reports
//! it unusable), and reconnects with capped exponential backoff and jitter. Each collector of
//! the target runs in its own task on its own interval, borrowing the current session from the
//! channel; when the target is down it records a failed run instead of waiting for it. Results
//! go to the [`Snapshot`](crate::snapshot::Snapshot); the HTTP side only ever reads that.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::collector::{CollectError, Collector, Lane, Session, SkipReason};
use crate::metric::Family;
use crate::shared::Shared;
use crate::status::unix_now;
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
    /// Collectors on one connection take turns. The server runs one statement at a time per
    /// connection anyway; taking turns here makes each collector's timeout (and its measured
    /// duration) cover its own statements, not the wait behind a slow neighbour, which would
    /// otherwise time out innocent collectors and force needless reconnects.
    turn: tokio::sync::Mutex<()>,
}

/// Reconnect timing: doubles from `initial` up to `max`, each wait drawn in [50%, 100%] of the
/// current step so that many exporters restarted together do not reconnect in lockstep.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// Starts, for one target, a supervisor per connection (lane) in use and a task per collector.
pub fn spawn_target(
    target: Target,
    collectors: Vec<Scheduled>,
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
    // Counters start at 0 so that the first failure is an increase rate() can see.
    let t = &shared.telemetry;
    t.connection_attempts.with_label_values(&[&target.name]);
    t.connection_errors.with_label_values(&[&target.name]);
    for c in &collectors {
        let labels = [target.name.as_str(), c.name.as_str()];
        t.collector_runs.with_label_values(&labels);
        t.collector_errors.with_label_values(&labels);
    }
    let target = Arc::new(target);
    let mut lanes: std::collections::BTreeMap<Lane, Vec<Scheduled>> = Default::default();
    lanes.entry(Lane::Main).or_default(); // always: it drives pg_up
    for scheduled in collectors {
        lanes.entry(scheduled.lane).or_default().push(scheduled);
    }
    let mut tasks = Vec::new();
    for (lane, collectors) in lanes {
        let (tx, rx) = watch::channel(Conn::Connecting);
        tasks.push(tokio::spawn(supervise(
            target.clone(),
            lane,
            tx,
            Backoff::new(backoff.0, backoff.1),
            shared.clone(),
            shutdown.clone(),
        )));
        for scheduled in collectors {
            tasks.push(tokio::spawn(run_collector(
                target.name.clone(),
                scheduled,
                rx.clone(),
                shared.clone(),
                shutdown.clone(),
            )));
        }
    }
    tasks
}

async fn supervise(
    target: Arc<Target>,
    lane: Lane,
    tx: watch::Sender<Conn>,
    mut backoff: Backoff,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = target.name.as_str();
    // Only the main connection speaks for the target (pg_up, status); a sampler connection
    // that fails shows through its collector's own metrics.
    let main = lane == Lane::Main;
    let pg_up = shared.telemetry.pg_up.with_label_values(&[name]);
    let mut failures: u32 = 0;
    loop {
        shared
            .telemetry
            .connection_attempts
            .with_label_values(&[name])
            .inc();
        let attempt = tokio::select! {
            attempt = target.connect() => attempt,
            _ = shutdown.changed() => return,
        };
        match attempt {
            Ok((client, server, mut driver)) => {
                backoff.reset();
                failures = 0;
                tracing::info!(target = name, ?lane, endpoint = %target.endpoint, version = %server.version, "connected");
                if main {
                    pg_up.set(1.0);
                    shared.status.update_target(name, |t| {
                        t.attempted = true;
                        t.up = true;
                        t.server_version = Some(server.version.clone());
                        t.last_error = None;
                    });
                }
                let live = Arc::new(Live {
                    session: Session { client, server },
                    broken: Notify::new(),
                    turn: tokio::sync::Mutex::new(()),
                });
                tx.send_replace(Conn::Up(live.clone()));
                let reason = tokio::select! {
                    _ = &mut driver => "connection closed".to_string(),
                    _ = live.broken.notified() => "session unusable (timeout or closed connection)".to_string(),
                    _ = shutdown.changed() => {
                        driver.abort();
                        return;
                    }
                };
                driver.abort();
                tracing::warn!(target = name, ?lane, reason = %reason, "lost connection");
                if main {
                    pg_up.set(0.0);
                    shared.status.update_target(name, |t| {
                        t.up = false;
                        t.last_error = Some(reason.clone());
                    });
                }
                tx.send_replace(Conn::Down(reason));
                // Reconnect at once: a dropped session is often a one-off (restart, failover).
                continue;
            }
            Err(error) => {
                failures += 1;
                shared
                    .telemetry
                    .connection_errors
                    .with_label_values(&[name])
                    .inc();
                let message = error.to_string();
                // The first failure is worth a warning; repeats only every 10th time.
                if failures == 1 || failures % 10 == 0 {
                    tracing::warn!(target = name, ?lane, error = %message, attempts = failures, "connection failed");
                } else {
                    tracing::debug!(target = name, ?lane, error = %message, attempts = failures, "connection failed");
                }
                if main {
                    pg_up.set(0.0);
                    shared.status.update_target(name, |t| {
                        t.attempted = true;
                        t.up = false;
                        t.last_error = Some(message.clone());
                    });
                }
                tx.send_replace(Conn::Down(message));
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn run_collector(
    target: String,
    mut scheduled: Scheduled,
    mut conn: watch::Receiver<Conn>,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    // The first run waits for the first connection attempt, so that it is not recorded as
    // failed just because the connection was still being set up.
    while matches!(*conn.borrow_and_update(), Conn::Connecting) {
        tokio::select! {
            changed = conn.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
    let mut next = tokio::time::Instant::now();
    let mut state = RunState::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = conn.changed() => {
                if changed.is_err() {
                    return;
                }
                // Run at once when the target comes back; otherwise keep the schedule.
                if !matches!(*conn.borrow_and_update(), Conn::Up(_)) {
                    continue;
                }
            }
            _ = shutdown.changed() => return,
        }
        next = tokio::time::Instant::now() + scheduled.interval;
        let current = conn.borrow_and_update().clone();
        run_once(&target, &mut scheduled, current, &shared, &mut state).await;
    }
}

/// Drops families the collector did not declare: they would be served without HELP checked
/// against the reference, and a misspelt name would go unnoticed. Logged once per family at
/// error level; the integration tests fail on that line.
fn keep_declared(
    target: &str,
    scheduled: &Scheduled,
    families: &mut Vec<Family>,
    state: &mut RunState,
) {
    families.retain(|family| {
        let declared = scheduled.declared.contains(&family.name);
        if !declared && state.undeclared.insert(family.name.clone()) {
            tracing::error!(target, collector = %scheduled.name, family = %family.name, "undeclared family dropped; declare it in the collector's families");
        }
        declared
    });
}

/// What a collector task remembers between runs, to log state changes only.
#[derive(Default)]
struct RunState {
    /// Undeclared families already logged.
    undeclared: BTreeSet<String>,
    /// The message of the failure (or skip) in progress, if any.
    failing_with: Option<String>,
    /// The reason code of the skip in progress, if any.
    skipped: Option<SkipReason>,
}

async fn run_once(
    target: &str,
    scheduled: &mut Scheduled,
    conn: Conn,
    shared: &Shared,
    state: &mut RunState,
) {
    let labels = [target, scheduled.name.as_str()];
    let t = &shared.telemetry;
    let holder = match &conn {
        Conn::Up(live) => Some(live.clone()),
        _ => None,
    };
    let turn = match &holder {
        Some(live) => Some(live.turn.lock().await),
        None => None,
    };
    let started = Instant::now();
    let result = match conn {
        Conn::Up(live) => {
            match tokio::time::timeout(
                scheduled.timeout,
                scheduled.collector.collect(&live.session),
            )
            .await
            {
                Ok(Ok(families)) => Ok(families),
                Ok(Err(error)) => {
                    if live.session.client.is_closed() {
                        live.broken.notify_one();
                    }
                    Err(error)
                }
                Err(_) => {
                    // The query may still occupy the connection; a fresh one is cheaper than
                    // guessing when it will be free.
                    live.broken.notify_one();
                    Err(CollectError::failed(format!(
                        "timed out after {} (client-side timeout)",
                        humantime::format_duration(scheduled.timeout)
                    )))
                }
            }
        }
        Conn::Down(reason) => Err(CollectError::failed(format!("target down: {reason}"))),
        Conn::Connecting => Err(CollectError::failed("target not connected yet")),
    };
    drop(turn);
    let elapsed = started.elapsed().as_secs_f64();
    t.collector_duration.with_label_values(&labels).set(elapsed);
    match result {
        Ok(mut families) => {
            keep_declared(target, scheduled, &mut families, state);
            let now = unix_now();
            t.collector_up.with_label_values(&labels).set(1.0);
            t.collector_stale.with_label_values(&labels).set(0.0);
            t.collector_last_success.with_label_values(&labels).set(now);
            if let Some(dropped) = scheduled.collector.dropped_series() {
                t.collector_dropped
                    .with_label_values(&labels)
                    .set(dropped as f64);
            }
            if state.failing_with.take().is_some() {
                tracing::info!(target, collector = %scheduled.name, "collector recovered");
            }
            // A collector that was skipped (extension installed since, promotion, ...) is no
            // longer.
            if let Some(reason) = state.skipped.take() {
                let _ = t.collector_skipped.remove_label_values(&[
                    target,
                    &scheduled.name,
                    reason.as_str(),
                ]);
            }
            shared
                .status
                .update_collector(target, &scheduled.name, |c| {
                    c.attempted = true;
                    c.up = true;
                    c.stale = false;
                    c.runs += 1;
                    c.last_duration_seconds = Some(elapsed);
                    c.last_success_unix = Some(now);
                    c.last_error = None;
                });
            // The values go in after the self-metrics that describe them.
            shared
                .snapshot
                .put(target, &scheduled.name, families, scheduled.stale_after);
            t.snapshot_bytes.set(shared.snapshot.body().len() as f64);
        }
        Err(CollectError {
            message,
            skip: Some(reason),
        }) => {
            // By design, not a failure: one log line when it starts, a gauge saying why.
            if state.failing_with.as_deref() != Some(message.as_str()) {
                // Skips that need someone (an extension, a grant) warn; skips by design (a
                // standby-only collector on a primary, an old server) only inform.
                if reason.needs_action() {
                    tracing::warn!(target, collector = %scheduled.name, reason = reason.as_str(), why = %message, "collector skipped");
                } else {
                    tracing::info!(target, collector = %scheduled.name, reason = reason.as_str(), why = %message, "collector skipped");
                }
                state.failing_with = Some(message.clone());
            }
            shared
                .snapshot
                .put(target, &scheduled.name, Vec::new(), scheduled.stale_after);
            t.collector_up.with_label_values(&labels).set(1.0);
            t.collector_stale.with_label_values(&labels).set(0.0);
            if let Some(previous) = state.skipped.replace(reason) {
                if previous != reason {
                    let _ = t.collector_skipped.remove_label_values(&[
                        target,
                        &scheduled.name,
                        previous.as_str(),
                    ]);
                }
            }
            t.collector_skipped
                .with_label_values(&[target, &scheduled.name, reason.as_str()])
                .set(1.0);
            shared
                .status
                .update_collector(target, &scheduled.name, |c| {
                    c.attempted = true;
                    c.up = true;
                    c.stale = false;
                    c.runs += 1;
                    c.last_duration_seconds = Some(elapsed);
                    c.last_error = None;
                    c.skipped = Some(format!("{}: {message}", reason.as_str()));
                });
        }
        Err(CollectError {
            message,
            skip: None,
        }) => {
            let stale = shared.snapshot.contains(target, &scheduled.name);
            t.collector_errors.with_label_values(&labels).inc();
            t.collector_up.with_label_values(&labels).set(0.0);
            t.collector_stale
                .with_label_values(&labels)
                .set(if stale { 1.0 } else { 0.0 });
            // Log when the failure starts or changes, not on every run of a long outage.
            if state.failing_with.as_deref() != Some(message.as_str()) {
                tracing::warn!(target, collector = %scheduled.name, error = %message, "collector failed");
                state.failing_with = Some(message.clone());
            }
            shared
                .status
                .update_collector(target, &scheduled.name, |c| {
                    c.attempted = true;
                    c.up = false;
                    c.stale = stale;
                    c.runs += 1;
                    c.errors += 1;
                    c.last_duration_seconds = Some(elapsed);
                    c.last_error = Some(message);
                });
        }
    }
    // Counted last, so that a run seen in pgkpi_collector_runs_total has its outcome
    // (values, errors, skip) already visible in the same scrape.
    t.collector_runs.with_label_values(&labels).inc();
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
            for (target, collector) in shared.snapshot.expire(Instant::now()) {
                tracing::info!(target = %target, collector = %collector, "dropped stale values");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector that must not be reached: every test below keeps the target down, so the
    /// poller records failed runs on its schedule without calling it.
    struct Unreachable;

    impl Collector for Unreachable {
        fn collect<'a>(&'a mut self, _: &'a Session) -> crate::collector::CollectFuture<'a> {
            panic!("collect called while the target is down")
        }
    }

    fn shared() -> Shared {
        Shared {
            snapshot: Arc::new(crate::snapshot::Snapshot::new()),
            status: Arc::new(crate::status::Status::new()),
            telemetry: crate::telemetry::Telemetry::new(),
            views: Arc::new(crate::views::Views::new()),
        }
    }

    fn scheduled(interval: Duration) -> Scheduled {
        Scheduled {
            name: "c".into(),
            lane: Lane::Main,
            interval,
            timeout: Duration::from_secs(1),
            stale_after: interval * 3,
            declared: BTreeSet::new(),
            collector: Box::new(Unreachable),
        }
    }

    /// Starts one collector task on a connection channel the test drives.
    fn start(
        interval: Duration,
        conn: Conn,
    ) -> (
        Shared,
        watch::Sender<Conn>,
        watch::Sender<bool>,
        JoinHandle<()>,
    ) {
        let shared = shared();
        let (conn_tx, conn_rx) = watch::channel(conn);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_collector(
            "t".into(),
            scheduled(interval),
            conn_rx,
            shared.clone(),
            stop_rx,
        ));
        (shared, conn_tx, stop_tx, task)
    }

    fn runs(shared: &Shared) -> u64 {
        shared
            .telemetry
            .collector_runs
            .with_label_values(&["t", "c"])
            .get()
    }

    /// Lets the spawned task reach its next await point, then moves the paused clock.
    async fn advance(by: Duration) {
        tokio::task::yield_now().await;
        tokio::time::advance(by).await;
        tokio::task::yield_now().await;
    }

    #[test]
    fn undeclared_families_are_dropped_and_remembered_once() {
        use crate::metric::Metric;
        const KNOWN: Metric = Metric::gauge("pg_known", &["target"], "declared");
        const TYPO: Metric = Metric::gauge("pg_knwon", &["target"], "not declared");
        let mut scheduled = scheduled(Duration::from_secs(1));
        scheduled.declared = [KNOWN.name.to_string()].into();
        let mut state = RunState::default();
        for _ in 0..2 {
            let mut families = vec![KNOWN.family().with(&[], 1.0), TYPO.family().with(&[], 2.0)];
            keep_declared("t", &scheduled, &mut families, &mut state);
            let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["pg_known"]);
        }
        assert_eq!(state.undeclared, ["pg_knwon".to_string()].into());
    }

    #[tokio::test(start_paused = true)]
    async fn first_run_waits_for_the_first_connection_attempt() {
        let (shared, conn, _stop, _task) = start(Duration::from_secs(5), Conn::Connecting);
        advance(Duration::from_secs(60)).await;
        assert_eq!(runs(&shared), 0, "no run is recorded while connecting");
        conn.send_replace(Conn::Down("refused".into()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(
            runs(&shared),
            1,
            "the attempt's outcome is recorded at once"
        );
        let errors = shared
            .telemetry
            .collector_errors
            .with_label_values(&["t", "c"])
            .get();
        assert_eq!(errors, 1, "a run against a down target is a failed run");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_its_interval_while_the_target_is_down() {
        let (shared, _conn, _stop, _task) =
            start(Duration::from_secs(5), Conn::Down("refused".into()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(runs(&shared), 1, "first run at start");
        for expected in 2..=4 {
            advance(Duration::from_secs(5)).await;
            assert_eq!(runs(&shared), expected, "one run per interval");
        }
        advance(Duration::from_secs(4)).await;
        assert_eq!(runs(&shared), 4, "no run before the interval is up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_change_that_is_not_up_keeps_the_schedule() {
        let (shared, conn, _stop, _task) =
            start(Duration::from_secs(10), Conn::Down("refused".into()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(runs(&shared), 1);
        advance(Duration::from_secs(3)).await;
        conn.send_replace(Conn::Down("reset by peer".into()));
        advance(Duration::from_secs(1)).await;
        assert_eq!(runs(&shared), 1, "only a target coming back runs early");
        advance(Duration::from_secs(6)).await;
        assert_eq!(runs(&shared), 2, "the next run stays on the 10 s schedule");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_task_between_runs() {
        let (shared, _conn, stop, task) =
            start(Duration::from_secs(5), Conn::Down("refused".into()));
        advance(Duration::from_millis(1)).await;
        stop.send_replace(true);
        advance(Duration::from_millis(1)).await;
        assert!(task.is_finished(), "the task returns on shutdown");
        advance(Duration::from_secs(30)).await;
        assert_eq!(runs(&shared), 1, "no run after shutdown");
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let step = Duration::from_millis((100u64 << i).min(1000));
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
