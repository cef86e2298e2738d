//! Declarative collectors against real servers: every built-in collector on each supported
//! PostgreSQL major (13 to 18: Debian's 15, the others from npm, see scripts/test-matrix.sh),
//! values that follow what the database did, skips, and user-supplied definition files.

use std::time::Duration;

use crate::support::library::builtin_collectors;
use crate::support::{
    self, check_config, stderr, Cluster, Exporter, ExporterConfig, Metrics, TempDir,
};

/// Collectors expected to be skipped on a plain primary without standbys, and why.
fn skipped_on_primary(major: u32) -> Vec<(&'static str, &'static str)> {
    let mut skipped = vec![("recovery", "primary")];
    if major < 16 {
        skipped.push(("io", "version"));
    }
    skipped
}

/// Families every healthy primary must show, whatever its version.
const ALWAYS: &[&str] = &[
    "pg_stat_database_xact_commit_total",
    "pg_stat_database_blks_hit_total",
    "pg_stat_database_deadlocks_total",
    "pg_database_size_bytes",
    "pg_stat_activity_sessions",
    "pg_connections_max",
    "pg_oldest_transaction_age_seconds",
    "pg_oldest_idle_in_transaction_seconds",
    "pg_oldest_query_age_seconds",
    "pg_wal_position_bytes",
    "pg_checkpoints_timed_total",
    "pg_checkpoints_requested_total",
    "pg_stat_archiver_archived_total",
    "pg_autovacuum_workers_max",
    "pg_database_xid_age",
    "pg_database_xid_wraparound_ratio",
    "pg_settings_bytes",
    "pg_settings_seconds",
    "pg_settings_value",
    "pg_settings_pending_restart",
    "pg_table_dead_rows",
    "pg_sequence_used_ratio",
    // Rust collectors: statements, locks, sampler, relations.
    "pg_statement_latency_seconds_count",
    "pg_stat_statements_entries",
    "pg_stat_statements_all_calls_total",
    "pg_lock_waiting_sessions",
    "pg_blocking_blocked_sessions",
    "pg_activity_samples_total",
    "pg_table_size_bytes",
    "pg_index_size_bytes",
    "pg_table_seq_scans_total",
    "pg_index_scans_total",
    "pg_index_usage_stats_age_seconds",
    "pg_index_invalid_indexes",
];

/// Extra families expected from 14 on.
const FROM_14: &[&str] = &["pg_stat_wal_bytes_total", "pg_stat_database_sessions_total"];

/// Extra families expected from 16 on.
const FROM_16: &[&str] = &[
    // The seed's index scan: the time of an index's last scan appeared in 16.
    "pg_index_last_scan_timestamp_seconds",
    "pg_stat_io_read_bytes_total",
    "pg_stat_io_write_bytes_total",
    "pg_stat_io_hits_total",
];

fn seed(cluster: &Cluster, db: &str) {
    cluster.psql(
        db,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
         CREATE TABLE bookings (id serial PRIMARY KEY, note text); \
         INSERT INTO bookings (note) SELECT 'x' FROM generate_series(1, 1000); \
         DELETE FROM bookings WHERE id % 2 = 0; \
         SELECT setval('bookings_id_seq', 2000000000); \
         SET enable_seqscan = off; SELECT note FROM bookings WHERE id = 7",
    );
}

/// Runs every collector on `cluster` and checks: none failed, the expected ones are skipped
/// for the expected reason, and the expected families are present.
fn check_every_collector(cluster: &Cluster, label: &str) -> Metrics {
    let db = cluster.create_database("matrix");
    seed(cluster, &db);
    // Every built-in collector at a 1s interval, so one test run sees them all.
    let collectors = builtin_collectors();
    let config = collectors.iter().fold(
        ExporterConfig::new(label, &cluster.dsn(&db)),
        |config, name| config.interval(name, "1s"),
    );
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(20), "every collector ran twice", |m| {
        collectors.iter().all(|name| m.runs(label, name) >= 2.0)
    });
    let major: u32 = cluster
        .psql("postgres", "SHOW server_version_num")
        .parse::<u32>()
        .unwrap()
        / 10000;
    for name in &collectors {
        let labels = [("target", label), ("collector", name.as_str())];
        assert_eq!(
            m.value("pgkpi_collector_errors_total", &labels),
            Some(0.0),
            "collector {name} failed on {label}; logs:\n{}",
            exporter.logs()
        );
        let skipped: Vec<_> = m
            .find("pgkpi_collector_skipped", &labels)
            .iter()
            .map(|s| s.labels["reason"].clone())
            .collect();
        let expected: Vec<String> = skipped_on_primary(major)
            .iter()
            .filter(|(skipped, _)| skipped == name)
            .map(|(_, reason)| reason.to_string())
            .collect();
        assert_eq!(skipped, expected, "skip state of {name} on {label}");
    }
    // One line per major in the test command's output (scripts/test-matrix.sh shows it), so
    // the log says which collectors ran where.
    let skipped: Vec<String> = skipped_on_primary(major)
        .iter()
        .map(|(name, reason)| format!("{name} ({reason})"))
        .collect();
    println!(
        "matrix: PostgreSQL {major} ({}): {} collectors ran twice without an error: {}; skipped as expected: {}",
        cluster.psql("postgres", "SHOW server_version"),
        collectors.len(),
        collectors.join(", "),
        skipped.join(", ")
    );
    let wanted = ALWAYS
        .iter()
        .chain(if major >= 14 { FROM_14 } else { &[] })
        .chain(if major >= 16 { FROM_16 } else { &[] });
    for family in wanted {
        assert!(
            !m.find(family, &[("target", label)]).is_empty(),
            "{family} missing on {label} (PostgreSQL {major})"
        );
        // A histogram's HELP stands on its family name, not on the _count series.
        let help_name = family.strip_suffix("_count").unwrap_or(family);
        assert!(m.helps.contains_key(help_name), "{family} has no HELP");
    }
    // Units converted in one place: shared_buffers in bytes, checkpoint_timeout in seconds.
    let shared_buffers = cluster.number(
        "postgres",
        "SELECT setting::float8 * 8192 FROM pg_settings WHERE name = 'shared_buffers'",
    );
    assert_eq!(
        m.value(
            "pg_settings_bytes",
            &[("target", label), ("name", "shared_buffers")]
        ),
        Some(shared_buffers)
    );
    assert_eq!(
        m.value(
            "pg_settings_seconds",
            &[("target", label), ("name", "checkpoint_timeout")]
        ),
        Some(300.0)
    );
    // The int4 serial set near 2^31: the ratio reflects the column's limit.
    let used = m
        .value(
            "pg_sequence_used_ratio",
            &[("target", label), ("sequencename", "bookings_id_seq")],
        )
        .unwrap();
    assert!(
        (used - 2_000_000_000.0 / 2_147_483_646.0).abs() < 1e-6,
        "used ratio {used}"
    );
    m
}

/// A cluster of another major (from npm), checked to be that major.
fn cluster_of_major(major: u32) -> Cluster {
    let cluster = Cluster::start_with(support::pg_major_bindir(major));
    assert!(
        cluster
            .psql("postgres", "SHOW server_version_num")
            .starts_with(&major.to_string()),
        "{} is not PostgreSQL {major}",
        cluster.bindir.display()
    );
    cluster
}

#[test]
fn every_builtin_collector_runs_on_postgresql_13() {
    check_every_collector(&cluster_of_major(13), "pg13");
}

#[test]
fn every_builtin_collector_runs_on_postgresql_14() {
    check_every_collector(&cluster_of_major(14), "pg14");
}

#[test]
fn every_builtin_collector_runs_on_postgresql_15() {
    let cluster = Cluster::shared();
    assert!(cluster
        .psql("postgres", "SHOW server_version_num")
        .starts_with("15"));
    check_every_collector(cluster, "pg15");
}

#[test]
fn every_builtin_collector_runs_on_postgresql_16() {
    check_every_collector(&cluster_of_major(16), "pg16");
}

#[test]
fn every_builtin_collector_runs_on_postgresql_17() {
    let cluster = cluster_of_major(17);
    let m = check_every_collector(&cluster, "pg17");
    // 17 moved checkpoints to pg_stat_checkpointer: the same names must still move.
    cluster.psql("postgres", "CHECKPOINT");
    assert!(m
        .value("pg_checkpoints_requested_total", &[("target", "pg17")])
        .is_some());
    // pg_stat_io: the seed's client backend grew a table (1000 rows) and hit its buffers.
    let client = [
        ("target", "pg17"),
        ("backend_type", "client backend"),
        ("object", "relation"),
    ];
    let extended = m.value("pg_stat_io_extend_bytes_total", &client).unwrap();
    assert!(
        extended >= 8192.0 && extended % 8192.0 == 0.0,
        "extend bytes {extended}: whole 8 kB blocks"
    );
    assert!(m.value("pg_stat_io_hits_total", &client).unwrap() > 0.0);
}

#[test]
fn every_builtin_collector_runs_on_postgresql_18() {
    check_every_collector(&cluster_of_major(18), "pg18");
}

#[test]
fn values_follow_what_the_database_did() {
    let (cluster, db) = Cluster::shared_database("values");
    let config = ExporterConfig::new("values", &cluster.dsn(&db))
        .interval("database", "1s")
        .interval("activity", "1s");
    let exporter = Exporter::start(&config.build());
    let commits = |m: &Metrics| {
        m.value(
            "pg_stat_database_xact_commit_total",
            &[("target", "values"), ("datname", &db)],
        )
    };
    let temp_bytes = |m: &Metrics| {
        m.value(
            "pg_stat_database_temp_bytes_total",
            &[("target", "values"), ("datname", &db)],
        )
    };
    let before = exporter.wait_for(Duration::from_secs(10), "database counters", |m| {
        commits(m).is_some()
    });
    let (commits_before, temp_before) = (commits(&before).unwrap(), temp_bytes(&before).unwrap());

    // 50 known commits, and a sort that spills to a temporary file.
    let statements: String = (0..50)
        .map(|i| format!("BEGIN; SELECT {i}; COMMIT; "))
        .collect();
    cluster.psql(&db, &statements);
    cluster.psql(&db, "SET work_mem = '64kB'; SELECT count(*) FROM (SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC) s");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let idle = rt.block_on(async {
        let client = cluster.client(&db).await;
        client.batch_execute("BEGIN; SELECT 1").await.unwrap();
        client
    });
    std::thread::sleep(Duration::from_secs(3));
    let after = exporter.wait_for(Duration::from_secs(10), "counters moved", |m| {
        commits(m).unwrap_or(0.0) >= commits_before + 50.0
            && temp_bytes(m).unwrap_or(0.0) > temp_before
            && m.value(
                "pg_oldest_idle_in_transaction_seconds",
                &[("target", "values")],
            )
            .unwrap_or(0.0)
                >= 3.0
    });
    assert!(
        after
            .value("pg_idle_in_transaction_sessions", &[("target", "values")])
            .unwrap()
            >= 1.0
    );
    drop(idle);
    drop(rt);
}

#[test]
fn missing_extension_is_skipped_once_with_a_reason() {
    let (cluster, db) = Cluster::shared_database("skip");
    let dir = TempDir::new("defs");
    dir.write(
        "trgm.toml",
        "name = \"trigram_usage\"\ndescription = \"Needs pg_trgm.\"\ninterval = \"1s\"\n\
         [requires]\nextension = \"pg_trgm\"\n\
         [[query]]\nsql = \"SELECT 1 AS one\"\n\
         [[metric]]\ncolumn = \"one\"\nname = \"app_trigram_one\"\ntype = \"gauge\"\nhelp = \"One.\"\n",
    );
    let config = ExporterConfig::new("skip", &cluster.dsn(&db)).collector_paths(&[&dir.0]);
    let exporter = Exporter::start(&config.build());
    let labels = [("target", "skip"), ("collector", "trigram_usage")];
    let m = exporter.wait_for(Duration::from_secs(10), "three skipped runs", |m| {
        m.runs("skip", "trigram_usage") >= 3.0
    });
    assert_eq!(
        m.value(
            "pgkpi_collector_skipped",
            &[
                ("target", "skip"),
                ("collector", "trigram_usage"),
                ("reason", "extension_missing")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(m.value("pgkpi_collector_errors_total", &labels), Some(0.0));
    assert!(m.find("app_trigram_one", &[]).is_empty());
    let logs = exporter.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("collector skipped") && l.contains("trigram_usage"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line, not one per run:\n{logs}");
    assert!(
        lines[0].contains("CREATE EXTENSION pg_trgm"),
        "{}",
        lines[0]
    );

    // Installing the extension ends the skip without a restart.
    cluster.psql(&db, "CREATE EXTENSION pg_trgm");
    let m = exporter.wait_for(
        Duration::from_secs(10),
        "collector runs after CREATE EXTENSION",
        |m| m.value("app_trigram_one", &[("target", "skip")]) == Some(1.0),
    );
    assert!(m.find("pgkpi_collector_skipped", &labels).is_empty());
}

#[test]
fn user_definitions_add_metrics_with_caps() {
    let (cluster, db) = Cluster::shared_database("userdef");
    cluster.psql(
        &db,
        "CREATE TABLE bookings (id int, status text, payment_deadline timestamptz); \
         INSERT INTO bookings SELECT g, (ARRAY['pending','paid','expired','cancelled'])[1 + g % 4], \
           now() - interval '1 hour' FROM generate_series(1, 40) g",
    );
    let dir = TempDir::new("defs");
    dir.write(
        "bookings.toml",
        r#"name = "bookings_overdue"
description = "Bookings past their payment deadline and not expired, by status."
interval = "1s"
labels = ["status"]
max_series = 2
order_by = "n"
[[query]]
sql = """
SELECT status, count(*) AS n FROM bookings
WHERE payment_deadline < now() AND status <> 'expired'
GROUP BY status
"""
[[metric]]
column = "n"
name = "app_bookings_overdue"
type = "gauge"
help = "Bookings past the payment deadline that are not expired yet."
"#,
    );
    // A query that cuts to the cap itself, counting what it ranked (ranked_rows).
    dir.write(
        "statuses.toml",
        r#"name = "bookings_by_status"
description = "Bookings of the most frequent status."
interval = "1s"
labels = ["status"]
max_series = 1
order_by = "n"
ranked_rows = "statuses"
[[query]]
sql = """
SELECT status, n, count(*) OVER () AS statuses
FROM (SELECT status, count(*) AS n FROM bookings GROUP BY status) s
ORDER BY n DESC, status LIMIT 1
"""
[[metric]]
column = "n"
name = "app_bookings_of_status"
type = "gauge"
help = "Bookings of the status."
"#,
    );
    let config = ExporterConfig::new("user", &cluster.dsn(&db)).collector_paths(&[&dir.0]);
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "user metrics", |m| {
        !m.find("app_bookings_overdue", &[("target", "user")])
            .is_empty()
            && !m
                .find("app_bookings_of_status", &[("target", "user")])
                .is_empty()
    });
    // Four statuses ranked, one returned: the other three count as dropped.
    assert_eq!(
        m.find("app_bookings_of_status", &[("target", "user")])
            .len(),
        1
    );
    assert_eq!(
        m.value(
            "pgkpi_collector_dropped_series",
            &[("target", "user"), ("collector", "bookings_by_status")]
        ),
        Some(3.0)
    );
    // Three statuses qualify (10 each); the cap keeps two and counts the third.
    assert_eq!(
        m.find("app_bookings_overdue", &[("target", "user")]).len(),
        2
    );
    assert_eq!(
        m.value(
            "app_bookings_overdue",
            &[("target", "user"), ("status", "pending")]
        ),
        Some(10.0)
    );
    assert_eq!(
        m.value(
            "pgkpi_collector_dropped_series",
            &[("target", "user"), ("collector", "bookings_overdue")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.types.get("app_bookings_overdue").map(String::as_str),
        Some("gauge")
    );
}

#[test]
fn the_monitoring_session_runs_with_its_safety_settings() {
    let (cluster, db) = Cluster::shared_database("session_settings");
    let dir = TempDir::new("session");
    // A definition reads the settings from inside pgkpi's own session.
    dir.write(
        "session.toml",
        r#"name = "session_settings"
description = "The monitoring session's own settings."
interval = "1s"
labels = ["name", "setting"]
[[query]]
sql = """
SELECT name, current_setting(name) AS setting, 1 AS one
FROM unnest(ARRAY['statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
                  'default_transaction_read_only', 'jit', 'max_parallel_workers_per_gather']) name
"""
[[metric]]
column = "one"
name = "test_session_setting"
type = "gauge"
help = "A setting of the monitoring session."
"#,
    );
    let config = ExporterConfig::new("session", &cluster.dsn(&db)).collector_paths(&[&dir.0]);
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "the session's settings", |m| {
        m.find("test_session_setting", &[("target", "session")])
            .len()
            == 6
    });
    for (name, setting) in [
        ("statement_timeout", "5s"),
        ("lock_timeout", "100ms"),
        ("idle_in_transaction_session_timeout", "30s"),
        ("default_transaction_read_only", "on"),
        ("jit", "off"),
        ("max_parallel_workers_per_gather", "0"),
    ] {
        assert_eq!(
            m.value(
                "test_session_setting",
                &[("target", "session"), ("name", name), ("setting", setting)]
            ),
            Some(1.0),
            "{name} should be {setting}"
        );
    }
}

#[test]
fn broken_definitions_fail_check_config_precisely() {
    let dir = TempDir::new("broken");
    let cases = [
        (
            "counter.toml",
            "name = \"c\"\ndescription = \"d\"\n[[query]]\nsql = \"SELECT 1 AS n\"\n\
             [[metric]]\ncolumn = \"n\"\nname = \"app_things\"\ntype = \"counter\"\nhelp = \"h\"\n",
            "collector \"c\": metric[0] (app_things): counter names end in _total",
        ),
        (
            "typo.toml",
            "name = \"t\"\ndescription = \"d\"\nintervall = \"1s\"\n[[query]]\nsql = \"SELECT 1 AS n\"\n",
            "typo.toml, line 3, collector \"t\": unknown field `intervall`",
        ),
        (
            "write.toml",
            "name = \"w\"\ndescription = \"d\"\n[[query]]\nsql = \"UPDATE x SET y = 1\"\n\
             [[metric]]\ncolumn = \"n\"\nname = \"app_w\"\ntype = \"gauge\"\nhelp = \"h\"\n",
            "collector \"w\": query[0].sql: must be one read-only statement",
        ),
        (
            "dup.toml",
            "name = \"dup\"\ndescription = \"d\"\n[[query]]\nsql = \"SELECT 1 AS n\"\n\
             [[metric]]\ncolumn = \"n\"\nname = \"pg_up\"\ntype = \"gauge\"\nhelp = \"h\"\n",
            "metric \"pg_up\" is defined twice",
        ),
    ];
    for (file, text, expected) in cases {
        let path = dir.write(file, text);
        let config = dir.write(
            &format!("{file}.pgkpi.toml"),
            &format!(
                "collector_paths = [\"{}\"]\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
                path.display()
            ),
        );
        let out = check_config(&config);
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{file}: expected {expected:?} in {stderr}"
        );
        assert!(
            stderr.contains(file),
            "{file}: the message names the file: {stderr}"
        );
    }
}
