//! Faults on the server side: how many backends pgkpi holds while it reconnects through a lock
//! incident, and how fast its connections come back together after a restart.
//!
//! Both scenarios run on a cluster of their own: one locks `pg_class` (every new session of
//! the server waits behind it), the other stops and starts the server.

use std::time::{Duration, Instant};

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics};

/// The login role pgkpi uses in these scenarios, so that its backends can be counted apart.
const ROLE: &str = "pgkpi_storm";

/// The postmaster's pid, from the first line of `postmaster.pid`.
fn postmaster_pid(cluster: &Cluster) -> u32 {
    let text = std::fs::read_to_string(cluster.dir.join("data/postmaster.pid"))
        .expect("read postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Backends of `role` on the server, counted from the process titles of the postmaster's
/// children (`postgres: <role> <db> <host>(<port>) <state>`). Unlike `pg_stat_activity`, this
/// needs no catalog access and sees backends still in startup (waiting for a lock before they
/// report in the statistics views) as well as backends whose client has gone.
fn backends_of(postmaster: u32, role: &str) -> Vec<String> {
    let prefix = format!("postgres: {role} ");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may have exited since the listing: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(postmaster) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .to_string();
        if title.starts_with(&prefix) {
            found.push(format!("{pid}: {title}"));
        }
    }
    found
}

/// A configuration for `cluster` as `ROLE`: both lanes in use (the activity sampler runs), a
/// short connect_timeout so that several attempts time out during the storm.
fn storm_config(cluster: &Cluster) -> String {
    let dsn = cluster
        .dsn("postgres")
        .replace("user=postgres", &format!("user={ROLE}"));
    ExporterConfig::new("storm", &dsn)
        .only_builtin(&["server", "activity_sampler"])
        .session("application_name", "pgkpi-storm")
        .session("connect_timeout", "2s")
        .build()
}

fn both_lanes_up(m: &Metrics) -> bool {
    m.value("pg_up", &[("target", "storm")]) == Some(1.0)
        && m.of(
            "storm",
            "pgkpi_collector_up",
            &[("collector", "activity_sampler")],
        ) == Some(1.0)
}

/// Lock storm: ACCESS EXCLUSIVE on pg_class for 25 s, pgkpi's sessions terminated 3 s in, so
/// that every reconnection waits in startup behind the lock and times out on the client side
/// (connect_timeout 2 s). pgkpi's backends on the server, sampled every 200 ms, never exceed
/// its budget of two (main + sampler), abandoned attempts included; after the lock goes, both
/// lanes are back, still on two backends.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_storm_never_takes_more_backends_than_the_budget() {
    const BUDGET: usize = 2;
    let cluster = Cluster::start();
    cluster.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"));
    let postmaster = postmaster_pid(&cluster);
    let exporter = Exporter::start(&storm_config(&cluster));
    exporter.wait_for(Duration::from_secs(30), "both lanes up", both_lanes_up);
    let initial = backends_of(postmaster, ROLE);
    assert_eq!(initial.len(), BUDGET, "{initial:#?}");

    // Sessions opened before the lock, their catalog lookups warmed: terminating needs
    // pg_stat_activity and pg_terminate_backend, both already in the caches.
    let observer = cluster.client("postgres").await;
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE usename = '{ROLE}'"
    );
    observer
        .batch_execute("SET statement_timeout = '2s'")
        .await
        .unwrap();
    observer
        .query_one(&terminate.replace(ROLE, "nobody_at_all"), &[])
        .await
        .unwrap();
    let locker = cluster.client("postgres").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pg_class IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let storm = Duration::from_secs(25);
    let start = Instant::now();
    let mut terminated = None;
    let mut max = 0;
    let mut worst = Vec::new();
    let mut samples = 0;
    let mut overdue = None;
    while start.elapsed() < storm {
        if terminated.is_none() && start.elapsed() >= Duration::from_secs(3) {
            let n: i64 = observer.query_one(&terminate, &[]).await.unwrap().get(0);
            terminated = Some(n);
        }
        // Both lanes' attempts are past their 3 s budget by 10 s in and still awaited.
        if overdue.is_none() && start.elapsed() >= Duration::from_secs(10) {
            overdue = Some(exporter.metrics().of(
                "storm",
                "pgkpi_target_connection_attempts_overdue",
                &[],
            ));
        }
        let now = backends_of(postmaster, ROLE);
        samples += 1;
        if now.len() > max {
            max = now.len();
            worst = now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    locker.batch_execute("ROLLBACK").await.unwrap();
    let logs = exporter.logs();
    let timeouts = logs.matches("timed out").count();
    eprintln!(
        "lock storm: {samples} samples, max {max} backends of {ROLE} (budget {BUDGET}), \
         terminated {terminated:?}, {timeouts} log lines with a timeout, overdue attempts \
         10 s in: {overdue:?}"
    );
    assert_eq!(
        terminated,
        Some(BUDGET as i64),
        "pgkpi's sessions were terminated"
    );
    assert!(
        timeouts >= 2,
        "the storm made connection attempts time out; logs:\n{logs}"
    );
    assert!(
        max <= BUDGET,
        "pgkpi held {max} backends (budget {BUDGET}) during the storm:\n{}\nlogs:\n{logs}",
        worst.join("\n")
    );

    // After the storm both lanes are back, on exactly the budget.
    exporter.wait_for(
        Duration::from_secs(30),
        "both lanes up again",
        both_lanes_up,
    );
    let after = crate::support::retry(Duration::from_secs(10), Duration::from_millis(100), || {
        let now = backends_of(postmaster, ROLE);
        if now.len() == BUDGET {
            Ok(now)
        } else {
            Err(now)
        }
    });
    assert!(after.is_ok(), "backends after the storm: {after:?}");
}

/// Seconds since midnight of a log line's timestamp (`2026-12-04T17:39:42.261453Z ...`).
fn log_seconds(line: &str) -> f64 {
    let time = &line[11..line.find('Z').expect("a UTC timestamp")];
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// After an outage long enough for both lanes' backoff to grow to several seconds, the lanes
/// come back together: the first to connect wakes the other from its backoff.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_both_connections_come_back_together() {
    let cluster = Cluster::start();
    cluster.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"));
    let dsn = cluster
        .dsn("postgres")
        .replace("user=postgres", &format!("user={ROLE}"));
    let config = ExporterConfig::new("storm", &dsn)
        .only_builtin(&["server", "activity_sampler"])
        .set("poller", "reconnect_initial_backoff", "200ms")
        .set("poller", "reconnect_max_backoff", "20s")
        .build();
    let exporter = Exporter::start(&config);
    exporter.wait_for(Duration::from_secs(30), "both lanes up", both_lanes_up);
    cluster.stop();
    // Down 12 s: each lane's step has doubled to 6.4 s or more (each wait drawn in [50%,
    // 100%] of it), so without the wake-up the lanes' remaining waits differ by seconds.
    std::thread::sleep(Duration::from_secs(12));
    let failed = exporter.logs().matches("connection failed").count();
    cluster.resume();
    let resumed = Instant::now();
    let logs = crate::support::retry(Duration::from_secs(25), Duration::from_millis(50), || {
        let logs = exporter.logs();
        if logs.matches("INFO connected").count() >= 4 {
            Ok(logs)
        } else {
            Err(logs)
        }
    })
    .unwrap_or_else(|logs| panic!("both lanes did not come back:\n{logs}"));
    let back = resumed.elapsed();
    let connected: Vec<f64> = logs
        .lines()
        .filter(|l| l.contains("INFO connected"))
        .skip(2)
        .map(log_seconds)
        .collect();
    let gap = (connected[1] - connected[0]).rem_euclid(86400.0);
    eprintln!(
        "restart: {failed} failed attempts while down, first lane back {back:?} after the \
         server, the other {gap:.3} s later"
    );
    assert!(failed >= 6, "the lanes kept failing while down:\n{logs}");
    assert!(
        gap < 0.3,
        "the second lane came back {gap:.3} s after the first:\n{logs}"
    );
}

/// The role of the privilege-loss scenario: cluster-wide, so its name is its own.
const PRIV_ROLE: &str = "pgkpi_priv_lost";

/// Issue 13, defect 4: without pg_monitor, other users' sessions lose `state` and
/// `backend_type` in pg_stat_activity, and the activity definition's filters dropped them, so
/// `pg_idle_in_transaction_sessions` read 0 while one was open. Now the collector declares the
/// privilege: after REVOKE it is skipped with reason `permission` within a few intervals and
/// its families are absent (never 0); after GRANT the value comes back without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_privilege_is_reported_not_read_as_zero() {
    const T: &str = "priv";
    let (cluster, db) = Cluster::shared_database("priv");
    cluster.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE {PRIV_ROLE} LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ),
    );
    cluster.psql("postgres", &format!("GRANT pg_monitor TO {PRIV_ROLE}"));
    let dsn = cluster
        .dsn(&db)
        .replace("user=postgres", &format!("user={PRIV_ROLE}"));
    let exporter = Exporter::start(
        &ExporterConfig::new(T, &dsn)
            .interval("activity", "1s")
            .build(),
    );

    // Another user's (postgres) session, idle inside a transaction for the whole test.
    let other = cluster.client(&db).await;
    other
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let idle = |m: &Metrics| m.of(T, "pg_idle_in_transaction_sessions", &[]);
    exporter.wait_for(Duration::from_secs(20), "the idle session seen", |m| {
        idle(m).is_some_and(|v| v >= 1.0)
    });

    cluster.psql("postgres", &format!("REVOKE pg_monitor FROM {PRIV_ROLE}"));
    let skipped = |m: &Metrics| {
        m.of(
            T,
            "pgkpi_collector_skipped",
            &[("collector", "activity"), ("reason", "permission")],
        )
    };
    let lost = exporter.wait_for(
        Duration::from_secs(20),
        "activity skipped for permission",
        |m| skipped(m) == Some(1.0),
    );
    assert_eq!(
        idle(&lost),
        None,
        "an unknown value is served:\n{}",
        lost.text
    );
    // A few more runs: still skipped, and the value never reads 0 meanwhile.
    let later = exporter.wait_more_runs(T, "activity", 2.0);
    assert_eq!(skipped(&later), Some(1.0), "{}", later.text);
    assert_eq!(idle(&later), None, "{}", later.text);

    cluster.psql("postgres", &format!("GRANT pg_monitor TO {PRIV_ROLE}"));
    exporter.wait_for(Duration::from_secs(20), "the value back after GRANT", |m| {
        idle(m).is_some_and(|v| v >= 1.0) && skipped(m) != Some(1.0)
    });
    other.batch_execute("ROLLBACK").await.unwrap();
}
