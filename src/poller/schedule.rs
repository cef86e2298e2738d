//! One collector's task: runs it on its interval against the current session of its lane,
//! bounds each run, and publishes the outcome (values, errors, skips) to the snapshot, the
//! status page and the exporter's own metrics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Conn, Scheduled, Source};
use crate::collector::{CollectError, SkipReason};
use crate::metric::Family;
use crate::shared::Shared;
use crate::status::unix_now;

pub(super) async fn run_collector(
    source: Source,
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
    // Set when the last run found no session: the lane's return is worth a run at once. A lane
    // that went down and came back between two runs (a session dropped after a client-side
    // timeout, a blip) keeps the schedule: running every collector of the lane at each
    // reconnect turned one overloaded statement into a storm of runs (50 000 tables: the
    // unused-index check ran 167 times in ten minutes instead of about 30).
    let mut missed = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                // A session being replaced (see `wants_fresh_session`) is back within a
                // round trip: wait for it rather than record a failed run.
                let replaced = tokio::time::timeout(
                    scheduled.timeout,
                    conn.wait_for(|c| !matches!(c, Conn::Connecting)),
                );
                tokio::select! {
                    waited = replaced => if matches!(waited, Ok(Err(_))) { return },
                    _ = shutdown.changed() => return,
                }
            }
            changed = conn.changed() => {
                if changed.is_err() {
                    return;
                }
                // Run at once when the target comes back from an outage that cost this
                // collector a run; otherwise (a session replaced on purpose or after a
                // timeout) keep the schedule.
                match &*conn.borrow_and_update() {
                    Conn::Up(_) if missed => {}
                    Conn::Up(_) | Conn::Down(_) | Conn::Connecting => continue,
                }
            }
            _ = shutdown.changed() => return,
        }
        let started = tokio::time::Instant::now();
        let current = conn.borrow_and_update().clone();
        missed = !matches!(current, Conn::Up(_));
        run_once(&source, &mut scheduled, current, &shared, &mut state).await;
        next = if scheduled.collector.has_pending_work() {
            // The rest of a spread pass: after a pause as long as the run, so that the pass
            // never takes more than half of the session's time.
            tokio::time::Instant::now() + started.elapsed().max(Duration::from_secs(1))
        } else {
            started + scheduled.interval
        };
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
pub(super) struct RunState {
    /// Undeclared families already logged.
    undeclared: BTreeSet<String>,
    /// The message of the failure (or skip) in progress, if any.
    failing_with: Option<String>,
    /// The reason code of the skip in progress, if any.
    skipped: Option<SkipReason>,
}

/// Runs a collector once on `conn` and publishes the outcome. The exporter's own metrics and
/// the status page are per (target, collector): the runs of a per-database collector in every
/// database of a server target add up there (bounded label sets however many databases),
/// while its values carry `datname`.
pub(super) async fn run_once(
    source: &Source,
    scheduled: &mut Scheduled,
    conn: Conn,
    shared: &Shared,
    state: &mut RunState,
) {
    let target = source.target.as_str();
    let database = source.database.as_deref();
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
                Ok(Ok(families)) => {
                    if scheduled.collector.wants_fresh_session() {
                        live.recycle.notify_one();
                    }
                    Ok(families)
                }
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
    t.collector_busy.with_label_values(&labels).inc_by(elapsed);
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
                    c.finished_run(elapsed, Ok(()));
                    c.last_success_unix = Some(now);
                });
            // The values go in after the self-metrics that describe them.
            shared.snapshot.put_in(
                target,
                database,
                &scheduled.name,
                families,
                scheduled.stale_after,
            );
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
                // In a server's databases a skip is the rule (a queue table in one database
                // of many): logged at debug, once per database.
                if database.is_some() {
                    tracing::debug!(target, database, collector = %scheduled.name, reason = reason.as_str(), why = %message, "collector skipped");
                } else if reason.needs_action() {
                    tracing::warn!(target, collector = %scheduled.name, reason = reason.as_str(), why = %message, "collector skipped");
                } else {
                    tracing::info!(target, collector = %scheduled.name, reason = reason.as_str(), why = %message, "collector skipped");
                }
                state.failing_with = Some(message.clone());
            }
            shared.snapshot.put_in(
                target,
                database,
                &scheduled.name,
                Vec::new(),
                scheduled.stale_after,
            );
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
                    c.finished_run(elapsed, Ok(()));
                    c.skipped = Some(format!("{}: {message}", reason.as_str()));
                });
        }
        Err(CollectError {
            message,
            skip: None,
        }) => {
            let stale = shared.snapshot.contains(target, database, &scheduled.name);
            t.collector_errors.with_label_values(&labels).inc();
            t.collector_up.with_label_values(&labels).set(0.0);
            t.collector_stale
                .with_label_values(&labels)
                .set(if stale { 1.0 } else { 0.0 });
            // Log when the failure starts or changes, not on every run of a long outage.
            if state.failing_with.as_deref() != Some(message.as_str()) {
                tracing::warn!(target, database, collector = %scheduled.name, error = %message, "collector failed");
                state.failing_with = Some(message.clone());
            }
            shared
                .status
                .update_collector(target, &scheduled.name, |c| {
                    c.finished_run(elapsed, Err(message));
                    c.stale = stale;
                });
        }
    }
    // Counted last, so that a run seen in pgkpi_collector_runs_total has its outcome
    // (values, errors, skip) already visible in the same scrape.
    t.collector_runs.with_label_values(&labels).inc();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::*;
    use crate::collector::{CollectFuture, Collector, Lane, Session};

    /// A collector that must not be reached: every test below keeps the target down, so the
    /// poller records failed runs on its schedule without calling it.
    struct Unreachable;

    impl Collector for Unreachable {
        fn collect<'a>(&'a mut self, _: &'a Session) -> CollectFuture<'a> {
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
            Source::target("t"),
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

    /// A collector task whose target is down from the start, after its first (failed) run.
    async fn started_down(
        interval: Duration,
    ) -> (
        Shared,
        watch::Sender<Conn>,
        watch::Sender<bool>,
        JoinHandle<()>,
    ) {
        let started = start(interval, Conn::Down("refused".into()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(runs(&started.0), 1, "first run at start");
        started
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
        let (shared, _conn, _stop, _task) = started_down(Duration::from_secs(5)).await;
        for expected in 2..=4 {
            advance(Duration::from_secs(5)).await;
            assert_eq!(runs(&shared), expected, "one run per interval");
        }
        advance(Duration::from_secs(4)).await;
        assert_eq!(runs(&shared), 4, "no run before the interval is up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_change_that_is_not_up_keeps_the_schedule() {
        let (shared, conn, _stop, _task) = started_down(Duration::from_secs(10)).await;
        advance(Duration::from_secs(3)).await;
        conn.send_replace(Conn::Down("reset by peer".into()));
        advance(Duration::from_secs(1)).await;
        assert_eq!(runs(&shared), 1, "only a target coming back runs early");
        advance(Duration::from_secs(6)).await;
        assert_eq!(runs(&shared), 2, "the next run stays on the 10 s schedule");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_task_between_runs() {
        let (shared, _conn, stop, task) = started_down(Duration::from_secs(5)).await;
        stop.send_replace(true);
        advance(Duration::from_millis(1)).await;
        assert!(task.is_finished(), "the task returns on shutdown");
        advance(Duration::from_secs(30)).await;
        assert_eq!(runs(&shared), 1, "no run after shutdown");
    }
}
