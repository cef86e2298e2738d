//! Locks and waits against a real PostgreSQL: the blocking tree pgkpi exports must match what
//! `pg_blocking_pids()` shows, gauges clear when the lock is released, the activity sampler
//! accumulates lock-wait seconds and keeps sampling while the main connection is stuck, and
//! deadlocks are counted.
//!
//! The scenarios that assert exact cluster-wide counts run on a private cluster: the counts are
//! cluster-wide, so other tests' sessions on the shared cluster would show up in them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{config_for, Cluster, Exporter, Metrics};
use tokio_postgres::Client;

const LOCKS_FAST: &str = "[collectors.locks]\ninterval = \"1s\"\n";

async fn pid_of(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the session `pid` waits on a heavyweight lock.
async fn until_waiting(observer: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {pid} never started to wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let blocked: i64 = observer
        .query_one(
            &format!("WITH {edges} SELECT count(DISTINCT waiter) FROM edges"),
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    let rows = observer
        .query(
            &format!(
                "WITH RECURSIVE {edges}, \
                 paths(start, node, depth) AS ( \
                   SELECT waiter, blocker, 1 FROM edges \
                   UNION ALL \
                   SELECT p.start, e.blocker, p.depth + 1 FROM paths p JOIN edges e ON e.waiter = p.node \
                   WHERE p.depth < 50), \
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
    let max_depth: i32 = observer
        .query_one(
            &format!(
                "WITH RECURSIVE {edges}, \
                 paths(start, node, depth) AS ( \
                   SELECT waiter, blocker, 1 FROM edges \
                   UNION ALL \
                   SELECT p.start, e.blocker, p.depth + 1 FROM paths p JOIN edges e ON e.waiter = p.node \
                   WHERE p.depth < 50) \
                 SELECT coalesce(max(depth), 0) FROM paths"
            ),
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    let waiting: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE NOT l.granted AND a.datname = $1 AND a.application_name NOT LIKE 'pgkpi%'",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
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

fn runs(m: &Metrics, target: &str, collector: &str) -> f64 {
    m.value(
        "pgkpi_collector_runs_total",
        &[("target", target), ("collector", collector)],
    )
    .unwrap_or(0.0)
}

/// Waits for `n` more completed runs of a collector, so that what is scraped next was
/// collected after the caller's scenario settled.
fn after_runs(exporter: &Exporter, target: &str, collector: &str, n: f64) -> Metrics {
    let start = runs(&exporter.metrics(), target, collector);
    exporter.wait_for(
        Duration::from_secs(15),
        &format!("{n} more runs of {collector}"),
        |m| runs(m, target, collector) >= start + n,
    )
}

fn gauge(m: &Metrics, name: &str, target: &str) -> f64 {
    m.value(name, &[("target", target)])
        .unwrap_or_else(|| panic!("{name} missing:\n{}", m.text))
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_tree_matches_pg_blocking_pids_and_clears_on_release() {
    let cluster = Cluster::start();
    let db = cluster.create_database("tree");
    cluster.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)",
    );
    let name = "tree";
    let exporter = Exporter::start(&config_for(
        name,
        &cluster.dsn(&db),
        &format!("{LOCKS_FAST}[session]\napplication_name = \"pgkpi-tree\"\n"),
    ));
    exporter.wait_for(Duration::from_secs(10), "first runs", |m| {
        runs(m, name, "locks") >= 1.0 && runs(m, name, "activity_sampler") >= 2.0
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
    let holder = cluster.client(&db).await;
    let holder_pid = pid_of(&holder).await;
    holder
        .batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    // W1 holds row 2, then queues for row 1; W2 and W3 queue for row 1 too; W4 waits for row 2.
    let w1 = cluster.client(&db).await;
    w1.batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 2")
        .await
        .unwrap();
    let mut waiters = Vec::new();
    let mut pids = Vec::new();
    let w1 = std::sync::Arc::new(w1);
    for (client, row) in [
        (w1.clone(), 1),
        (std::sync::Arc::new(cluster.client(&db).await), 1),
        (std::sync::Arc::new(cluster.client(&db).await), 1),
        (std::sync::Arc::new(cluster.client(&db).await), 2),
    ] {
        let pid = pid_of(&client).await;
        let task = tokio::spawn(async move {
            client
                .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&row])
                .await
        });
        until_waiting(&observer, pid).await;
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
    let m = after_runs(&exporter, name, "locks", 2.0);
    // The scenario is static: the tree at the scrape is the one computed before and after.
    let db_oldest_wait: f64 = observer
        .query_one(
            "SELECT extract(epoch FROM now() - min(waitstart))::float8 FROM pg_locks l \
             JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    let holder_xact_age: f64 = observer
        .query_one(
            "SELECT extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity WHERE pid = $1",
            &[&holder_pid],
        )
        .await
        .unwrap()
        .get(0);
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
    let waited: f64 = observer
        .query_one(
            "SELECT sum(extract(epoch FROM now() - waitstart))::float8 FROM pg_locks l \
             JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
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

    let m = after_runs(&exporter, name, "activity_sampler", 2.0);
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
    let db = cluster.create_database("deadlock");
    cluster.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)",
    );
    let name = "deadlock";
    let exporter = Exporter::start(&config_for(
        name,
        &cluster.dsn(&db),
        "[collectors.database]\ninterval = \"1s\"\n",
    ));
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

    let a = std::sync::Arc::new(cluster.client(&db).await);
    let b = cluster.client(&db).await;
    a.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 2")
        .await
        .unwrap();
    let a_pid = pid_of(&a).await;
    let a2 = a.clone();
    let first =
        tokio::spawn(async move { a2.execute("UPDATE t SET v = 2 WHERE id = 2", &[]).await });
    until_waiting(&b, a_pid).await;
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
    let observer = cluster.client("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let in_db = loop {
        let n: i64 = observer
            .query_one(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if n as f64 > before || Instant::now() > deadline {
            break n as f64;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(in_db, before + 1.0);
    exporter.wait_for(Duration::from_secs(10), "deadlock counted", |m| {
        counter(m) == Some(in_db)
    });
}

/// Resumes a SIGSTOPped backend when dropped, even if the test fails.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn sampler_keeps_sampling_while_the_main_connection_is_stuck() {
    // Private cluster: the frozen backend may hold shared-memory locks others would wait on.
    let cluster = Cluster::start();
    let name = "stuck";
    let exporter = Exporter::start(&config_for(
        name,
        &cluster.dsn("postgres"),
        // Long timeouts: the main connection stays stuck instead of being replaced.
        &format!(
            "{LOCKS_FAST}[session]\napplication_name = \"pgkpi-stuck\"\nstatement_timeout = \"60s\"\n"
        ),
    ));
    exporter.wait_for(Duration::from_secs(10), "both lanes running", |m| {
        runs(m, name, "locks") >= 1.0 && runs(m, name, "activity_sampler") >= 2.0
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
    unsafe { libc::kill(main_pid, libc::SIGSTOP) };
    let frozen = Frozen(main_pid);
    std::thread::sleep(Duration::from_millis(1500)); // main-lane runs are now stuck in flight
    let before = exporter.metrics();
    let window = Duration::from_secs(6);
    std::thread::sleep(window);
    let after = exporter.metrics();
    let main_runs = |m: &Metrics| runs(m, name, "locks") + runs(m, name, "server");
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
