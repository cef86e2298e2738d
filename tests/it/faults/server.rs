//! The server restarts, crashes or freezes: scrapes keep answering from the snapshot, and
//! pgkpi's connections come back together once the server answers.

use std::time::{Duration, Instant};

use super::{both_lanes_up, ROLE};
use crate::support::{Cluster, Exporter, ExporterConfig};

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
