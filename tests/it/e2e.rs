//! End to end, on loopback: PostgreSQL with the baseline schema, the migrations and the
//! workload generator; pgBouncer in front of it (pool size 2); pgkpi monitoring both;
//! Prometheus loading alerts/*.yml and scraping pgkpi; Alertmanager with
//! alerts/alertmanager.yml. Then:
//! (c) a lock-contention scenario makes PostgresLockWaits fire in Prometheus, reach
//!     Alertmanager, and resolve once the lock is released; at the same time 10 clients in
//!     pg_sleep through the pool of 2 make PgbouncerPoolSaturated fire and reach Alertmanager;
//!     while the lock is held,
//! (a) every dashboard panel expression and every rule evaluates without error and returns
//!     data, except the panels listed in ALLOWED_EMPTY with the reason, and
//! (b) every metric name a dashboard or rule references is one pgkpi defines and serves.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::library::defined_families;
use crate::support::pgbouncer::Pgbouncer;
use crate::support::schema::{apply_migration, migration_files};
use crate::support::stack::{self, query, Service};
use crate::support::{
    heavy_load, pg_bindir, repo_files, repo_path, retry, rule_files, Cluster, Exporter,
    ExporterConfig, KillOnDrop,
};

/// Expressions (by a fragment of their text) that legitimately return nothing on the demo
/// stack, and why.
const ALLOWED_EMPTY: &[(&str, &str)] = &[
    (
        "pg_backup_",
        "no [backups] directory in the e2e stack (tests/it/backups.rs)",
    ),
    (
        "pg_stat_io_",
        "pg_stat_io is PostgreSQL 16+; the demo stack runs 15",
    ),
    (
        "pg_replication_",
        "no standby or replication slot in the demo stack",
    ),
    ("pg_standby_", "the demo server is a primary"),
    (
        "pg_stat_archiver_since_last_archived_seconds",
        "archive_mode is off in the demo stack",
    ),
    (
        "pg_stat_archiver_failed_total",
        "archiving never ran, so never failed",
    ),
    (
        "pg_statement_slow_calls_total",
        "no statement reaches the slow threshold in a short run",
    ),
    ("deriv(", "growth needs an hour of size samples"),
    (
        "pg_index_unused_size_bytes",
        "no index of the small demo fixture is both unused and over the 1 MiB floor",
    ),
    (
        "pg_settings_pending_restart",
        "returns 0, present; listed for stat panels with instant queries",
    ),
];

/// Metric families that may be absent from a healthy demo server's output, and why.
const ALLOWED_ABSENT: &[(&str, &str)] = &[
    (
        "pg_backup_",
        "no [backups] directory in the e2e stack (tests/it/backups.rs)",
    ),
    ("pg_stat_io_", "PostgreSQL 16+; the demo stack runs 15"),
    ("pg_replication_", "no standby or replication slot"),
    ("pg_standby_", "primary only"),
    ("pg_stat_archiver_since_last", "archiving off"),
    ("pg_stat_archiver_last_archived", "archiving off"),
    (
        "pg_statement_slow_calls_total",
        "only once a statement is slower than the threshold",
    ),
    (
        "pg_stat_statements_dealloc_total",
        "only once entries are evicted",
    ),
    (
        "pg_index_unused_size_bytes",
        "no index of the small demo fixture is unused and over 1 MiB",
    ),
];

/// The demo database: baseline, small seed, every migration, seed again (fills new tables).
fn demo_database(cluster: &Cluster) {
    cluster.psql("postgres", "CREATE DATABASE app");
    let fixtures = repo_path("fixtures");
    cluster.psql_file("app", fixtures.join("baseline.sql"), &[]);
    cluster.psql_file("app", fixtures.join("seed.sql"), &[("scale", "0.1")]);
    for migration in migration_files() {
        apply_migration(cluster, "app", &migration);
    }
    cluster.psql_file("app", fixtures.join("seed.sql"), &[("scale", "0.1")]);
}

/// Every panel expression of every dashboard, with its dashboard and panel title.
fn dashboard_expressions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for board in repo_files("dashboards", ".json") {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&board).unwrap()).unwrap();
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    board.file_name().unwrap().to_string_lossy().into_owned(),
                    panel["title"].as_str().unwrap_or("").to_string(),
                    target["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// Grafana variables as a Prometheus query sees them with "All" selected: every `$name` is
/// the regex `.*`; `$__rate_interval` is four scrape intervals and more.
fn substitute(expr: &str) -> String {
    let expr = expr.replace("$__rate_interval", "30s");
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let name_len = rest[at + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len() - at - 1);
        out.push_str(".*");
        rest = &rest[at + 1 + name_len..];
    }
    out.push_str(rest);
    out
}

/// Metric names in a PromQL expression: pgkpi's prefixes, recording rules (with ':') excluded.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if start_ok
            && (expr[i..].starts_with("pg_")
                || expr[i..].starts_with("pgkpi_")
                || expr[i..].starts_with("pgbouncer_")
                || expr[i..].starts_with("app_"))
        {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map(|n| i + n)
                .unwrap_or(expr.len());
            let name = &expr[i..end];
            // Label values in quotes (e.g. name="pg_x") are not metric names.
            let quoted = i > 0 && bytes[i - 1] == b'"';
            if !name.contains(':') && !quoted {
                names.insert(name.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

fn allowed<'a>(text: &str, list: &'a [(&str, &str)]) -> Option<&'a str> {
    list.iter()
        .find(|(fragment, _)| text.contains(fragment))
        .map(|(_, why)| *why)
}

/// Waits (polling Prometheus or Alertmanager every 500 ms) until `check` holds; returns how
/// long that took.
fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    retry(timeout, Duration::from_millis(500), || {
        check().then_some(()).ok_or(())
    })
    .unwrap_or_else(|()| panic!("waited {timeout:?} for {what}"));
    started.elapsed()
}

fn firing(prometheus: &Service, alert: &str) -> bool {
    let (_, result, _) = query(
        prometheus,
        &format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}}"),
    );
    !result.is_empty()
}

fn in_alertmanager(alertmanager: &Service, alert: &str) -> bool {
    let alerts = alertmanager.json(&format!(
        "/api/v2/alerts?active=true&filter={}",
        stack::encode(&format!("alertname=\"{alert}\""))
    ));
    alerts.as_array().is_some_and(|a| !a.is_empty())
}

#[test]
fn full_stack_dashboards_rules_and_lock_alert() {
    let _one_heavy_test_at_a_time = heavy_load();
    let started = Instant::now();
    let cluster = Cluster::start_with_conf(
        pg_bindir(),
        &std::fs::read_to_string(repo_path("examples/postgresql-demo-logging.conf")).unwrap(),
    );
    demo_database(&cluster);
    let setup = started.elapsed();

    let _load = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_pgkpi-load"))
            .args([
                "--dsn",
                &cluster.dsn("app"),
                "--duration",
                "10m",
                "--rate",
                "50",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bouncer = Pgbouncer::start(&cluster, "app", 2, true);
    let config = ExporterConfig::new("app", &cluster.dsn("app"))
        .raw(&std::fs::read_to_string(repo_path("examples/pgkpi-demo.toml")).unwrap())
        .raw(&format!(
            "[[targets]]\nname = \"pooler\"\nkind = \"pgbouncer\"\ndsn = \"{}\"\n",
            bouncer.admin_dsn("pgkpi")
        ))
        .interval("locks", "2s")
        .interval("pgbouncer_pools", "2s")
        .interval("pgbouncer_stats", "2s")
        .interval("database_size", "5s");
    let exporter = Exporter::start(&config.build());
    let alertmanager = stack::alertmanager(&repo_path("alerts/alertmanager.yml"));
    let prometheus = stack::prometheus(
        &exporter.address,
        &rule_files(),
        &alertmanager.address,
        "2s",
    );

    // Let a few scrapes and rule evaluations happen, and every collector run.
    wait_until(
        Duration::from_secs(60),
        "several scrapes with statement latencies",
        || {
            let (_, result, _) = query(
                &prometheus,
                "count(count_over_time(pg_statement_latency_seconds_count[1m])) > 0",
            );
            let (_, scrapes, _) = query(&prometheus, "count_over_time(up{job=\"pgkpi\"}[1m]) >= 5");
            !result.is_empty() && !scrapes.is_empty()
        },
    );
    std::thread::sleep(Duration::from_secs(6));
    let warmup = started.elapsed();

    // (c) lock contention: a holder keeps a row locked, two sessions queue behind it.
    assert!(
        !firing(&prometheus, "PostgresLockWaits"),
        "lock alert firing before the scenario"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Pool saturation: 10 clients in pg_sleep through the pool of 2, 8 of them waiting.
    assert!(!firing(&prometheus, "PgbouncerPoolSaturated"));
    let pool_clients: Vec<_> = (0..10)
        .map(|_| {
            let dsn = bouncer.pool_dsn();
            rt.spawn(async move {
                let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let _ = client.simple_query("SELECT pg_sleep(120)").await;
            })
        })
        .collect();
    let saturation = Instant::now();
    let (holder, waiters) = rt.block_on(async {
        let holder = cluster.client("app").await;
        holder
            .batch_execute("BEGIN; SELECT id FROM core.bookings ORDER BY id LIMIT 1 FOR UPDATE")
            .await
            .unwrap();
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let client = cluster.client("app").await;
            waiters.push(tokio::spawn(async move {
                let _ = client
                    .batch_execute(
                        "SET lock_timeout = 0; \
                         UPDATE core.bookings SET status = status WHERE id = (SELECT min(id) FROM core.bookings)",
                    )
                    .await;
                client
            }));
        }
        (holder, waiters)
    });
    let contention = Instant::now();
    let fired_after = wait_until(
        Duration::from_secs(120),
        "PostgresLockWaits firing in Prometheus",
        || firing(&prometheus, "PostgresLockWaits"),
    );
    wait_until(
        Duration::from_secs(60),
        "PostgresLockWaits received by Alertmanager",
        || in_alertmanager(&alertmanager, "PostgresLockWaits"),
    );
    let received_after = contention.elapsed();
    wait_until(
        Duration::from_secs(120),
        "PgbouncerPoolSaturated received by Alertmanager",
        || in_alertmanager(&alertmanager, "PgbouncerPoolSaturated"),
    );
    let pool_alert_after = saturation.elapsed();
    // While sessions wait on the lock, the lock panels have something to show.
    // (a) every dashboard expression and every rule.
    let served: BTreeSet<String> = exporter
        .metrics()
        .samples
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let defined = defined_families();
    let mut problems = Vec::new();
    let mut empty_allowed = Vec::new();
    let expressions = dashboard_expressions();
    for (board, title, expr) in &expressions {
        let (status, result, error) = query(&prometheus, &substitute(expr));
        if status != "success" {
            problems.push(format!("{board} / {title}: invalid: {error}\n  {expr}"));
        } else if result.is_empty() {
            match allowed(expr, ALLOWED_EMPTY) {
                Some(why) => empty_allowed.push(format!("{board} / {title}: {why}")),
                None => problems.push(format!("{board} / {title}: no data\n  {expr}")),
            }
        }
    }
    let rules = prometheus.json("/api/v1/rules");
    let mut rule_exprs = Vec::new();
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap().to_string();
            let expr = rule["query"].as_str().unwrap().to_string();
            if rule["health"] != "ok" {
                problems.push(format!(
                    "rule {name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            if rule["type"] == "recording" {
                let (_, result, _) = query(&prometheus, &name);
                if result.is_empty() {
                    match allowed(&expr, ALLOWED_EMPTY) {
                        Some(why) => empty_allowed.push(format!("recording rule {name}: {why}")),
                        None => problems.push(format!("recording rule {name}: no data\n  {expr}")),
                    }
                }
            }
            rule_exprs.push((name, expr));
        }
    }
    // (b) every referenced metric is defined by pgkpi and, unless allowed, served now.
    let mut referenced = BTreeSet::new();
    for expr in expressions
        .iter()
        .map(|(_, _, e)| e)
        .chain(rule_exprs.iter().map(|(_, e)| e))
    {
        referenced.extend(metric_names(expr));
    }
    for name in &referenced {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum").filter(|f| defined.contains(*f)))
            .or_else(|| name.strip_suffix("_count").filter(|f| defined.contains(*f)))
            .unwrap_or(name);
        if !defined.contains(family) {
            problems.push(format!("{name}: referenced but no collector defines it"));
        } else if !served.contains(name) && allowed(name, ALLOWED_ABSENT).is_none() {
            problems.push(format!("{name}: defined but not served by the demo stack"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n\nallowed empty:\n{}",
        problems.len(),
        problems.join("\n"),
        empty_allowed.join("\n")
    );
    println!(
        "checked {} dashboard expressions, {} rules, {} metric names; {} allowed empty",
        expressions.len(),
        rule_exprs.len(),
        referenced.len(),
        empty_allowed.len()
    );

    let alert = alertmanager.json(&format!(
        "/api/v2/alerts?filter={}",
        stack::encode("alertname=\"PostgresLockWaits\"")
    ));
    assert_eq!(alert[0]["labels"]["severity"], "critical");
    assert_eq!(alert[0]["labels"]["target"], "app");
    assert!(
        alert[0]["receivers"].to_string().contains("pager"),
        "{alert}"
    );

    let alert = alertmanager.json(&format!(
        "/api/v2/alerts?filter={}",
        stack::encode("alertname=\"PgbouncerPoolSaturated\"")
    ));
    assert_eq!(alert[0]["labels"]["target"], "pooler", "{alert}");
    assert_eq!(alert[0]["labels"]["database"], "app", "{alert}");
    assert_eq!(alert[0]["labels"]["severity"], "critical", "{alert}");
    for client in pool_clients {
        client.abort();
    }

    rt.block_on(async {
        holder.batch_execute("COMMIT").await.unwrap();
        for waiter in waiters {
            let _ = waiter.await;
        }
    });
    let released = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "PostgresLockWaits resolved in Prometheus",
        || !firing(&prometheus, "PostgresLockWaits"),
    );
    wait_until(
        Duration::from_secs(120),
        "PostgresLockWaits resolved in Alertmanager",
        || !in_alertmanager(&alertmanager, "PostgresLockWaits"),
    );
    // The jsonlog volume under the demo's logging settings at this test's load (pgkpi-load
    // straight to the database; the demo's goes through pgBouncer with --pooled and
    // --lock-contention and logs about twice as much, docs/statements.md quotes the demo's
    // own): what pgkpi read of it since it started following the current file.
    let log_bytes = exporter
        .metrics()
        .value("pgkpi_statements_log_bytes_total", &[("target", "app")])
        .unwrap_or(0.0);
    let followed = started.elapsed().saturating_sub(setup).as_secs_f64();
    println!(
        "e2e server jsonlog (demo logging settings): {log_bytes} bytes in {followed:.0} s, {:.0} MB/day at pgkpi-load --rate 50 (not pooled)",
        log_bytes / followed * 86_400.0 / 1e6
    );
    assert!(log_bytes > 0.0, "the demo's log source read nothing");
    println!(
        "e2e timings: database setup {setup:?}, stack warm-up {warmup:?}, alert firing after \
         {fired_after:?}, in Alertmanager after {received_after:?}, resolved {:?} after release; \
         PgbouncerPoolSaturated in Alertmanager {pool_alert_after:?} after the pool filled",
        released.elapsed()
    );
    drop(rt);
}
