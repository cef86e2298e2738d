//! The server restarts, crashes or freezes: scrapes keep answering from the snapshot, and
//! pgkpi's connections come back together once the server answers.

use std::time::{Duration, Instant};

use super::{backends_of, both_lanes_up, children_of, postmaster_pid, storm_config, ROLE};
use crate::support::{Cluster, Exporter, ExporterConfig, Frozen, TempDir};

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

/// The postmaster and every process it started: the whole server, to freeze or to crash.
fn server_processes(cluster: &Cluster) -> Vec<i32> {
    let postmaster = postmaster_pid(cluster);
    std::iter::once(postmaster)
        .chain(children_of(postmaster))
        .map(|pid| pid as i32)
        .collect()
}

/// A scrape's wall time; panics on anything but 200.
fn timed_scrape(exporter: &Exporter) -> Duration {
    let started = Instant::now();
    let response = exporter.get("/metrics");
    assert_eq!(response.status, 200);
    started.elapsed()
}

/// A frozen server (every process SIGSTOPped for 10 s: it accepts TCP connections in the
/// kernel but answers nothing): scrapes keep answering from the snapshot, the target is
/// reported down rather than served as healthy, its backends stay within the budget, and after
/// the thaw both connections are back without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_server_is_reported_and_scrapes_keep_answering() {
    const BUDGET: usize = 2;
    let cluster = Cluster::start();
    cluster.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"));
    let postmaster = postmaster_pid(&cluster);
    let exporter = Exporter::start(&storm_config(&cluster));
    exporter.wait_for(Duration::from_secs(30), "both lanes up", both_lanes_up);
    let errors = |m: &crate::support::Metrics| {
        m.of(
            "storm",
            "pgkpi_collector_errors_total",
            &[("collector", "server")],
        )
        .unwrap_or(0.0)
    };
    let before = errors(&exporter.metrics());

    let frozen: Vec<Frozen> = server_processes(&cluster)
        .into_iter()
        .map(Frozen::stop)
        .collect();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut max = 0;
    while start.elapsed() < Duration::from_secs(10) {
        slowest = slowest.max(timed_scrape(&exporter));
        max = max.max(backends_of(postmaster, ROLE).len());
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = exporter.metrics();
    drop(frozen);
    let thawed = Instant::now();
    exporter.wait_for(
        Duration::from_secs(30),
        "both lanes up after the thaw",
        |m| both_lanes_up(m) && m.runs("storm", "server") > during.runs("storm", "server"),
    );
    let back = thawed.elapsed();
    let settled =
        crate::support::retry(Duration::from_secs(10), Duration::from_millis(100), || {
            let now = backends_of(postmaster, ROLE);
            if now.len() <= BUDGET {
                Ok(now.len())
            } else {
                Err(now)
            }
        });
    eprintln!(
        "frozen server: slowest scrape {slowest:?}, max {max} backends while frozen, server \
         collector errors {before} -> {}, both lanes back {back:?} after the thaw, backends \
         after: {settled:?}",
        errors(&during)
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );
    assert!(max <= BUDGET, "{max} backends while frozen");
    assert!(
        errors(&during) > before,
        "the frozen server was not reported:\n{}",
        during.text
    );
    assert!(settled.is_ok(), "backends after the thaw: {settled:?}");
}

/// A crash loop: a backend killed with SIGKILL three times, 4 s apart, so the postmaster
/// ends every session and restarts the server each time. Scrapes keep answering throughout,
/// and after the last crash both connections are back within a few seconds of the server
/// accepting connections, on exactly the budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_is_survived_without_a_restart() {
    const BUDGET: usize = 2;
    let cluster = Cluster::start();
    // A clean restart makes the role survive crash recovery: the test clusters run with
    // fsync and synchronous_commit off, and a crash lost the freshly created role.
    cluster.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"));
    cluster.stop();
    cluster.resume();
    let postmaster = postmaster_pid(&cluster);
    let config = ExporterConfig::new(
        "storm",
        &cluster
            .dsn("postgres")
            .replace("user=postgres", &format!("user={ROLE}")),
    )
    .only_builtin(&["server", "activity_sampler"])
    .set("poller", "reconnect_initial_backoff", "200ms")
    .set("poller", "reconnect_max_backoff", "2s")
    .build();
    let exporter = Exporter::start(&config);
    exporter.wait_for(Duration::from_secs(30), "both lanes up", both_lanes_up);
    let mut slowest = Duration::ZERO;
    let mut recoveries = Vec::new();
    for _ in 0..3 {
        let connected = exporter.logs().matches("INFO connected").count();
        let victim = backends_of(postmaster, ROLE)
            .first()
            .and_then(|line| line.split(':').next()?.parse::<i32>().ok())
            .expect("a backend of pgkpi to kill");
        unsafe { libc::kill(victim, libc::SIGKILL) };
        // The server is back when a new session gets through (crash recovery done).
        let crashed = Instant::now();
        let mut ready = None;
        let recovered = loop {
            assert!(
                crashed.elapsed() < Duration::from_secs(60),
                "no recovery within 60 s:\n{}",
                exporter.logs()
            );
            slowest = slowest.max(timed_scrape(&exporter));
            if ready.is_none() && crashed.elapsed() > Duration::from_millis(300) {
                let probe = std::process::Command::new("pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &cluster.port.to_string()])
                    .status();
                if probe.is_ok_and(|s| s.success()) {
                    ready = Some(Instant::now());
                }
            }
            if let Some(ready) = ready {
                // Both lanes reconnected: two more "connected" lines than before the crash.
                if exporter.logs().matches("INFO connected").count() >= connected + 2 {
                    break (crashed.elapsed(), ready.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        recoveries.push(recovered);
        exporter.wait_for(
            Duration::from_secs(30),
            "both lanes up after a crash",
            both_lanes_up,
        );
    }
    let logs = std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
    let crashes = logs.matches("terminated by signal 9").count();
    let settled =
        crate::support::retry(Duration::from_secs(10), Duration::from_millis(100), || {
            let now = backends_of(postmaster, ROLE);
            if now.len() == BUDGET {
                Ok(())
            } else {
                Err(now)
            }
        });
    eprintln!(
        "crash loop: {crashes} crashes in the server log, slowest scrape {slowest:?}, both \
         connections back (after the crash, after the server accepted connections): {recoveries:?}"
    );
    assert_eq!(crashes, 3, "the server did not crash three times:\n{logs}");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );
    assert!(settled.is_ok(), "backends after the crashes: {settled:?}");
    for (_, after_ready) in recoveries {
        assert!(
            after_ready < Duration::from_secs(5),
            "recovery took {after_ready:?}"
        );
    }
}

/// A collector that keeps hitting its client-side timeout costs the lane its session each time
/// (the statement may still run), and the lane reconnects at once. The other collectors of the
/// lane keep their schedule: their last run had a session, so nothing was missed. Before, every
/// reconnect ran all of them at once, and on an overloaded server each timeout re-ran the
/// catalog-wide collectors (167 unused-index checks in ten minutes at 50 000 tables).
#[test]
fn a_collector_timing_out_does_not_rerun_the_others_at_each_reconnect() {
    let (cluster, db) = Cluster::shared_database("timeouts");
    let dir = TempDir::new("timeoutdefs");
    dir.write(
        "stuck.toml",
        "name = \"stuck_report\"\ndescription = \"Outlasts its client-side timeout.\"\n\
         interval = \"1s\"\ntimeout = \"1s\"\n\
         [[query]]\nsql = \"SELECT 1 AS n FROM pg_sleep(3)\"\n\
         [[metric]]\ncolumn = \"n\"\nname = \"app_stuck_report\"\ntype = \"gauge\"\nhelp = \"Never arrives.\"\n",
    );
    let config = ExporterConfig::new("stuck", &cluster.dsn(&db))
        .collector_paths(&[&dir.0])
        .session("statement_timeout", "10s");
    let exporter = Exporter::start(&config.build());
    // Several timeouts, each followed by a reconnect of the main lane.
    let m = exporter.wait_for(Duration::from_secs(60), "five reconnects", |m| {
        m.value(
            "pgkpi_target_connection_attempts_total",
            &[("target", "stuck")],
        )
        .unwrap_or(0.0)
            >= 6.0
    });
    assert!(
        m.value(
            "pgkpi_collector_errors_total",
            &[("target", "stuck"), ("collector", "stuck_report")]
        )
        .unwrap_or(0.0)
            >= 4.0,
        "{}",
        m.text
    );
    // Five-minute collectors of the same lane: one run each, at the start.
    for collector in ["settings", "database_size", "sequences"] {
        assert_eq!(m.runs("stuck", collector), 1.0, "{collector}\n{}", m.text);
    }
}
