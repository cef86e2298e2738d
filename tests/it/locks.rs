//! Locks and waits against a real PostgreSQL: the blocking tree pgkpi exports must match what
//! `pg_blocking_pids()` shows, gauges clear when the lock is released, the activity sampler
//! accumulates lock-wait seconds and keeps sampling while the main connection is stuck, and
//! deadlocks are counted.
//!
//! The scenarios that assert exact cluster-wide counts run on a private cluster: the counts are
//! cluster-wide, so other tests' sessions on the shared cluster would show up in them. So does
//! the one that freezes a backend. The deadlock counter is per database: that scenario runs in
//! a database of its own on the shared cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{retry_async, Cluster, Exporter, ExporterConfig, Frozen, Metrics};
use tokio::task::JoinHandle;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::Client;

/// The locks collector every second, with the exporter's sessions named `pgkpi-<target>`.
fn locks_config(target: &str, dsn: &str) -> ExporterConfig {
    ExporterConfig::new(target, dsn)
        .interval("locks", "1s")
        .session("application_name", format!("pgkpi-{target}"))
}

/// A database of the test's own with the table the scenarios lock rows of: `t` with rows 1
/// and 2.
fn two_rows(cluster: &Cluster, prefix: &str) -> String {
    let db = cluster.create_database(prefix);
    cluster.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)",
    );
    db
}

/// The one value a query returns.
async fn scalar<T: for<'a> FromSql<'a>>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    client.query_one(sql, params).await.unwrap().get(0)
}

async fn pid_of(client: &Client) -> i32 {
    scalar(client, "SELECT pg_backend_pid()", &[]).await
}

/// A session that opened a transaction and updated row `row` of `t`, so holds its lock; and
/// its pid.
async fn holding(cluster: &Cluster, db: &str, row: i32) -> (Client, i32) {
    let client = cluster.client(db).await;
    let pid = pid_of(&client).await;
    client
        .batch_execute(&format!("BEGIN; UPDATE t SET v = v + 1 WHERE id = {row}"))
        .await
        .unwrap();
    (client, pid)
}

/// `client` updates row `row` of `t` in a task of its own; returns the task and the session's
/// pid once `observer` (a session outside any transaction, whose view of pg_stat_activity is
/// fresh at each statement) sees it wait for the lock.
async fn queued(
    observer: &Client,
    client: Arc<Client>,
    row: i32,
) -> (JoinHandle<Result<u64, tokio_postgres::Error>>, i32) {
    let pid = pid_of(&client).await;
    let task = tokio::spawn(async move {
        client
            .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&row])
            .await
    });
    until_waiting(observer, pid).await;
    (task, pid)
}

/// Waits until the session `pid` waits on a heavyweight lock.
async fn until_waiting(observer: &Client, pid: i32) {
    retry_async(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let waiting: i64 = scalar(
                observer,
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await;
            if waiting == 1 {
                Ok(())
            } else {
                Err(())
            }
        },
    )
    .await
    .unwrap_or_else(|()| panic!("session {pid} never started to wait"));
}

/// What `pg_blocking_pids()` shows for the sessions of `db` right now, computed in SQL (an
/// implementation independent of pgkpi's): blocked sessions, the roots with their direct and
/// transitive blocked counts, and the longest chain.
#[derive(Debug, PartialEq)]
struct Expected {
    blocked: i64,
    roots: BTreeMap<i32, (i64, i64)>,
    max_depth: i32,
    waiting: i64,
}

async fn expected_tree(observer: &Client, db: &str) -> Expected {
    let edges = "edges AS ( \
        SELECT pid AS waiter, unnest(pg_blocking_pids(pid)) AS blocker FROM pg_stat_activity \
        WHERE datname = $1 AND application_name NOT LIKE 'pgkpi%')";
    // Every path from a waiter up its chain of blockers.
    let paths = "paths(start, node, depth) AS ( \
        SELECT waiter, blocker, 1 FROM edges \
        UNION ALL \
        SELECT p.start, e.blocker, p.depth + 1 FROM paths p JOIN edges e ON e.waiter = p.node \
        WHERE p.depth < 50)";
    let blocked: i64 = scalar(
        observer,
        &format!("WITH {edges} SELECT count(DISTINCT waiter) FROM edges"),
        &[&db],
    )
    .await;
    let rows = observer
        .query(
            &format!(
                "WITH RECURSIVE {edges}, {paths}, \
                 roots AS (SELECT DISTINCT blocker AS pid FROM edges \
                           WHERE blocker NOT IN (SELECT waiter FROM edges)) \
                 SELECT r.pid, \
                        (SELECT count(*) FROM edges e WHERE e.blocker = r.pid), \
                        (SELECT count(DISTINCT start) FROM paths p WHERE p.node = r.pid) \
                 FROM roots r"
            ),
            &[&db],
        )
        .await
        .unwrap();
    let max_depth: i32 = scalar(
        observer,
        &format!(
            "WITH RECURSIVE {edges}, {paths} \
                 SELECT coalesce(max(depth), 0) FROM paths"
        ),
        &[&db],
    )
    .await;
    let waiting: i64 = scalar(
        observer,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE NOT l.granted AND a.datname = $1 AND a.application_name NOT LIKE 'pgkpi%'",
        &[&db],
    )
    .await;
    Expected {
        blocked,
        roots: rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect(),
        max_depth,
        waiting,
    }
}

fn gauge(m: &Metrics, name: &str, target: &str) -> f64 {
    m.value(name, &[("target", target)])
        .unwrap_or_else(|| panic!("{name} missing:\n{}", m.text))
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_tree_matches_pg_blocking_pids_and_clears_on_release() {
    let cluster = Cluster::start();
    let db = two_rows(&cluster, "tree");
    let name = "tree";
    let exporter = Exporter::start(&locks_config(name, &cluster.dsn(&db)).build());
    exporter.wait_for(Duration::from_secs(10), "first runs", |m| {
        m.runs(name, "locks") >= 1.0 && m.runs(name, "activity_sampler") >= 2.0
    });
    let lock_wait = |m: &Metrics| {
        m.value(
            "pg_lock_wait_seconds_total",
            &[("target", name), ("datname", &db)],
        )
        .unwrap_or(0.0)
    };
    let lock_wait_before = lock_wait(&exporter.metrics());

    let observer = cluster.client(&db).await;
    // The root blocker: updates row 1 and then sits idle in its transaction.
    let (holder, holder_pid) = holding(&cluster, &db, 1).await;
    // W1 holds row 2, then queues for row 1; W2 and W3 queue for row 1 too; W4 waits for row 2.
    let w1 = Arc::new(holding(&cluster, &db, 2).await.0);
    let mut waiters = Vec::new();
    let mut pids = Vec::new();
    for (client, row) in [
        (w1.clone(), 1),
        (Arc::new(cluster.client(&db).await), 1),
        (Arc::new(cluster.client(&db).await), 1),
        (Arc::new(cluster.client(&db).await), 2),
    ] {
        let (task, pid) = queued(&observer, client, row).await;
        waiters.push(task);
        pids.push(pid);
    }

    let expected = expected_tree(&observer, &db).await;
    assert_eq!(expected.blocked, 4, "scenario: {expected:?}");
    assert_eq!(
        expected.roots.keys().copied().collect::<Vec<_>>(),
        vec![holder_pid],
        "scenario: {expected:?}"
    );
    let m = exporter.wait_more_runs(name, "locks", 2.0);
    // The scenario is static: the tree at the scrape is the one computed before and after.
    let db_oldest_wait: f64 = scalar(
        &observer,
        "SELECT extract(epoch FROM now() - min(waitstart))::float8 FROM pg_locks l \
             JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.datname = $1",
        &[&db],
    )
    .await;
    let holder_xact_age: f64 = scalar(&observer, "SELECT extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity WHERE pid = $1", &[&holder_pid]).await;
    assert_eq!(expected_tree(&observer, &db).await, expected);

    assert_eq!(
        gauge(&m, "pg_blocking_blocked_sessions", name),
        expected.blocked as f64
    );
    assert_eq!(
        gauge(&m, "pg_blocking_root_blockers", name),
        expected.roots.len() as f64
    );
    assert_eq!(
        gauge(&m, "pg_blocking_max_depth", name),
        expected.max_depth as f64,
        "the row queue runs through the tuple lock: {expected:?}"
    );
    assert!(expected.max_depth >= 2, "{expected:?}");
    assert_eq!(
        gauge(&m, "pg_lock_waiting_sessions", name),
        expected.waiting as f64
    );
    for (root, (direct, total)) in &expected.roots {
        let pid = root.to_string();
        for (scope, count) in [("direct", direct), ("total", total)] {
            assert_eq!(
                m.value(
                    "pg_blocking_root_blocked_sessions",
                    &[("target", name), ("blocker_pid", &pid), ("scope", scope)]
                ),
                Some(*count as f64),
                "root {pid} scope {scope}:\n{}",
                m.text
            );
        }
    }
    // Collected at most one poll (1s) plus the scrape before the database was asked.
    let oldest = gauge(&m, "pg_lock_oldest_wait_seconds", name);
    assert!(
        oldest <= db_oldest_wait + 0.05 && oldest >= db_oldest_wait - 2.0,
        "exported oldest wait {oldest}s, database says {db_oldest_wait}s"
    );

    // The root blocker is idle in transaction, and its transaction age is exported.
    let holder_label = holder_pid.to_string();
    let info = m.find(
        "pg_blocking_root_info",
        &[("target", name), ("blocker_pid", &holder_label)],
    );
    assert_eq!(info.len(), 1, "{}", m.text);
    assert_eq!(info[0].labels["state"], "idle in transaction");
    assert_eq!(info[0].labels["datname"], db);
    assert_eq!(info[0].labels["usename"], "postgres");
    let xact_age = m
        .value(
            "pg_blocking_root_xact_age_seconds",
            &[("target", name), ("blocker_pid", &holder_label)],
        )
        .unwrap();
    assert!(
        xact_age <= holder_xact_age + 0.05 && xact_age >= holder_xact_age - 2.0,
        "exported xact age {xact_age}s, database says {holder_xact_age}s"
    );

    // The debug view shows the same tree, without query text by default.
    let view: serde_json::Value =
        serde_json::from_slice(&exporter.get("/debug/locks").body).unwrap();
    let tree = &view["targets"][name];
    assert_eq!(tree["roots"][0]["pid"], holder_pid, "{view}");
    assert_eq!(tree["roots"][0]["state"], "idle in transaction");
    assert!(tree["roots"][0]["blocking"]
        .as_array()
        .unwrap()
        .iter()
        .any(|child| child["pid"] == pids[0]));
    assert_eq!(tree["sessions"].as_array().unwrap().len(), 5, "{view}");
    assert!(!view.to_string().contains("UPDATE t"), "{view}");

    // Hold long enough that the lock-wait seconds are well above the sampling error.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let waited: f64 = scalar(
        &observer,
        "SELECT sum(extract(epoch FROM now() - waitstart))::float8 FROM pg_locks l \
             JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.datname = $1",
        &[&db],
    )
    .await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    let mut tasks = waiters.into_iter();
    tasks.next().unwrap().await.unwrap().unwrap();
    w1.batch_execute("COMMIT").await.unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let released = Instant::now();
    let m = exporter.wait_for(Duration::from_secs(5), "every gauge back to 0", |m| {
        [
            "pg_blocking_blocked_sessions",
            "pg_blocking_root_blockers",
            "pg_blocking_max_depth",
            "pg_lock_waiting_sessions",
            "pg_lock_oldest_wait_seconds",
        ]
        .iter()
        .all(|g| m.value(g, &[("target", name)]) == Some(0.0))
    });
    assert!(
        released.elapsed() < Duration::from_millis(3500),
        "gauges cleared {:?} after the release; the locks interval is 1s (3 runs at most)",
        released.elapsed()
    );
    assert!(
        m.find("pg_blocking_root_info", &[]).is_empty(),
        "{}",
        m.text
    );
    assert!(m
        .find(
            "pg_locks_count",
            &[("target", name), ("datname", &db), ("granted", "false")]
        )
        .is_empty());

    let m = exporter.wait_more_runs(name, "activity_sampler", 2.0);
    let grew = lock_wait(&m) - lock_wait_before;
    assert!(
        (grew - waited).abs() <= 0.25 * waited,
        "lock-wait seconds grew by {grew}, the sessions waited {waited}s in total"
    );
    // The waits were sampled as active sessions waiting on Lock events.
    let sampled_lock_waits: f64 = m
        .find(
            "pg_active_sessions_sampled_total",
            &[
                ("target", name),
                ("datname", &db),
                ("wait_event_type", "Lock"),
            ],
        )
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(sampled_lock_waits >= 4.0, "{}", m.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlock_increments_the_deadlock_counter() {
    let cluster = Cluster::shared();
    let db = two_rows(cluster, "deadlock");
    let name = "deadlock";
    let config = ExporterConfig::new(name, &cluster.dsn(&db)).interval("database", "1s");
    let exporter = Exporter::start(&config.build());
    let counter = |m: &Metrics| {
        m.value(
            "pg_stat_database_deadlocks_total",
            &[("target", name), ("datname", &db)],
        )
    };
    let before = counter(
        &exporter.wait_for(Duration::from_secs(10), "deadlocks", |m| {
            counter(m).is_some()
        }),
    )
    .unwrap();

    // A holds row 1 and queues for row 2, which B holds; B then asks for row 1.
    let observer = cluster.client("postgres").await;
    let a = Arc::new(holding(cluster, &db, 1).await.0);
    let (b, _) = holding(cluster, &db, 2).await;
    let (first, _) = queued(&observer, a.clone(), 2).await;
    let second = b.execute("UPDATE t SET v = 2 WHERE id = 1", &[]).await;
    let first = first.await.unwrap();
    let victims = [&first, &second]
        .iter()
        .filter(|r| {
            r.as_ref().err().and_then(|e| e.code())
                == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
        })
        .count();
    assert_eq!(victims, 1, "{first:?} {second:?}");
    a.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();

    // The database counts it once its statistics are flushed; pgkpi must then agree.
    let (Ok(in_db) | Err(in_db)) = retry_async(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let n: i64 = scalar(
                &observer,
                "SELECT deadlocks FROM pg_stat_database WHERE datname = $1",
                &[&db],
            )
            .await;
            if n as f64 > before {
                Ok(n as f64)
            } else {
                Err(n as f64)
            }
        },
    )
    .await;
    assert_eq!(in_db, before + 1.0);
    exporter.wait_for(Duration::from_secs(10), "deadlock counted", |m| {
        counter(m) == Some(in_db)
    });
}

#[test]
fn sampler_keeps_sampling_while_the_main_connection_is_stuck() {
    // Private cluster: the frozen backend may hold shared-memory locks others would wait on.
    let cluster = Cluster::start();
    let name = "stuck";
    let config = locks_config(name, &cluster.dsn("postgres"))
        // Long timeouts: the main connection stays stuck instead of being replaced.
        .session("statement_timeout", "60s");
    let exporter = Exporter::start(&config.build());
    exporter.wait_for(Duration::from_secs(10), "both lanes running", |m| {
        m.runs(name, "locks") >= 1.0 && m.runs(name, "activity_sampler") >= 2.0
    });
    // The sampler's connection is the one whose last query is the sampler's.
    let main_pid: i32 = cluster
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgkpi-stuck' \
             AND query NOT LIKE '%pgkpi activity_sampler%'",
        )
        .parse()
        .expect("exactly one main connection");
    let frozen = Frozen::stop(main_pid);
    std::thread::sleep(Duration::from_millis(1500)); // main-lane runs are now stuck in flight
    let before = exporter.metrics();
    let window = Duration::from_secs(6);
    std::thread::sleep(window);
    let after = exporter.metrics();
    let main_runs = |m: &Metrics| m.runs(name, "locks") + m.runs(name, "server");
    assert_eq!(
        main_runs(&after),
        main_runs(&before),
        "the main lane should be stuck behind the frozen backend"
    );
    let samples = |m: &Metrics| gauge(m, "pg_activity_samples_total", name);
    let sampled = samples(&after) - samples(&before);
    assert!(
        sampled >= window.as_secs_f64() - 1.0,
        "the sampler took {sampled} samples in {window:?} while the main lane was stuck"
    );
    drop(frozen);
    exporter.wait_for(Duration::from_secs(15), "main lane back", |m| {
        main_runs(m) > main_runs(&after)
    });
}
