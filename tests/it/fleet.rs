//! Every database of a server: two servers with 25 databases each, one pgkpi with a budget
//! of 3 connections per server (main, activity sampler, one for the databases' turns).
//!
//! Checked: every database's per-database series (`datname`), server-wide ones once per
//! server, pgkpi's sessions on each server never above 3 (pg_stat_activity sampled
//! continuously, a query every 10 ms plus its own time, from a connection of the test's own), templates, `datallowconn = false`
//! and excluded databases never polled, and a database created and one dropped during the
//! test found and forgotten within one discovery interval.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics};

const DATABASES: usize = 25;
const BUDGET: usize = 3;
const DISCOVERY: Duration = Duration::from_secs(3);
const APP: &str = "pgkpi-fleet";

/// Samples the number of pgkpi's sessions on a cluster until stopped; keeps the largest.
struct SessionSampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SessionSampler {
    fn start(cluster: &'static Cluster) -> SessionSampler {
        let (stop, most, samples) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, m, n) = (stop.clone(), most.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = cluster.client("postgres").await;
                while !s.load(Ordering::Relaxed) {
                    let row = client
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                            &[&APP],
                        )
                        .await
                        .unwrap();
                    let count: i64 = row.get(0);
                    m.fetch_max(count as usize, Ordering::Relaxed);
                    n.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        });
        SessionSampler {
            stop,
            most,
            samples,
            thread: Some(thread),
        }
    }

    /// (most sessions seen, samples taken).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.most.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// A cluster of the test's own (it counts every session and creates and drops databases)
/// with 25 databases made from a template holding a table and a sequence, plus databases
/// pgkpi must leave alone: the template, one that refuses connections, one excluded.
fn server() -> &'static Cluster {
    let cluster: &'static Cluster = Box::leak(Box::new(Cluster::start()));
    cluster.psql("postgres", "CREATE DATABASE fleet_template");
    cluster.psql(
        "fleet_template",
        "CREATE TABLE items (id serial PRIMARY KEY, note text); INSERT INTO items (note) VALUES ('a')",
    );
    cluster.psql(
        "postgres",
        "ALTER DATABASE fleet_template WITH IS_TEMPLATE true",
    );
    for i in 0..DATABASES {
        create(cluster, &format!("fleet_{i:02}"));
    }
    create(cluster, "fleet_closed");
    cluster.psql(
        "postgres",
        "ALTER DATABASE fleet_closed WITH ALLOW_CONNECTIONS false",
    );
    create(cluster, "fleet_skip_me");
    cluster
}

fn create(cluster: &Cluster, name: &str) {
    cluster.psql(
        "postgres",
        &format!("CREATE DATABASE {name} TEMPLATE fleet_template"),
    );
}

/// The databases with per-database series (pg_sequence_last_value, one sequence each) of a
/// target.
fn polled(m: &Metrics, target: &str) -> Vec<String> {
    let mut names: Vec<String> = m
        .find("pg_sequence_last_value", &[("target", target)])
        .iter()
        .map(|s| s.labels["datname"].clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn server_target(name: &str, cluster: &Cluster) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\ndsn = \"{}\"\n\
         [targets.databases]\ninclude = [\"fleet_*\"]\nexclude = [\"fleet_skip*\"]\n\
         discovery_interval = \"{}s\"\nmax_connections = {BUDGET}\n\
         [targets.session]\napplication_name = \"{APP}\"\n",
        cluster.dsn("postgres"),
        DISCOVERY.as_secs()
    )
}

#[test]
fn a_fleet_of_two_servers_on_a_budget_of_three_connections_each() {
    let (one, two) = (server(), server());
    let samplers = [SessionSampler::start(one), SessionSampler::start(two)];
    // ExporterConfig's own target is a third, ordinary target on server one: it shows that a
    // single-database target beside server targets keeps working unchanged. Its sessions
    // have a name of their own, outside the budget counted.
    let toml = ExporterConfig::new("single", &one.dsn("fleet_00"))
        .only_builtin(&["server", "activity_sampler", "relation_stats", "sequences"])
        .session("application_name", "pgkpi-fleet-single")
        .interval("sequences", "2s")
        .interval("relation_stats", "2s")
        .interval("activity_sampler", "1s")
        .raw(&server_target("one", one))
        .raw(&server_target("two", two))
        .build();
    let exporter = Exporter::start(&toml);
    let mut wanted: Vec<String> = (0..DATABASES).map(|i| format!("fleet_{i:02}")).collect();
    let m = exporter.wait_for(
        Duration::from_secs(120),
        "every database's sequences on both servers",
        |m| polled(m, "one") == wanted && polled(m, "two") == wanted,
    );
    for target in ["one", "two"] {
        // Per-database collectors: series per database, labelled datname.
        let mut tables: Vec<String> = m
            .find("pg_table_seq_scans_total", &[("target", target)])
            .iter()
            .filter_map(|s| s.labels.get("datname").cloned())
            .collect();
        tables.dedup();
        assert_eq!(
            tables, wanted,
            "relation_stats in every database of {target}"
        );
        // Server-wide collectors: once per server, without datname.
        let version = m.find("pg_server_version_num", &[("target", target)]);
        assert_eq!(version.len(), 1, "server collector once on {target}");
        assert!(!version[0].labels.contains_key("datname"));
        assert_eq!(
            m.value("pgkpi_databases", &[("target", target)]),
            Some(DATABASES as f64)
        );
        assert_eq!(
            m.value("pgkpi_target_connections_max", &[("target", target)]),
            Some(BUDGET as f64)
        );
        for left_alone in [
            "fleet_template",
            "fleet_closed",
            "fleet_skip_me",
            "postgres",
        ] {
            assert!(
                m.find(
                    "pgkpi_database_up",
                    &[("target", target), ("datname", left_alone)]
                )
                .is_empty(),
                "{left_alone} must not be polled on {target}"
            );
        }
    }
    // The ordinary target: every collector on its one database, no datname added.
    let single = m.find("pg_table_seq_scans_total", &[("target", "single")]);
    assert!(!single.is_empty() && single.iter().all(|s| !s.labels.contains_key("datname")));

    // A database created and one dropped while pgkpi runs.
    create(one, "fleet_new");
    let created = Instant::now();
    two.psql("postgres", "DROP DATABASE fleet_03 WITH (FORCE)");
    let dropped = Instant::now();
    exporter.wait_for(DISCOVERY * 3, "fleet_new found on one", |m| {
        m.value("pgkpi_databases", &[("target", "one")]) == Some(DATABASES as f64 + 1.0)
    });
    let found_after = created.elapsed();
    exporter.wait_for(DISCOVERY * 3, "fleet_03 gone from two", |m| {
        !polled(m, "two").contains(&"fleet_03".to_string())
            && m.find(
                "pgkpi_database_up",
                &[("target", "two"), ("datname", "fleet_03")],
            )
            .is_empty()
    });
    let gone_after = dropped.elapsed();
    wanted.push("fleet_new".to_string());
    wanted.sort();
    exporter.wait_for(Duration::from_secs(120), "fleet_new's series", |m| {
        polled(m, "one") == wanted
    });
    // Room for the scrape loop (100 ms) and a turn of discovery behind the main connection.
    let bound = DISCOVERY + Duration::from_secs(2);
    assert!(
        found_after <= bound,
        "fleet_new found after {found_after:?}"
    );
    assert!(gone_after <= bound, "fleet_03 gone after {gone_after:?}");

    // Fair turns: on server two (no other client in its fleet databases), every database had
    // about as many connections (turns) as any other.
    let turns = two.psql(
        "postgres",
        "SELECT min(sessions) || ' ' || max(sessions) FROM pg_stat_database \
         WHERE datname ~ '^fleet_[0-9]+$'",
    );
    let (least, most) = turns.split_once(' ').expect("min max");
    let (least, most): (i64, i64) = (least.parse().unwrap(), most.parse().unwrap());
    assert!(
        least >= 1 && most <= least + 2,
        "turns per database on two range from {least} to {most}"
    );
    let wait = exporter.metrics().value(
        "pgkpi_target_database_turn_wait_seconds_total",
        &[("target", "one")],
    );
    for (cluster, sampler) in ["one", "two"].iter().zip(samplers) {
        let (most, samples) = sampler.finish();
        eprintln!("{cluster}: at most {most} pgkpi sessions in {samples} samples");
        assert!(samples > 100, "the sampler kept sampling ({samples})");
        assert!(
            most <= BUDGET,
            "{cluster}: {most} pgkpi sessions seen; the budget is {BUDGET}"
        );
        assert!(
            most >= 2,
            "{cluster}: the sampler saw pgkpi's sessions ({most})"
        );
    }
    eprintln!(
        "fleet_new found after {found_after:?}, fleet_03 gone after {gone_after:?}; turn wait on one: {wait:?} s; turns per database on two: {least} to {most}"
    );
}

#[test]
fn a_budget_without_room_for_the_databases_is_refused_with_the_fix() {
    let dir = crate::support::TempDir::new("fleet-config");
    let config = |extra: &str| {
        dir.write(
            "pgkpi.toml",
            &format!(
                "[[targets]]\nname = \"s\"\ndsn = \"host=127.0.0.1 user=postgres\"\n\
                 [targets.databases]\n{extra}\n"
            ),
        )
    };
    let out = crate::support::check_config(&config("max_connections = 2"));
    assert_eq!(out.status.code(), Some(2));
    let text = crate::support::stderr(&out);
    assert!(
        text.contains("databases.max_connections = 2 leaves no connection for the databases")
            && text.contains("at least 3"),
        "{text}"
    );
    let out = crate::support::check_config(&config("exclude = [\"\"]"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::support::stderr(&out).contains("databases.exclude: an empty pattern"),
        "{}",
        crate::support::stderr(&out)
    );
    let out = crate::support::check_config(&config("max_connections = 3"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "3 connections at most (1 for the databases' turns), in each: relation_stats"
        ),
        "{text}"
    );
}
