//! The workload generator: the real `pgkpi-load` binary for 30 s against a baseline-only and
//! a migrated database at the same time; every class runs, the expected statements reach
//! pg_stat_statements, and the reaper reclaims the leases of crashed consumers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::migration_files;
use crate::support::schema::apply_migration;
use crate::support::{heavy_load, repo_path, Cluster};

/// Statement shapes each run must leave in pg_stat_statements (whitespace collapsed).
const BASELINE_STATEMENTS: &[&str] = &[
    "SELECT id, user_id FROM chat.push_notifications WHERE status = $",
    "UPDATE chat.push_notifications SET status = $",
    "INSERT INTO chat.push_notifications",
    "UPDATE public.webhook_deliveries SET attempt_count = attempt_count + $",
    "FROM public.webhook_deliveries WHERE status = $",
    "FROM public.webhooks w WHERE w.active = $",
    "FROM chat.messages WHERE conversation_id = $1 ORDER BY created_at DESC",
    "INSERT INTO chat.messages",
    "INSERT INTO core.bookings",
    "UPDATE core.bookings SET updated_at = now() WHERE id = $1",
];
const MIGRATED_STATEMENTS: &[&str] = &[
    "FROM core.claim_notifications($1, $2, make_interval(secs => $3))",
    "SELECT core.complete_notification($1, $2)",
    "SELECT core.fail_notification(",
    "SELECT core.reclaim_expired_leases()",
    "INSERT INTO core.notification_queue",
    "INSERT INTO core.notification_deliveries",
    "UPDATE public.webhook_deliveries SET attempt_count = attempt_count + $",
    "FROM public.webhook_deliveries WHERE status = $",
    "FROM integration.webhook_subscriptions s JOIN public.webhooks w",
    "FROM chat.messages WHERE conversation_id = $1 ORDER BY created_at DESC",
    "INSERT INTO core.analytics_events",
    "UPDATE core.bookings SET updated_at = now() WHERE id = $1",
];

/// (class, kind) pairs that must have run; lock-waiter/wait must also have timed out.
const BASELINE_KINDS: &[(&str, &str)] = &[
    ("producer", "produce"),
    ("consumer", "claim"),
    ("consumer", "complete"),
    ("webhook", "delivery_failed"),
    ("webhook", "retry_sweep"),
    ("chat", "timeline"),
    ("chat", "send"),
    ("booking", "create"),
    ("lock-holder", "hold"),
    ("lock-waiter", "wait"),
];
const MIGRATED_KINDS: &[(&str, &str)] = &[
    ("producer", "produce"),
    ("consumer", "claim"),
    ("consumer", "complete"),
    ("consumer", "fail"),
    ("consumer", "crash"),
    ("reaper", "reclaim"),
    ("webhook", "delivery_failed"),
    ("webhook", "retry_sweep"),
    ("chat", "timeline"),
    ("booking", "create"),
    ("analytics", "event"),
    ("lock-holder", "hold"),
    ("lock-waiter", "wait"),
];

fn start_load(cluster: &Cluster, db: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pgkpi-load"))
        .args(["--dsn", &cluster.dsn(db)])
        .args(["--duration", "30s", "--rate", "100", "--seed", "7"])
        .args([
            "--consumers",
            "4",
            "--consumer-crash-rate",
            "0.2",
            "--lease",
            "2s",
        ])
        .args([
            "--lock-contention",
            "--lock-every",
            "5s",
            "--lock-hold",
            "2s",
        ])
        .args(["--output", "json"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgkpi-load")
}

fn check_run(
    label: &str,
    output: std::process::Output,
    kinds: &[(&str, &str)],
) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{label}: pgkpi-load exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{label}: summary is not JSON ({e}):\n{stdout}"));
    assert_eq!(summary["unexpected_errors"], 0, "{label}: {summary:#}");
    assert_eq!(summary["interrupted"], false, "{label}");
    let elapsed = summary["elapsed_seconds"].as_f64().unwrap();
    assert!(
        (29.0..=40.0).contains(&elapsed),
        "{label}: ran {elapsed}s, expected 30 s"
    );
    let rows = summary["kinds"].as_array().unwrap();
    let find = |class: &str, kind: &str| {
        rows.iter()
            .find(|r| r["class"] == class && r["kind"] == kind)
            .cloned()
    };
    for (class, kind) in kinds {
        let row = find(class, kind)
            .unwrap_or_else(|| panic!("{label}: no {class}/{kind} operations: {summary:#}"));
        assert!(row["ops"].as_u64().unwrap() > 0, "{label}: {row}");
    }
    let waits = find("lock-waiter", "wait").unwrap();
    assert!(
        waits["expected_errors"].as_u64().unwrap() > 0,
        "{label}: a 2 s hold against lock_timeout 1s must make waiters time out: {waits}"
    );
    summary
}

fn statements(cluster: &Cluster, db: &str) -> Vec<String> {
    cluster
        .psql(
            db,
            &format!(
                "SELECT regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{db}'"
            ),
        )
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn load_generator_runs_30s_against_baseline_and_migrated_schemas() {
    let _one_heavy_test_at_a_time = heavy_load();
    let cluster = Cluster::shared();
    let seed = repo_path("fixtures/seed.sql");
    let small = [("scale", "0.05")];
    let base = cluster.create_database("load_baseline");
    cluster.psql_file(&base, repo_path("fixtures/baseline.sql"), &[]);
    cluster.psql_file(&base, &seed, &small);
    let migrated = cluster.create_database("load_migrated");
    cluster.psql_file(&migrated, repo_path("fixtures/baseline.sql"), &[]);
    cluster.psql_file(&migrated, &seed, &small);
    for file in migration_files() {
        apply_migration(cluster, &migrated, &file);
    }
    cluster.psql_file(&migrated, &seed, &small);
    for db in [&base, &migrated] {
        cluster.psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    }

    let started = Instant::now();
    let base_run = start_load(cluster, &base);
    let migrated_run = start_load(cluster, &migrated);
    // Mid-run: every class is connected under its own application_name.
    std::thread::sleep(Duration::from_secs(10));
    let names = cluster.psql(
        "postgres",
        &format!(
            "SELECT string_agg(DISTINCT application_name, ',' ORDER BY application_name) \
             FROM pg_stat_activity WHERE datname = '{migrated}'"
        ),
    );
    for class in [
        "producer",
        "consumer",
        "reaper",
        "webhook",
        "chat",
        "booking",
        "analytics",
    ] {
        assert!(
            names.split(',').any(|n| n == format!("pgkpi-load/{class}")),
            "pgkpi-load/{class} not in pg_stat_activity: {names}"
        );
    }
    let base_out = base_run.wait_with_output().unwrap();
    let migrated_out = migrated_run.wait_with_output().unwrap();
    eprintln!("both runs done after {:.1?}", started.elapsed());
    check_run("baseline", base_out, BASELINE_KINDS);
    let summary = check_run("migrated", migrated_out, MIGRATED_KINDS);
    assert!(
        summary["skipped"].as_array().unwrap().is_empty(),
        "nothing is skipped on the migrated schema: {summary:#}"
    );

    for (db, wanted) in [
        (&base, BASELINE_STATEMENTS),
        (&migrated, MIGRATED_STATEMENTS),
    ] {
        let seen = statements(cluster, db);
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|w| !seen.iter().any(|s| s.contains(**w)))
            .collect();
        assert!(
            missing.is_empty(),
            "{db}: statement classes missing from pg_stat_statements: {missing:?}\nseen:\n{}",
            seen.join("\n")
        );
    }
    // The consumers that died left leases which the reaper gave back.
    let reclaimed = cluster.psql(
        &migrated,
        "SELECT count(*) FROM core.notification_queue \
         WHERE last_error LIKE 'lease expired: held by pgkpi-load-consumer-%'",
    );
    assert!(
        reclaimed.parse::<u64>().unwrap() > 0,
        "no expired lease was reclaimed"
    );
}
