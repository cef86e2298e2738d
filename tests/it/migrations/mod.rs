//! The migrations in `migrations/` against the fixtures in `fixtures/`, and the workload
//! generator `pgkpi-load` against both schemas (issue 4's acceptance tests).
//!
//! * One database is built once for the plan checks, as the contract in
//!   `fixtures/query_patterns.toml` describes: baseline, seed at scale 1, EXPLAIN every
//!   pattern, migrations 001..008 (timed), all of them again, seed again, EXPLAIN again.
//! * The queue and partition tests clone a template database that holds the baseline with all
//!   migrations applied and no data.
//! * The workload test runs the real `pgkpi-load` binary for 30 s against a baseline-only and
//!   a migrated database at the same time.
//!
//! Everything happens in databases of their own on the shared cluster. The migrations create
//! and alter the cluster-wide role `pgkpi`: every area applies them through
//! `support::schema::apply_migration`, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::support::schema::apply_migration;
use crate::support::{heavy_load, repo_path, schema, Cluster};

/// migrations/0*.sql in file-name order (the order they must be applied in): all eight.
fn migration_files() -> Vec<PathBuf> {
    let files = schema::migration_files();
    assert_eq!(files.len(), 8, "expected migrations 001..008: {files:?}");
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[derive(Deserialize)]
struct PatternFile {
    pattern: Vec<Pattern>,
}

#[derive(Deserialize, Debug)]
struct Pattern {
    name: String,
    sql: String,
    index: String,
    table: String,
    migration: String,
    in_baseline: bool,
}

fn patterns() -> Vec<Pattern> {
    let text = std::fs::read_to_string(repo_path("fixtures/query_patterns.toml")).unwrap();
    let file: PatternFile = toml::from_str(&text).expect("fixtures/query_patterns.toml");
    assert_eq!(
        file.pattern.len(),
        26,
        "the document names 26 query patterns"
    );
    file.pattern
}

/// Names of the indexes a JSON plan scans (Index Scan, Index Only Scan, Bitmap Index Scan).
fn plan_indexes(plan: &serde_json::Value, out: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(name)) = map.get("Index Name") {
                out.push(name.clone());
            }
            map.values().for_each(|v| plan_indexes(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| plan_indexes(v, out)),
        _ => {}
    }
}

/// EXPLAIN (no ANALYZE: several patterns are UPDATE or FOR UPDATE) → indexes used, plus the
/// plan's text form for failure messages.
fn explain(cluster: &Cluster, db: &str, sql: &str) -> (Vec<String>, String) {
    let json = cluster.psql(db, &format!("EXPLAIN (FORMAT JSON) {sql}"));
    let plan: serde_json::Value = serde_json::from_str(&json).expect("EXPLAIN JSON");
    let mut used = Vec::new();
    plan_indexes(&plan, &mut used);
    let text = cluster.psql(db, &format!("EXPLAIN {sql}"));
    (used, text)
}

/// Everything a re-run could change: indexes (with definition and validity), tables, functions
/// (with body), triggers, grants on the audited tables and pgkpi's role settings.
const FINGERPRINT: &str = "
SELECT md5(string_agg(x, E'\\n' ORDER BY x)) FROM (
  SELECT format('index %s %s valid=%s oid=%s', i.indexrelid::regclass,
                pg_get_indexdef(i.indexrelid), i.indisvalid, i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration')
  UNION ALL
  SELECT format('rel %s %s oid=%s acl=%s', c.oid::regclass, c.relkind, c.oid, c.relacl)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration') AND c.relkind IN ('r', 'p', 'S', 'v')
  UNION ALL
  SELECT format('function %s oid=%s %s', p.oid::regprocedure, p.oid, md5(p.prosrc))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('core', 'chat', 'public', 'integration')
  UNION ALL
  SELECT format('trigger %s %s oid=%s', t.tgrelid::regclass, t.tgname, t.oid)
  FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('role %s %s', r.rolname, r.rolconfig) FROM pg_roles r WHERE r.rolname = 'pgkpi'
) s(x)";

/// The plan-check database and what was measured while building it.
struct Loaded {
    db: String,
    /// Per pattern (in_baseline only): indexes the plan used before the migrations, and the
    /// plan text.
    before: BTreeMap<String, (Vec<String>, String)>,
    /// Patterns whose table existed before the migrations (must equal in_baseline).
    table_existed_before: BTreeMap<String, bool>,
    first_apply: Vec<(String, Duration)>,
    second_apply: Vec<(String, Duration)>,
    fingerprint_after_first: String,
    fingerprint_after_second: String,
    seed_runs: (Duration, Duration),
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let cluster = Cluster::shared();
        let db = cluster.create_database("plans");
        cluster.psql_file(&db, repo_path("fixtures/baseline.sql"), &[]);
        let t = Instant::now();
        cluster.psql_file(&db, repo_path("fixtures/seed.sql"), &[("scale", "1")]);
        let seed1 = t.elapsed();

        let mut before = BTreeMap::new();
        let mut table_existed_before = BTreeMap::new();
        for p in patterns() {
            let exists = cluster.psql(
                &db,
                &format!("SELECT to_regclass('{}') IS NOT NULL", p.table),
            );
            table_existed_before.insert(p.name.clone(), exists == "t");
            if p.in_baseline {
                before.insert(p.name.clone(), explain(cluster, &db, &p.sql));
            }
        }

        let mut first_apply = Vec::new();
        for file in migration_files() {
            let took = apply_migration(cluster, &db, &file);
            first_apply.push((file_name(&file), took));
        }
        let fingerprint_after_first = cluster.psql(&db, FINGERPRINT);
        let mut second_apply = Vec::new();
        for file in migration_files() {
            let took = apply_migration(cluster, &db, &file);
            second_apply.push((file_name(&file), took));
        }
        let fingerprint_after_second = cluster.psql(&db, FINGERPRINT);

        let t = Instant::now();
        cluster.psql_file(&db, repo_path("fixtures/seed.sql"), &[("scale", "1")]);
        let seed2 = t.elapsed();
        Loaded {
            db,
            before,
            table_existed_before,
            first_apply,
            second_apply,
            fingerprint_after_first,
            fingerprint_after_second,
            seed_runs: (seed1, seed2),
        }
    })
}

#[test]
fn migrations_apply_on_the_loaded_baseline_then_again_without_error() {
    let cluster = Cluster::shared();
    let loaded = loaded();
    // Every file ran twice with ON_ERROR_STOP (psql_file panics otherwise); print the timings
    // for the record (cargo test -- --nocapture).
    eprintln!(
        "seed scale 1: first run {:.2?}, second run {:.2?}",
        loaded.seed_runs.0, loaded.seed_runs.1
    );
    for ((file, first), (_, second)) in loaded.first_apply.iter().zip(&loaded.second_apply) {
        eprintln!("{file:<36} first apply {first:>9.2?}   re-apply {second:>9.2?}");
    }
    assert_eq!(
        loaded.fingerprint_after_first, loaded.fingerprint_after_second,
        "re-applying the migrations changed the catalog (indexes, tables, functions, triggers, \
         grants or role settings)"
    );
    let invalid = cluster.psql(
        &loaded.db,
        "SELECT coalesce(string_agg(indexrelid::regclass::text, ', '), '') \
         FROM pg_index WHERE NOT indisvalid",
    );
    assert_eq!(invalid, "", "invalid indexes after the migrations");
    // Every index the document names exists, on its table, and is valid.
    for p in patterns() {
        let schema = p.table.split('.').next().unwrap();
        let row = cluster.psql(
            &loaded.db,
            &format!(
                "SELECT i.indrelid = '{}'::regclass, i.indisvalid FROM pg_index i \
                 WHERE i.indexrelid = to_regclass('{schema}.{}')",
                p.table, p.index
            ),
        );
        assert_eq!(
            row, "t|t",
            "pattern {}: index {schema}.{} (migration {}) missing, invalid or on another table",
            p.name, p.index, p.migration
        );
    }
    // The same holds on an empty baseline (the template the queue tests clone).
    let template = migrated_template();
    let invalid = cluster.psql(
        &format!("{template}_probe"),
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid",
    );
    assert_eq!(invalid, "0");
}

#[test]
fn query_patterns_use_their_index_after_the_migrations_and_not_before() {
    let cluster = Cluster::shared();
    let loaded = loaded();
    let mut failures = Vec::new();
    for p in patterns() {
        assert_eq!(
            loaded.table_existed_before[&p.name],
            p.in_baseline,
            "pattern {}: in_baseline says {} but table {} {} before the migrations",
            p.name,
            p.in_baseline,
            p.table,
            if p.in_baseline {
                "did not exist"
            } else {
                "existed"
            }
        );
        if let Some((used, text)) = loaded.before.get(&p.name) {
            if used.contains(&p.index) {
                failures.push(format!(
                    "{}: uses {} BEFORE the migrations:\n{text}",
                    p.name, p.index
                ));
            }
        }
        let (used, text) = explain(cluster, &loaded.db, &p.sql);
        if !used.contains(&p.index) {
            failures.push(format!(
                "{}: expected {} after the migrations, plan uses {used:?}:\n{text}",
                p.name, p.index
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ queue --

/// A database with the baseline and all migrations applied and no rows, used only as a
/// template (connections disabled, so CREATE DATABASE ... TEMPLATE never finds it busy).
fn migrated_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let cluster = Cluster::shared();
        let db = schema::app_database(cluster, "migrated_template");
        // A clone to look at (the template itself refuses connections from here on).
        cluster.psql(
            "postgres",
            &format!("CREATE DATABASE {db}_probe TEMPLATE {db}"),
        );
        cluster.psql(
            "postgres",
            &format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"),
        );
        db
    })
}

/// A fresh empty migrated database of the test's own.
fn migrated_db(prefix: &str) -> String {
    static CLONES: AtomicUsize = AtomicUsize::new(0);
    let cluster = Cluster::shared();
    let template = migrated_template();
    let name = format!("{prefix}_clone_{}", CLONES.fetch_add(1, Ordering::SeqCst));
    cluster.psql(
        "postgres",
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    );
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_eight_consumers_process_ten_thousand_items_exactly_once() {
    let cluster = Cluster::shared();
    let db = migrated_db("queue");
    cluster.psql(
        &db,
        "INSERT INTO core.notifications (user_id, type, title) \
           SELECT g, 'test', 'item ' || g FROM generate_series(1, 10000) g; \
         INSERT INTO core.notification_queue (notification_id, priority_score) \
           SELECT id, (id % 7)::int FROM core.notifications",
    );
    let mut consumers = Vec::new();
    for n in 0..8 {
        let client = cluster.client(&db).await;
        consumers.push(tokio::spawn(async move {
            let worker = format!("consumer-{n}");
            let mut completed = Vec::new();
            loop {
                let rows = client
                    .query(
                        "SELECT id FROM core.claim_notifications($1, 10)",
                        &[&worker],
                    )
                    .await
                    .expect("claim");
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    let id: i64 = row.get(0);
                    let done: bool = client
                        .query_one("SELECT core.complete_notification($1, $2)", &[&id, &worker])
                        .await
                        .expect("complete")
                        .get(0);
                    assert!(done, "{worker} claimed {id} but could not complete it");
                    completed.push(id);
                }
            }
            completed
        }));
    }
    let mut all = Vec::new();
    let mut busy_workers = 0;
    for c in consumers {
        let completed = c.await.expect("consumer task");
        busy_workers += usize::from(!completed.is_empty());
        all.extend(completed);
    }
    let total = all.len();
    let unique: BTreeSet<i64> = all.into_iter().collect();
    assert_eq!(total, unique.len(), "some item was processed twice");
    let in_db: BTreeSet<i64> = cluster
        .psql(&db, "SELECT id FROM core.notification_queue ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(in_db.len(), 10_000);
    assert_eq!(unique, in_db, "some item was never processed");
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT status, count(*), count(DISTINCT lock_owner), bool_or(processing) \
             FROM core.notification_queue GROUP BY status"
        ),
        "done|10000|0|f"
    );
    assert!(
        busy_workers >= 2,
        "only {busy_workers} consumer(s) got work: the claims did not run concurrently"
    );
}

#[test]
fn queue_expired_lease_is_reclaimed() {
    let cluster = Cluster::shared();
    let db = migrated_db("lease");
    let id = cluster.psql(
        &db,
        "WITH n AS (INSERT INTO core.notifications (user_id, type, title) \
                    VALUES (1, 'test', 'lease') RETURNING id) \
         , q AS (INSERT INTO core.notification_queue (notification_id) SELECT id FROM n RETURNING id) \
         SELECT id FROM q",
    );
    let claimed = cluster.psql(
        &db,
        "SELECT id FROM core.claim_notifications('crashed', 1, interval '2 seconds')",
    );
    assert_eq!(claimed, id);
    // The worker dies here. While the lease runs, nobody else gets the item.
    assert_eq!(
        cluster.psql(&db, "SELECT core.reclaim_expired_leases()"),
        "0"
    );
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT count(*) FROM core.claim_notifications('other', 1)"
        ),
        "0"
    );
    let wait = cluster.psql(
        &db,
        &format!(
            "SELECT greatest(0, extract(epoch FROM lease_expires_at - now())) \
             FROM core.notification_queue WHERE id = {id}"
        ),
    );
    std::thread::sleep(Duration::from_secs_f64(wait.parse::<f64>().unwrap() + 0.2));
    assert_eq!(
        cluster.psql(&db, "SELECT core.reclaim_expired_leases()"),
        "1"
    );
    assert_eq!(
        cluster.psql(
            &db,
            &format!(
                "SELECT status, retry_count, processing, lock_owner IS NULL, \
                        last_error LIKE 'lease expired: held by crashed since %' \
                 FROM core.notification_queue WHERE id = {id}"
            )
        ),
        "ready|1|f|t|t"
    );
    // The dead worker's late completion is refused; a live one takes the item over.
    assert_eq!(
        cluster.psql(
            &db,
            &format!("SELECT core.complete_notification({id}, 'crashed')")
        ),
        "f"
    );
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT id FROM core.claim_notifications('survivor', 1)"
        ),
        id
    );
    assert_eq!(
        cluster.psql(
            &db,
            &format!("SELECT core.complete_notification({id}, 'survivor')")
        ),
        "t"
    );
}

#[test]
fn queue_failing_item_backs_off_and_goes_dead_after_max_attempts() {
    let cluster = Cluster::shared();
    let db = migrated_db("backoff");
    // The documented schedule: 30 s, 1 min, 2 min, ... capped at 1 h.
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT core.notification_backoff(1), core.notification_backoff(2), \
                    core.notification_backoff(3), core.notification_backoff(20)"
        ),
        "00:00:30|00:01:00|00:02:00|01:00:00"
    );
    let id = cluster.psql(
        &db,
        "WITH n AS (INSERT INTO core.notifications (user_id, type, title) \
                    VALUES (1, 'test', 'flaky') RETURNING id) \
         , q AS (INSERT INTO core.notification_queue (notification_id, max_attempts) \
                 SELECT id, 3 FROM n RETURNING id) \
         SELECT id FROM q",
    );
    for attempt in 1..=3 {
        if attempt > 1 {
            // Backed off: not claimable until available_at. Then let the time pass.
            assert_eq!(
                cluster.psql(&db, "SELECT count(*) FROM core.claim_notifications('w', 1)"),
                "0",
                "attempt {attempt}: claimed before its backoff ended"
            );
            cluster.psql(
                &db,
                &format!("UPDATE core.notification_queue SET available_at = now() WHERE id = {id}"),
            );
        }
        assert_eq!(
            cluster.psql(&db, "SELECT id FROM core.claim_notifications('w', 1)"),
            id,
            "attempt {attempt}"
        );
        let status = cluster.psql(
            &db,
            &format!(
                "SELECT core.fail_notification({id}, 'w', 'boom {attempt}', \
                                               interval '1 second', interval '1 hour')"
            ),
        );
        let row = cluster.psql(
            &db,
            &format!(
                "SELECT retry_count, extract(epoch FROM available_at - updated_at), \
                        completed_at IS NOT NULL, last_error, lock_owner IS NULL \
                 FROM core.notification_queue WHERE id = {id}"
            ),
        );
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[0], attempt.to_string(), "retry_count: {row}");
        assert_eq!(fields[3], format!("boom {attempt}"), "{row}");
        assert_eq!(fields[4], "t", "lease not cleared: {row}");
        if attempt < 3 {
            assert_eq!(status, "ready", "attempt {attempt}");
            // base * 2^(n-1), plus up to 10% jitter.
            let delay: f64 = fields[1].parse().unwrap();
            let base = 2f64.powi(attempt - 1);
            assert!(
                (base..=base * 1.1 + 1e-6).contains(&delay),
                "attempt {attempt}: backoff {delay}s, expected {base}..{}s",
                base * 1.1
            );
            assert_eq!(fields[2], "f", "{row}");
        } else {
            assert_eq!(status, "dead", "attempt {attempt}");
            assert_eq!(fields[2], "t", "dead item without completed_at: {row}");
        }
    }
    // Dead stays dead: never claimed again, and a late fail is refused.
    cluster.psql(
        &db,
        &format!("UPDATE core.notification_queue SET available_at = now() - interval '1 day' WHERE id = {id}"),
    );
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT count(*) FROM core.claim_notifications('w', 10)"
        ),
        "0"
    );
    assert_eq!(
        cluster.psql(
            &db,
            &format!("SELECT core.fail_notification({id}, 'w', 'late') IS NULL")
        ),
        "t"
    );
}

// -------------------------------------------------------------- partitions --

#[test]
fn partition_maintenance_is_idempotent_and_retention_keeps_the_aggregate() {
    let cluster = Cluster::shared();
    let db = migrated_db("parts");
    let partitions = || {
        cluster.psql(
            &db,
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'core.analytics_events'::regclass \
               AND c.relname <> 'analytics_events_default'",
        )
    };
    // Month starts (UTC) from 5 months back to 3 ahead.
    let months = "generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '5 months', \
                                  date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months', \
                                  interval '1 month') m";
    let expected_all = cluster.psql(
        &db,
        &format!("SELECT string_agg('analytics_events_p' || to_char(m, 'YYYY_MM'), ',' ORDER BY m) FROM {months}"),
    );
    // The migration made the current month and 3 ahead; asking for 5 past months adds 5.
    let created = cluster.psql(
        &db,
        "SELECT count(*) FROM core.create_future_partitions('core.analytics_events', 3, 5) r \
         WHERE r LIKE 'created %'",
    );
    assert_eq!(created, "5");
    assert_eq!(partitions(), expected_all);
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT count(*) FROM core.create_future_partitions('core.analytics_events', 3, 5)"
        ),
        "0",
        "a second call must create nothing"
    );
    assert_eq!(partitions(), expected_all);

    // One row per hour for 140 days (inside the 5 past months whatever today's date).
    cluster.psql(
        &db,
        "INSERT INTO core.analytics_events (occurred_at, event_type, user_id) \
         SELECT now() - g * interval '1 hour', (ARRAY['page_view', 'search', 'login'])[1 + g % 3], g % 50 \
         FROM generate_series(0, 24 * 140 - 1) g",
    );
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM core.analytics_events_default"),
        "0"
    );
    // An aggregate older than the 12-month aggregate retention.
    cluster.psql(
        &db,
        "INSERT INTO core.analytics_events_monthly (month, event_type, events, unique_users) \
         VALUES (date_trunc('month', now() - interval '14 months')::date, 'ancient', 1, 1)",
    );
    let per_month = "SELECT to_char(date_trunc('month', occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS month, \
                            event_type, count(*) AS events, count(DISTINCT user_id) AS users \
                     FROM core.analytics_events GROUP BY 1, 2";
    // Expected: partitions whose upper bound is at or before now() - 90 days.
    let dropped_months = format!(
        "SELECT m FROM {months} WHERE (m + interval '1 month') AT TIME ZONE 'UTC' <= now() - interval '90 days'"
    );
    let expected_dropped = cluster.psql(
        &db,
        &format!(
            "SELECT string_agg('analytics_events_p' || to_char(m, 'YYYY_MM'), ',' ORDER BY m) \
             FROM ({dropped_months}) d"
        ),
    );
    let n_dropped = expected_dropped
        .split(',')
        .filter(|s| !s.is_empty())
        .count();
    assert!(
        n_dropped >= 1,
        "140 days of rows must leave a month to drop"
    );
    let expected_aggregate = cluster.psql(
        &db,
        &format!(
            "SELECT string_agg(format('%s/%s/%s/%s', month, event_type, events, users), ',' \
                               ORDER BY month, event_type) \
             FROM ({per_month}) p \
             WHERE month::timestamp IN ({dropped_months})"
        ),
    );
    let expected_remaining = cluster.psql(
        &db,
        &format!(
            "SELECT sum(events) FROM ({per_month}) p WHERE month::timestamp NOT IN ({dropped_months})"
        ),
    );

    let report = cluster.psql(
        &db,
        "SELECT * FROM core.apply_retention('core.analytics_events', '90 days', '12 months')",
    );
    let dropped_lines = report.lines().filter(|l| l.starts_with("dropped ")).count();
    assert_eq!(dropped_lines, n_dropped, "retention report:\n{report}");
    assert!(
        report.contains("deleted 1 aggregate rows"),
        "the 14-month-old aggregate must go:\n{report}"
    );
    let remaining: BTreeSet<String> = expected_all
        .split(',')
        .filter(|p| !expected_dropped.split(',').any(|d| d == *p))
        .map(String::from)
        .collect();
    let after: BTreeSet<String> = partitions().split(',').map(String::from).collect();
    assert_eq!(after, remaining, "retention dropped the wrong partitions");
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM core.analytics_events"),
        expected_remaining,
        "rows newer than the policy must stay"
    );
    let aggregate = || {
        cluster.psql(
            &db,
            "SELECT string_agg(format('%s/%s/%s/%s', to_char(month, 'YYYY-MM-DD'), event_type, \
                                      events, unique_users), ',' ORDER BY month, event_type) \
             FROM core.analytics_events_monthly",
        )
    };
    assert_eq!(
        aggregate(),
        expected_aggregate,
        "the aggregate must hold exactly the dropped months' counts"
    );

    // Idempotent: a second run drops nothing and leaves the aggregate alone.
    let again = cluster.psql(
        &db,
        "SELECT * FROM core.apply_retention('core.analytics_events', '90 days', '12 months')",
    );
    assert_eq!(again, "", "second retention run:\n{again}");
    assert_eq!(
        partitions()
            .split(',')
            .map(String::from)
            .collect::<BTreeSet<_>>(),
        remaining
    );
    assert_eq!(aggregate(), expected_aggregate);
}

// ----------------------------------------------------------------- workload --

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
