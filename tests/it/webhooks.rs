//! The `webhooks` collector on the migrations' webhook tables with a known failure pattern,
//! and user-defined KPIs that run too long; each in a database of its own on the shared
//! cluster.

use std::time::Duration;

use crate::support::library::webhook_statements;
use crate::support::{schema, Cluster, Exporter, ExporterConfig, Metrics, TempDir};

const T: &str = "w";

fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.of(T, name, labels)
}

/// 1 000 deliveries created 10 minutes ago: 30% fail their first attempt; of those 300, 180
/// are delivered on a later attempt, 90 are given up and 30 are still retrying (10 of them
/// overdue). Webhook 1 has the most failures, then 2, then 3. Older deliveries (outside the
/// window) all failed and must not count.
const SCENARIO: &str = r#"
INSERT INTO public.webhooks (id, user_id, url, secret) OVERRIDING SYSTEM VALUE
SELECT g, 1, 'https://example.test/' || g, 's' FROM generate_series(1, 4) g;
INSERT INTO public.webhook_deliveries (webhook_id, event_type, status, attempt_count, next_retry_at, created_at)
SELECT CASE WHEN g <= 700 THEN 4
            WHEN g <= 880 THEN 1 + g % 3
            WHEN g <= 970 THEN CASE WHEN g <= 930 THEN 1 WHEN g <= 955 THEN 2 ELSE 3 END
            ELSE 1 END,
       'booking.created',
       CASE WHEN g <= 880 THEN 'delivered' WHEN g <= 970 THEN 'failed' ELSE 'retrying' END,
       CASE WHEN g <= 700 THEN 1 WHEN g <= 880 THEN 2 + g % 2 WHEN g <= 970 THEN 5 ELSE 1 + g % 2 END,
       CASE WHEN g > 970 AND g <= 980 THEN now() - interval '10 minutes'
            WHEN g > 980 THEN now() + interval '10 minutes' END,
       now() - interval '10 minutes'
FROM generate_series(1, 1000) g;
INSERT INTO public.webhook_deliveries (webhook_id, event_type, status, attempt_count, created_at)
SELECT 3, 'booking.created', 'failed', 5, now() - interval '3 hours' FROM generate_series(1, 500);
INSERT INTO public.webhook_event_logs (event_type, payload, processed, created_at)
SELECT 'booking.created', '{}', g > 5, now() - (g * interval '1 minute') + interval '3 minutes'
FROM generate_series(1, 20) g;
"#;

/// A database of the test's own with the application's tables and migration 005's indexes.
fn webhook_database(cluster: &Cluster, prefix: &str) -> String {
    schema::database_with(
        cluster,
        prefix,
        &["migrations/005_p1_webhooks_bookings.sql"],
    )
}

/// History that must not be read: 200 000 delivered deliveries and processed events, days old,
/// beside a recent hour of traffic and a small retry backlog.
const HISTORY: &str = r#"
INSERT INTO public.webhooks (id, user_id, url, secret) OVERRIDING SYSTEM VALUE
SELECT g, 1, 'https://example.test/' || g, 's' FROM generate_series(1, 4) g;
INSERT INTO public.webhook_deliveries (webhook_id, event_type, status, attempt_count, created_at)
SELECT 1 + g % 4, 'booking.created', 'delivered', 1, now() - interval '3 days' - g * interval '1 second'
FROM generate_series(1, 200000) g;
INSERT INTO public.webhook_deliveries (webhook_id, event_type, status, attempt_count, next_retry_at, created_at)
SELECT 1 + g % 4, 'booking.created', CASE WHEN g <= 50 THEN 'retrying' ELSE 'delivered' END,
       CASE WHEN g <= 50 THEN 2 ELSE 1 END,
       CASE WHEN g <= 50 THEN now() + interval '5 minutes' END, now() - g * interval '10 seconds'
FROM generate_series(1, 300) g;
INSERT INTO public.webhook_event_logs (event_type, payload, processed, created_at)
SELECT 'booking.created', '{}', g > 20, now() - g * interval '1 second'
FROM generate_series(1, 200000) g;
"#;

/// Every statement of a poll reads a few pages whatever the history: the window, the retry
/// backlog and the unprocessed events, through migration 005's indexes (EXPLAIN ANALYZE
/// counts the buffers each touches; a scan of the history would touch thousands).
#[test]
fn a_webhook_poll_reads_the_window_not_the_history() {
    let cluster = Cluster::shared();
    let db = webhook_database(cluster, "webhook_plans");
    cluster.psql(&db, HISTORY);
    cluster.psql(&db, "VACUUM ANALYZE public.webhook_deliveries");
    cluster.psql(&db, "VACUUM ANALYZE public.webhook_event_logs");
    let statements =
        webhook_statements("public.webhook_deliveries", "public.webhook_event_logs", 5);
    assert_eq!(statements.len(), 5, "{statements:?}");
    for (purpose, sql) in statements {
        let json = cluster.psql(
            &db,
            &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"),
        );
        let plan: serde_json::Value = serde_json::from_str(&json).expect("EXPLAIN JSON");
        let top = &plan[0]["Plan"];
        let blocks = top["Shared Hit Blocks"].as_f64().unwrap()
            + top["Shared Read Blocks"].as_f64().unwrap();
        eprintln!("webhooks {purpose}: {blocks} buffers");
        assert!(
            blocks < 100.0,
            "the {purpose} statement touched {blocks} buffers:\n{sql}\n{}",
            cluster.psql(&db, &format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
        );
    }
}

#[test]
fn webhook_rates_match_the_constructed_truth() {
    let cluster = Cluster::shared();
    let db = webhook_database(cluster, "webhooks");
    cluster.psql(&db, SCENARIO);
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("webhooks", "1s")
        .raw(
            "[webhooks]\n\
             deliveries_table = \"public.webhook_deliveries\"\nevents_table = \"public.webhook_event_logs\"\n\
             window = \"1h\"\noverdue_grace = \"1m\"\ntop_failing = 2\n",
        );
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "webhook metrics", |m| {
        get(m, "app_webhook_first_attempts", &[]).is_some()
    });
    // The constructed truth.
    assert_eq!(get(&m, "app_webhook_first_attempts", &[]), Some(1000.0));
    assert_eq!(
        get(&m, "app_webhook_first_attempts_succeeded", &[]),
        Some(700.0)
    );
    assert_eq!(
        get(&m, "app_webhook_first_attempt_success_ratio", &[]),
        Some(0.7)
    );
    assert_eq!(get(&m, "app_webhook_retried_deliveries", &[]), Some(270.0));
    assert_eq!(
        get(&m, "app_webhook_retried_deliveries_succeeded", &[]),
        Some(180.0)
    );
    let ratio = get(&m, "app_webhook_retry_success_ratio", &[]).unwrap();
    assert!((ratio - 2.0 / 3.0).abs() < 1e-12, "{ratio}");
    assert_eq!(get(&m, "app_webhook_window_seconds", &[]), Some(3600.0));

    // Statuses in the window (the 500 old failures are not), checked against the table.
    for status in ["delivered", "failed", "retrying"] {
        let truth = cluster.number(
            &db,
            &format!(
                "SELECT count(*) FROM public.webhook_deliveries WHERE status = '{status}' \
                 AND created_at > now() - interval '1 hour'"
            ),
        );
        assert_eq!(
            get(&m, "app_webhook_deliveries", &[("status", status)]),
            Some(truth),
            "{status}"
        );
    }
    assert_eq!(get(&m, "app_webhook_retries_pending", &[]), Some(30.0));
    assert_eq!(get(&m, "app_webhook_retries_overdue", &[]), Some(10.0));
    let overdue = get(&m, "app_webhook_retry_overdue_seconds", &[]).unwrap();
    assert!((600.0..700.0).contains(&overdue), "{overdue}");

    // Top 2 failing webhooks in the window, with their counts; webhook 3's old failures are
    // outside the window.
    let failing = m.find("app_webhook_failing_deliveries", &[("target", T)]);
    assert_eq!(failing.len(), 2, "{failing:?}");
    for sample in failing {
        let id = &sample.labels["webhook_id"];
        let truth = cluster.number(
            &db,
            &format!(
                "SELECT count(*) FROM public.webhook_deliveries WHERE webhook_id = {id} \
             AND created_at > now() - interval '1 hour' AND status IN ('retrying', 'failed')"
            ),
        );
        assert_eq!(sample.value, truth, "webhook {id}");
    }
    let top = cluster.number(
        &db,
        "SELECT webhook_id FROM public.webhook_deliveries \
        WHERE created_at > now() - interval '1 hour' AND status IN ('retrying', 'failed') \
        GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    );
    assert!(get(
        &m,
        "app_webhook_failing_deliveries",
        &[("webhook_id", &top.to_string())]
    )
    .is_some());

    // Event processing lag: 5 unprocessed, the oldest 2 minutes old.
    assert_eq!(get(&m, "app_webhook_events_unprocessed", &[]), Some(5.0));
    let lag = get(&m, "app_webhook_event_lag_seconds", &[]).unwrap();
    assert!((120.0..180.0).contains(&lag), "{lag}");

    // The retry worker catches up: overdue retries settle, the retry rate follows.
    cluster.psql(&db, "UPDATE public.webhook_deliveries SET status = 'delivered', attempt_count = attempt_count + 1, next_retry_at = NULL \
                       WHERE status = 'retrying' AND next_retry_at < now()");
    let m = exporter.wait_for(Duration::from_secs(10), "retries settled", |m| {
        get(m, "app_webhook_retries_overdue", &[]) == Some(0.0)
    });
    assert_eq!(get(&m, "app_webhook_retried_deliveries", &[]), Some(280.0));
    assert_eq!(
        get(&m, "app_webhook_retried_deliveries_succeeded", &[]),
        Some(190.0)
    );
}

#[test]
fn a_slow_user_kpi_is_cut_by_the_timeout_and_the_others_keep_running() {
    let (cluster, db) = Cluster::shared_database("slowkpi");
    let dir = TempDir::new("slowdefs");
    dir.write(
        "slow.toml",
        "name = \"slow_report\"\ndescription = \"Takes 3 s, more than statement_timeout.\"\ninterval = \"1s\"\n\
         [[query]]\nsql = \"SELECT 1 AS n FROM pg_sleep(3)\"\n\
         [[metric]]\ncolumn = \"n\"\nname = \"app_slow_report\"\ntype = \"gauge\"\nhelp = \"Never arrives.\"\n",
    );
    dir.write(
        "fast.toml",
        "name = \"fast_kpi\"\ndescription = \"A quick one.\"\ninterval = \"1s\"\n\
         [[query]]\nsql = \"SELECT count(*) AS n FROM pg_stat_activity\"\n\
         [[metric]]\ncolumn = \"n\"\nname = \"app_fast_sessions\"\ntype = \"gauge\"\nhelp = \"Sessions.\"\n",
    );
    // Only the server probe besides the two: every collector shares the target's one
    // connection, so a slow statement delays the ones queued behind it (by at most
    // statement_timeout); with 25 collectors starting at once that delay could add up past the
    // client-side timeouts and muddle what this test looks at.
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .collector_paths(&[&dir.0])
        .session("statement_timeout", "1s")
        .only_builtin(&["server"]);
    let exporter = Exporter::start(&config.build());
    let slow = [("target", T), ("collector", "slow_report")];
    let fast = [("target", T), ("collector", "fast_kpi")];
    let first = exporter.wait_for(Duration::from_secs(20), "two timed-out runs", |m| {
        m.value("pgkpi_collector_errors_total", &slow)
            .unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(first.value("pgkpi_collector_up", &slow), Some(0.0));
    assert!(first.find("app_slow_report", &[]).is_empty());
    // Cut by the server (statement_timeout), reported with PostgreSQL's reason.
    let logs = exporter.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("slow_report") && l.contains("statement timeout")),
        "{logs}"
    );
    let page = exporter.get("/").text();
    assert!(page.contains("statement timeout"), "{page}");
    // The other collectors keep running and succeeding meanwhile.
    let later = exporter.wait_for(Duration::from_secs(20), "others keep running", |m| {
        m.runs(T, "fast_kpi") >= first.runs(T, "fast_kpi") + 3.0
            && m.value("pgkpi_collector_errors_total", &slow)
                .unwrap_or(0.0)
                > first.value("pgkpi_collector_errors_total", &slow).unwrap()
    });
    assert_eq!(
        later.value("pgkpi_collector_errors_total", &fast),
        Some(0.0)
    );
    assert_eq!(later.value("pgkpi_collector_up", &fast), Some(1.0));
    assert!(get(&later, "app_fast_sessions", &[]).unwrap() >= 1.0);
    assert_eq!(
        later.value(
            "pgkpi_collector_up",
            &[("target", T), ("collector", "server")]
        ),
        Some(1.0)
    );
}

/// Issue 13: a monitoring role that loses SELECT on the deliveries table while pgkpi runs.
/// The collector is skipped with reason `permission` and the grant to give in the log; its
/// KPIs are absent (at most the last value is served until the skip is seen), never 0; after
/// the GRANT they come back without a restart.
#[test]
fn a_revoked_table_makes_the_kpis_unknown_never_zero() {
    const ROLE: &str = "pgkpi_whrevoke";
    let cluster = Cluster::shared();
    let db = webhook_database(cluster, "whrevoke");
    cluster.psql(&db, SCENARIO);
    cluster.psql(
        &db,
        &format!(
            "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT USAGE ON SCHEMA public TO {ROLE}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE};"
        ),
    );
    let dsn = cluster
        .dsn(&db)
        .replace("user=postgres", &format!("user={ROLE}"));
    let config = ExporterConfig::new(T, &dsn)
        .only_builtin(&["webhooks"])
        .interval("webhooks", "1s")
        .raw(
            "[webhooks]\n\
             deliveries_table = \"public.webhook_deliveries\"\nevents_table = \"public.webhook_event_logs\"\n\
             window = \"1h\"\n",
        );
    let exporter = Exporter::start(&config.build());
    let attempts = |m: &Metrics| get(m, "app_webhook_first_attempts", &[]);
    exporter.wait_for(Duration::from_secs(20), "the KPI read", |m| {
        attempts(m) == Some(1000.0)
    });

    cluster.psql(
        &db,
        &format!("REVOKE SELECT ON public.webhook_deliveries FROM {ROLE}"),
    );
    // From the REVOKE on, every scrape serves the last value or nothing: never 0.
    let mut seen = Vec::new();
    let gone = crate::support::retry(Duration::from_secs(30), Duration::from_millis(100), || {
        let m = exporter.metrics();
        let value = attempts(&m);
        seen.push(value);
        let failed = m.of(
            T,
            "pgkpi_collector_skipped",
            &[("collector", "webhooks"), ("reason", "permission")],
        ) == Some(1.0);
        if failed && value.is_none() {
            Ok(m)
        } else {
            Err(m
                .text
                .lines()
                .filter(|l| l.contains("webhooks"))
                .map(str::to_string)
                .collect::<Vec<_>>())
        }
    });
    if let Err(lines) = &gone {
        panic!("the KPI was not dropped: {seen:?}\n{lines:#?}");
    }
    assert!(
        seen.iter().all(|v| v.is_none() || *v == Some(1000.0)),
        "an unknown KPI was served as another value: {seen:?}"
    );
    let logs = exporter.logs();
    assert!(
        logs.lines().any(
            |l| l.contains("permission denied for table webhook_deliveries")
                && l.contains("grant the monitoring role SELECT")
        ),
        "no log line names the table and the grant:\n{logs}"
    );

    cluster.psql(
        &db,
        &format!("GRANT SELECT ON public.webhook_deliveries TO {ROLE}"),
    );
    exporter.wait_for(Duration::from_secs(20), "the KPI back after GRANT", |m| {
        attempts(m) == Some(1000.0)
            && m.of(
                T,
                "pgkpi_collector_skipped",
                &[("collector", "webhooks"), ("reason", "permission")],
            ) != Some(1.0)
    });
}
