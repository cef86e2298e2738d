//! The databases of a server target (`[targets.databases]`): discovery, and turns on a
//! bounded number of connections.
//!
//! The target's main connection runs the server-wide collectors as for any target. Beside
//! it, a *discovery* task lists the server's databases on that same connection (taking its
//! turn like a collector, so it adds no connection) every `discovery_interval`, keeps those
//! that match the filter (templates and `datallowconn = false` never do), and starts or stops
//! a task per database. Each database task, when one of its collectors is due, waits for a
//! free connection (a FIFO semaphore: databases get connections in the order they asked, so
//! none starves), connects to its database, runs every collector due (or nearly due: one
//! connection serves them all), disconnects and hands the connection on. A database's
//! collector instances live in its task, so their state (deltas, caches) survives between
//! turns.
//!
//! The budget is a hard limit as the server counts connections: a connection is handed on
//! only after the client ended it (Terminate sent, socket closed) and a short pause in which
//! the server's backend, which exits as soon as it reads Terminate, leaves
//! pg_stat_activity; an attempt that outlives its timeout keeps its connection until it ends
//! (see `Target::connect`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::schedule::{run_once, RunState};
use super::{Conn, Live, Scheduled, Source};
use crate::collector::Session;
use crate::config::DatabaseFilter;
use crate::shared::Shared;
use crate::target::Target;

/// Builds a database's collector instances, given its name.
pub type BuildCollectors = Arc<dyn Fn(&str) -> Vec<Scheduled> + Send + Sync>;

/// How a server target polls its databases.
pub struct DatabasePlan {
    pub filter: DatabaseFilter,
    pub discovery_interval: Duration,
    /// Connections the databases may hold at once: the budget minus the target's main and
    /// sampler connections.
    pub slots: usize,
    /// The whole budget, for `pgkpi_target_connections_max`.
    pub budget: usize,
    pub max_databases: usize,
    /// The names of the per-database collectors (for status and cleanup).
    pub collectors: Vec<String>,
    pub build: BuildCollectors,
}

/// How long a released connection's slot waits before the next database may connect: the
/// backend exits as soon as it reads Terminate, and this covers its being scheduled on a
/// busy server so that pg_stat_activity never shows more than the budget.
const SETTLE: Duration = Duration::from_millis(50);

/// The list of databases: connectable, not templates. Cost grows with the number of
/// databases only (pg_database is small).
const DISCOVERY_SQL: &str = "SELECT datname::text FROM pg_database \
     WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// One running database task.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Discovers the databases on the main connection (`main`) and keeps a task per database.
pub(super) async fn supervise(
    target: Arc<Target>,
    plan: DatabasePlan,
    mut main: watch::Receiver<Conn>,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = target.name.clone();
    let t = &shared.telemetry;
    t.connection_budget
        .with_label_values(&[&name])
        .set(plan.budget as i64);
    t.database_sessions.with_label_values(&[&name]).set(0);
    t.databases.with_label_values(&[&name]).set(0);
    t.database_turn_wait.with_label_values(&[&name]);
    t.discoveries.with_label_values(&[&name]);
    t.discovery_errors.with_label_values(&[&name]);
    let slots = Arc::new(Semaphore::new(plan.slots));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut failing: Option<String> = None;
    let mut tick = tokio::time::interval(plan.discovery_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        // The first discovery waits for the main connection's first attempt.
        let conn = tokio::select! {
            conn = main.wait_for(|c| !matches!(c, Conn::Connecting)) => match conn {
                Ok(conn) => conn.clone(),
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        t.discoveries.with_label_values(&[&name]).inc();
        let listed = match conn {
            Conn::Up(live) => list(&live).await,
            Conn::Down(reason) => Err(format!("target down: {reason}")),
            Conn::Connecting => Err("target not connected yet".to_string()),
        };
        let names = match listed {
            Ok(names) => {
                if failing.take().is_some() {
                    tracing::info!(target = %name, "database discovery recovered");
                }
                names
            }
            Err(error) => {
                t.discovery_errors.with_label_values(&[&name]).inc();
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(target = %name, error = %error, "database discovery failed; keeping the databases found before");
                    failing = Some(error);
                }
                continue;
            }
        };
        let mut wanted: Vec<String> = names
            .into_iter()
            .filter(|d| plan.filter.matches(d))
            .collect();
        if wanted.len() > plan.max_databases {
            tracing::warn!(
                target = %name,
                found = wanted.len(),
                polled = plan.max_databases,
                "more databases match than databases.max_databases; polling the first ones by name"
            );
            wanted.truncate(plan.max_databases);
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|d| !wanted.contains(d))
            .cloned()
            .collect();
        for database in gone {
            let task = running.remove(&database).expect("listed above");
            stop(&name, &database, task, &shared).await;
            tracing::info!(target = %name, database = %database, "database gone; its series dropped");
        }
        for database in wanted {
            if running.contains_key(&database) {
                continue;
            }
            tracing::info!(target = %name, database = %database, "database found; polling it");
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run_database(
                Arc::new(target.in_database(&database)),
                Source {
                    target: name.clone(),
                    database: Some(database.clone()),
                },
                (plan.build)(&database),
                slots.clone(),
                shared.clone(),
                stop_rx,
            ));
            running.insert(
                database,
                Running {
                    stop: stop_tx,
                    task,
                },
            );
        }
        t.databases
            .with_label_values(&[&name])
            .set(running.len() as i64);
    }
    for running in running.values() {
        let _ = running.stop.send(true);
    }
    for (database, task) in running {
        stop(&name, &database, task, &shared).await;
    }
}

/// The server's databases, on the main connection in its turn.
async fn list(live: &Live) -> Result<Vec<String>, String> {
    let _turn = live.turn.lock().await;
    let rows = live
        .session
        .client
        .query(DISCOVERY_SQL, &[])
        .await
        .map_err(|e| crate::target::describe(&e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Stops a database's task and drops its series.
async fn stop(target: &str, database: &str, running: Running, shared: &Shared) {
    let _ = running.stop.send(true);
    let mut task = running.task;
    if tokio::time::timeout(Duration::from_secs(10), &mut task)
        .await
        .is_err()
    {
        task.abort();
        let _ = task.await;
    }
    shared.snapshot.remove(target, Some(database));
    let _ = shared
        .telemetry
        .database_up
        .remove_label_values(&[target, database]);
}

/// One database: its turns, until stopped.
async fn run_database(
    target: Arc<Target>,
    source: Source,
    mut collectors: Vec<Scheduled>,
    slots: Arc<Semaphore>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let name = source.target.as_str();
    let database = source.database.as_deref().unwrap_or_default();
    let t = &shared.telemetry;
    let up = t.database_up.with_label_values(&[name, database]);
    let mut next: Vec<Instant> = vec![Instant::now(); collectors.len()];
    let mut states: Vec<RunState> = collectors.iter().map(|_| RunState::default()).collect();
    let mut failing: Option<String> = None;
    loop {
        let Some(due) = next.iter().min().copied() else {
            // No per-database collector is enabled: nothing to do but wait to be stopped.
            let _ = stop.changed().await;
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => return,
        }
        let asked = Instant::now();
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        t.database_turn_wait
            .with_label_values(&[name])
            .inc_by(asked.elapsed().as_secs_f64());
        let sessions = t.database_sessions.with_label_values(&[name]);
        sessions.inc();
        // An attempt past its timeout keeps its slot until it ends: nothing to report early.
        let connected = target.connect(&mut |_| {}).await;
        let now = Instant::now();
        // Every collector due now or within a quarter of its interval runs in this turn:
        // one connection serves them all.
        let in_turn: Vec<usize> = (0..collectors.len())
            .filter(|&i| next[i] <= now + collectors[i].interval / 4)
            .collect();
        match connected {
            Ok((client, server, driver)) => {
                up.set(1.0);
                if failing.take().is_some() {
                    tracing::info!(target = name, database, "database reachable again");
                }
                let live = Arc::new(Live {
                    session: Session { client, server },
                    broken: Notify::new(),
                    recycle: Notify::new(),
                    turn: tokio::sync::Mutex::new(()),
                });
                for &i in &in_turn {
                    let started = Instant::now();
                    let conn = if live.session.client.is_closed() {
                        Conn::Down("connection closed during the turn".to_string())
                    } else {
                        Conn::Up(live.clone())
                    };
                    run_once(&source, &mut collectors[i], conn, &shared, &mut states[i]).await;
                    next[i] = if collectors[i].collector.has_pending_work() {
                        Instant::now() + started.elapsed().max(Duration::from_secs(1))
                    } else {
                        started + collectors[i].interval
                    };
                }
                // The last handle to the client: dropping it sends Terminate and closes.
                drop(live);
                let bound = target.session.statement_timeout + Duration::from_secs(1);
                let mut driver = driver;
                if tokio::time::timeout(bound, &mut driver).await.is_err() {
                    driver.abort();
                }
            }
            Err(error) => {
                up.set(0.0);
                let message = error.to_string();
                if failing.as_deref() != Some(message.as_str()) {
                    tracing::warn!(target = name, database, error = %message, "cannot connect to the database; its collectors fail until it answers");
                    failing = Some(message.clone());
                }
                for &i in &in_turn {
                    let started = Instant::now();
                    run_once(
                        &source,
                        &mut collectors[i],
                        Conn::Down(message.clone()),
                        &shared,
                        &mut states[i],
                    )
                    .await;
                    next[i] = started + collectors[i].interval;
                }
            }
        }
        tokio::time::sleep(SETTLE).await;
        sessions.dec();
        drop(permit);
    }
}
