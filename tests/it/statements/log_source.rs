//! The latency log source on real servers: a three-mode statement at >= 100 statements/s for
//! 60 s on PostgreSQL 15 and 17 at once (about 70 s of wall time), with the server sampling
//! 20 % of its executions into jsonlog. The window gauges and histogram_quantile over the
//! exported buckets are compared with the client-measured truth; an exporter without the log
//! source on the same server gives the estimate's column of the accuracy table
//! (`cargo test --test it statements::log_source -- --nocapture` prints it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{config, database, hist_count};
use crate::support::{heavy_load, pg_bindir, pg_major_bindir, Cluster, Exporter, Metrics};

/// The server's logging for the log source: every execution sampled at `rate`, every one
/// over 40 ms logged whole.
pub fn logging_conf(destination: &str, rate: f64) -> String {
    format!(
        "logging_collector = on\nlog_destination = '{destination}'\nlog_directory = 'log'\n\
         log_min_duration_sample = 0\nlog_statement_sample_rate = {rate}\n\
         log_min_duration_statement = 40\ncompute_query_id = on\n"
    )
}

/// `[statements]` with the log source read from the cluster's files, and the workload rule.
pub fn log_statements(access: &str) -> String {
    format!(
        "[statements.log]\naccess = \"{access}\"\nwindow = \"10m\"\n\n\
         [[statements.workloads]]\nname = \"sleepy\"\nquery = 'pg_sleep'\n"
    )
}

/// The mix: 45 % at 5 ms, 45 % at 15 ms, 10 % at 60 ms (three modes; the p50 in the middle
/// one, the p95 and p99 in the slow one, which the server logs whole).
fn mode(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    match *state % 20 {
        0..=8 => 0.005,
        9..=17 => 0.015,
        _ => 0.060,
    }
}

const LOAD: Duration = Duration::from_secs(60);
// Two clients keep >= 100 statements/s (a mean of 15 ms each) with the least contention of
// their own: what the client measures beyond the server's execution is round trip and
// scheduling, which the server log cannot see.
const CONNECTIONS: usize = 2;

/// (upper bound in seconds, cumulative count), sorted, +Inf last.
fn buckets(m: &Metrics, target: &str, db: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = m
        .find(
            "pg_statement_latency_seconds_bucket",
            &[("target", target), ("datname", db), ("workload", "sleepy")],
        )
        .iter()
        .map(|s| {
            let le = match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            (le, s.value)
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The increase of each bucket between two scrapes (what rate() over the run sees).
fn increase(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, c)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - was)
        })
        .collect()
}

/// PromQL's histogram_quantile over cumulative buckets.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let i = buckets.iter().position(|(_, c)| *c >= rank).unwrap();
    if buckets[i].0.is_infinite() {
        return buckets[buckets.len() - 2].0;
    }
    let (start, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let inside = buckets[i].1 - below;
    if inside <= 0.0 {
        return buckets[i].0;
    }
    start + (buckets[i].0 - start) * (rank - below) / inside
}

fn true_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One server's run: the accuracy table's rows (quantile, truth, window, histogram, estimate),
/// all in ms, and the statements per second.
struct Run {
    major: u32,
    rows: Vec<(f64, f64, f64, f64, f64)>,
    per_second: f64,
    samples: f64,
}

/// [`CONNECTIONS`] clients running the mix for [`LOAD`]; the durations they measured (ms).
fn load(cluster: &Cluster, db: &str) -> Vec<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + LOAD;
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let client = cluster.client(db).await;
            tasks.push(tokio::spawn(async move {
                let sleep = client.prepare("SELECT pg_sleep($1)").await.unwrap();
                let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ ((c as u64 + 1) * 0x9e37_79b9);
                let mut ms = Vec::new();
                while Instant::now() < deadline {
                    let seconds = mode(&mut state);
                    let started = Instant::now();
                    client.query_one(&sleep, &[&seconds]).await.unwrap();
                    ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                ms
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
}

fn run(major: u32, bindir: PathBuf) -> Run {
    let cluster = Cluster::start_with_conf(bindir, &logging_conf("jsonlog", 0.2));
    let db = database(&cluster, "log_accuracy");
    let (logged, estimated) = (format!("log{major}"), format!("est{major}"));
    let with_log = Exporter::start(&config(&logged, &cluster.dsn(&db), &log_statements("path")));
    let without = Exporter::start(&config(
        &estimated,
        &cluster.dsn(&db),
        &log_statements("off"),
    ));
    with_log.wait_for(Duration::from_secs(30), "the log source reading", |m| {
        m.value(
            "pg_statement_log_source_status",
            &[("target", &logged), ("status", "ok")],
        ) == Some(1.0)
    });
    without.wait_more_runs(&estimated, "statements", 1.0);
    let before = (
        buckets(&with_log.metrics(), &logged, &db),
        buckets(&without.metrics(), &estimated, &db),
    );

    // Halfway through the load, the histogram's shape must come from the log.
    let (mut measured, midway) = std::thread::scope(|scope| {
        let midway = scope.spawn(|| {
            std::thread::sleep(LOAD / 2);
            with_log.wait_more_runs(&logged, "statements", 1.0)
        });
        (load(&cluster, &db), midway.join().unwrap())
    });
    measured.sort_by(f64::total_cmp);
    let n = measured.len() as f64;
    let per_second = n / LOAD.as_secs_f64();
    assert!(
        per_second >= 100.0,
        "{per_second:.0} statements/s: the test needs >= 100"
    );

    // Every call counted, then two more polls so that the log's tail is read too.
    let counted = |exporter: &Exporter, target: &str, was: f64| {
        exporter.wait_for(Duration::from_secs(30), "every call counted", |m| {
            hist_count(m, target, &db, "sleepy") >= was + n
        });
        exporter.wait_more_runs(target, "statements", 2.0)
    };
    let was = |b: &[(f64, f64)]| b.last().map_or(0.0, |(_, c)| *c);
    let after_log = counted(&with_log, &logged, was(&before.0));
    let after_est = counted(&without, &estimated, was(&before.1));
    let workload = [
        ("target", logged.as_str()),
        ("datname", &db),
        ("workload", "sleepy"),
    ];
    let mut labels = workload.to_vec();
    labels.push(("source", "log"));
    assert_eq!(
        midway.value("pg_statement_latency_source", &labels),
        Some(1.0),
        "{}",
        midway.text
    );
    let samples = after_log
        .value("pg_statement_latency_window_samples", &workload)
        .unwrap();
    let log_hist = increase(&before.0, &buckets(&after_log, &logged, &db));
    let est_hist = increase(&before.1, &buckets(&after_est, &estimated, &db));
    assert_eq!(
        log_hist.last().unwrap().1,
        n,
        "_count is pg_stat_statements' exact count"
    );

    let mut rows = Vec::new();
    for (q, label) in [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")] {
        let truth = true_quantile(&measured, q);
        let mut labels = workload.to_vec();
        labels.push(("quantile", label));
        let window = after_log
            .value("pg_statement_latency_window_seconds", &labels)
            .unwrap()
            * 1000.0;
        let hist = histogram_quantile(q, &log_hist) * 1000.0;
        let est = histogram_quantile(q, &est_hist) * 1000.0;
        rows.push((q, truth, window, hist, est));
    }
    drop((with_log, without));
    Run {
        major,
        rows,
        per_second,
        samples,
    }
}

#[test]
fn log_source_quantiles_match_client_measured_truth_on_15_and_17() {
    // Not heavy itself, but its truth is what the client measures: a machine starved by a
    // heavy test adds client-side delay to the slowest calls that no server-side source sees.
    let _not_beside_a_heavy_test = heavy_load();
    let pg15 = std::thread::spawn(|| run(15, pg_bindir()));
    let pg17 = std::thread::spawn(|| run(17, pg_major_bindir(17)));
    let runs = [pg15.join().unwrap(), pg17.join().unwrap()];
    let error = |value: f64, truth: f64| (value - truth) / truth * 100.0;
    let mut failures = Vec::new();
    for r in &runs {
        println!(
            "PostgreSQL {}: {:.0} statements/s for {} s, {} logged durations in the window",
            r.major,
            r.per_second,
            LOAD.as_secs(),
            r.samples
        );
        println!("| quantile | truth (client) | log: window gauge | log: histogram_quantile | estimate (lognormal) |");
        for (q, truth, window, hist, est) in &r.rows {
            println!(
                "| p{} | {truth:.2} ms | {window:.2} ms ({:+.1} %) | {hist:.2} ms ({:+.1} %) | {est:.2} ms ({:+.1} %) |",
                q * 100.0,
                error(*window, *truth),
                error(*hist, *truth),
                error(*est, *truth),
            );
            if error(*window, *truth).abs() > 10.0 {
                failures.push(format!(
                    "{}: p{} window gauge {window:.2} vs {truth:.2}",
                    r.major,
                    q * 100.0
                ));
            }
            if error(*hist, *truth).abs() > 15.0 {
                failures.push(format!(
                    "{}: p{} histogram {hist:.2} vs {truth:.2}",
                    r.major,
                    q * 100.0
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Rotation, a switch from csvlog to jsonlog, an unreadable log and a server restart, one
/// after the other under one pgkpi: every execution is logged (rate 1), so the samples must
/// account for every call except what the loss counter reports; the unreadable log shows as
/// a status and the histogram falls back to the estimate, and the log source comes back
/// without a restart of pgkpi.
#[tokio::test(flavor = "multi_thread")]
async fn log_source_survives_rotation_format_switch_unreadable_log_and_restart() {
    let cluster = Cluster::start_with_conf(pg_bindir(), &logging_conf("csvlog", 1.0));
    let db = database(&cluster, "log_faults");
    const T: &str = "faults";
    let exporter = Exporter::start(&config(T, &cluster.dsn(&db), &log_statements("path")));
    let status_is = |want: &'static str| {
        exporter.wait_for(Duration::from_secs(30), want, |m| {
            m.value(
                "pg_statement_log_source_status",
                &[("target", T), ("status", want)],
            ) == Some(1.0)
        })
    };
    let workload = [
        ("target", T),
        ("datname", db.as_str()),
        ("workload", "sleepy"),
    ];
    let window = |m: &Metrics| {
        m.value("pg_statement_latency_window_samples", &workload)
            .unwrap_or(0.0)
    };
    let lost = |m: &Metrics| -> f64 {
        m.find("pgkpi_statements_log_lost_total", &[("target", T)])
            .iter()
            .map(|s| s.value)
            .sum()
    };
    let calls = |n: usize| {
        let cluster = &cluster;
        let db = &db;
        async move {
            let client = cluster.client(db).await;
            for _ in 0..n {
                client
                    .query_one("SELECT pg_sleep(0.001)", &[])
                    .await
                    .unwrap();
            }
        }
    };
    status_is("ok");

    // Rotation in the middle of the calls: the rest of the old file is read, nothing lost.
    calls(50).await;
    cluster.psql(&db, "SELECT pg_rotate_logfile()");
    calls(50).await;
    let m = exporter.wait_for(Duration::from_secs(30), "100 samples", |m| {
        window(m) + lost(m) >= 100.0
    });
    assert_eq!(window(&m), 100.0, "every call logged once: {}", m.text);
    assert_eq!(lost(&m), 0.0);

    // csvlog to jsonlog: the new format's file is followed.
    cluster.psql(&db, "ALTER SYSTEM SET log_destination = 'jsonlog'");
    cluster.psql(&db, "SELECT pg_reload_conf()");
    let switched = exporter.wait_for(Duration::from_secs(30), "a jsonlog file", |_| {
        cluster.psql(&db, "SELECT pg_current_logfile('jsonlog') IS NOT NULL") == "t"
    });
    drop(switched);
    exporter.wait_more_runs(T, "statements", 2.0);
    calls(50).await;
    exporter.wait_for(Duration::from_secs(30), "150 samples", |m| {
        window(m) >= 150.0
    });

    // Unreadable: the log directory is not where pgkpi looks. A status, and the estimate.
    let log_dir = cluster.dir.join("data").join("log");
    let away = cluster.dir.join("data").join("log.away");
    std::fs::rename(&log_dir, &away).unwrap();
    let m = status_is("unreadable");
    let view = exporter.get("/debug/statements").text();
    assert!(
        view.contains("\"unreadable\"") && view.contains("statements.log.directory"),
        "the debug view says what is wrong and what to do: {view}"
    );
    let page = exporter.get("/").text();
    assert!(
        page.contains("to do (statements): latency log source (unreadable)"),
        "the status page says it too: {page}"
    );
    let before = hist_count(&m, T, &db, "sleepy");
    calls(30).await;
    let m = exporter.wait_for(Duration::from_secs(30), "30 calls counted", |m| {
        hist_count(m, T, &db, "sleepy") >= before + 30.0
    });
    let mut source = workload.to_vec();
    source.push(("source", "estimate"));
    assert_eq!(
        m.value("pg_statement_latency_source", &source),
        Some(1.0),
        "{}",
        m.text
    );
    std::fs::rename(&away, &log_dir).unwrap();
    status_is("ok");

    // A server restart: the collector fails while the server is down, then the log source
    // reads again.
    cluster.stop();
    cluster.resume();
    status_is("ok");
    exporter.wait_more_runs(T, "statements", 1.0);
    let m = exporter.metrics();
    let was = window(&m);
    calls(40).await;
    exporter.wait_for(Duration::from_secs(30), "40 more samples", |m| {
        window(m) >= was + 40.0
    });

    // The sample rate changes: the window that straddles the change cannot weigh its lines and
    // starts again (status weights_changed for that interval); the new rate is exported.
    cluster.psql(&db, "ALTER SYSTEM SET log_statement_sample_rate = 0.5");
    cluster.psql(&db, "SELECT pg_reload_conf()");
    let m = exporter.wait_for(Duration::from_secs(30), "the new rate", |m| {
        m.value("pg_statement_log_sample_rate", &[("target", T)]) == Some(0.5)
    });
    assert_eq!(window(&m), 0.0, "the window restarted: {}", m.text);
    status_is("ok");
}

/// The log over the monitoring connection: a superuser reads it with pg_read_binary_file; a
/// role without the grants gets the `grant` status naming them, and the estimate.
#[tokio::test(flavor = "multi_thread")]
async fn log_source_over_pg_read_binary_file_and_without_its_grant() {
    let cluster = Cluster::start_with_conf(pg_bindir(), &logging_conf("jsonlog", 1.0));
    let db = database(&cluster, "log_sql");
    cluster.psql(
        &db,
        "CREATE ROLE plain LOGIN; GRANT pg_monitor TO plain; \
         GRANT EXECUTE ON FUNCTION pg_current_logfile(text) TO plain",
    );
    let statements = log_statements("pg_read_binary_file");
    let granted = Exporter::start(&config("sql", &cluster.dsn(&db), &statements));
    let plain_dsn = cluster.dsn(&db).replace("user=postgres", "user=plain");
    let plain = Exporter::start(&config("plain", &plain_dsn, &statements));
    let status = |exporter: &Exporter, target: &str, want: &str| {
        exporter.wait_for(Duration::from_secs(30), want, |m| {
            m.value(
                "pg_statement_log_source_status",
                &[("target", target), ("status", want)],
            ) == Some(1.0)
        })
    };
    status(&granted, "sql", "ok");
    status(&plain, "plain", "grant");
    let view = plain.get("/debug/statements").text();
    assert!(
        view.contains("pg_read_binary_file(text, bigint, bigint, boolean)"),
        "the grant to give: {view}"
    );

    let client = cluster.client(&db).await;
    for _ in 0..30 {
        client
            .query_one("SELECT pg_sleep(0.001)", &[])
            .await
            .unwrap();
    }
    let workload = [
        ("target", "sql"),
        ("datname", db.as_str()),
        ("workload", "sleepy"),
    ];
    let m = granted.wait_for(Duration::from_secs(30), "30 samples", |m| {
        m.value("pg_statement_latency_window_samples", &workload) >= Some(30.0)
    });
    assert_eq!(
        m.value("pg_statement_latency_window_samples", &workload),
        Some(30.0)
    );
    let m = plain.wait_for(Duration::from_secs(30), "30 calls counted", |m| {
        hist_count(m, "plain", &db, "sleepy") >= 30.0
    });
    let mut source = vec![
        ("target", "plain"),
        ("datname", db.as_str()),
        ("workload", "sleepy"),
    ];
    source.push(("source", "estimate"));
    assert_eq!(m.value("pg_statement_latency_source", &source), Some(1.0));
}
