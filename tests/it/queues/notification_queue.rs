//! The migrations' `core.notification_queue` driven through its own queue functions (004):
//! depth by state, lag, leases and processed items, and estimates instead of scans once the
//! queue is large.

use std::time::{Duration, Instant};

use super::{depth, get, T};
use crate::support::{schema, Cluster, Exporter, ExporterConfig, Metrics};

/// A database with the baseline schema and the queue migrations (002, 004).
fn migrated(cluster: &Cluster, prefix: &str) -> String {
    let db = schema::database_with(
        cluster,
        prefix,
        &[
            "migrations/002_p0_notification_queue.sql",
            "migrations/004_fase2_queue_functions.sql",
        ],
    );
    cluster.psql(
        &db,
        "INSERT INTO core.notifications (user_id, type, title) VALUES (1, 'booking', 'hello')",
    );
    db
}

fn estimated(m: &Metrics, queue: &str, state: &str) -> Option<f64> {
    get(
        m,
        "app_queue_depth_estimated",
        &[("queue", queue), ("state", state)],
    )
}

const NQ: &str = "notifications";

fn enqueue(cluster: &Cluster, db: &str, n: usize, extra_cols: &str, extra_vals: &str) {
    cluster.psql(
        db,
        &format!(
            "INSERT INTO core.notification_queue (notification_id{extra_cols}) \
             SELECT (SELECT min(id) FROM core.notifications){extra_vals} FROM generate_series(1, {n})"
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_queue_depth_lag_leases_and_processed() {
    let cluster = Cluster::shared();
    let db = migrated(cluster, "nq");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "500ms")
        .raw(&format!(
            "[[queues]]\nname = \"{NQ}\"\npreset = \"notification_queue\"\n"
        ));
    let exporter = Exporter::start(&config.build());

    // Consumers stopped: 20 items due since 30 s, 5 scheduled for later (the trigger folds
    // scheduled_for into available_at).
    enqueue(
        cluster,
        &db,
        20,
        ", available_at, created_at",
        ", now() - interval '30 seconds', now() - interval '30 seconds'",
    );
    enqueue(
        cluster,
        &db,
        5,
        ", scheduled_for",
        ", now() + interval '1 hour'",
    );
    let m = exporter.wait_for(Duration::from_secs(10), "20 ready, 5 scheduled", |m| {
        depth(m, NQ, "ready") == Some(20.0) && depth(m, NQ, "scheduled") == Some(5.0)
    });
    let age = |db_: &str| {
        cluster.number(db_, "SELECT extract(epoch FROM now() - min(available_at)) FROM core.notification_queue WHERE status = 'ready' AND available_at <= now()")
    };
    let lag1 = get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap();
    assert!(lag1 >= 30.0 && lag1 <= age(&db), "lag {lag1}");
    assert_eq!(depth(&m, NQ, "leased"), Some(0.0));
    assert_eq!(depth(&m, NQ, "done"), Some(0.0));
    assert_eq!(estimated(&m, NQ, "ready"), Some(0.0));
    assert_eq!(
        get(
            &m,
            "app_queue_kind_depth",
            &[("queue", NQ), ("kind", "push"), ("state", "ready")]
        ),
        Some(20.0)
    );

    // Still stopped: more arrive, the backlog and the lag grow.
    enqueue(cluster, &db, 10, "", "");
    let m = exporter.wait_for(Duration::from_secs(10), "backlog grows", |m| {
        depth(m, NQ, "ready") == Some(30.0)
            && get(m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap_or(0.0) > lag1 + 0.5
    });
    assert!(get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap() <= age(&db));

    // A consumer claims 5 with a 2 s lease and dies: an expired lease after the timeout...
    let client = cluster.client(&db).await;
    let claimed = client
        .query(
            "SELECT id FROM core.claim_notifications('worker-killed', 5, interval '3 seconds')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let m = exporter.wait_for(Duration::from_secs(10), "5 leased, not expired yet", |m| {
        depth(m, NQ, "leased") == Some(5.0)
    });
    assert_eq!(
        get(&m, "app_queue_expired_leases", &[("queue", NQ)]),
        Some(0.0)
    );
    assert_eq!(depth(&m, NQ, "ready"), Some(25.0));
    exporter.wait_for(Duration::from_secs(10), "expired leases", |m| {
        get(m, "app_queue_expired_leases", &[("queue", NQ)]) == Some(5.0)
            && get(m, "app_queue_oldest_lease_seconds", &[("queue", NQ)]).unwrap_or(0.0) >= 3.0
    });
    // ...that disappears when reclaimed; the 5 come back with one retry each.
    let reclaimed: i32 = client
        .query_one("SELECT core.reclaim_expired_leases()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reclaimed, 5);
    let m = exporter.wait_for(Duration::from_secs(10), "leases reclaimed", |m| {
        get(m, "app_queue_expired_leases", &[("queue", NQ)]) == Some(0.0)
            && depth(m, NQ, "leased") == Some(0.0)
            && depth(m, NQ, "ready") == Some(30.0)
    });
    let retried = cluster.number(
        &db,
        "SELECT count(*) FROM core.notification_queue WHERE retry_count = 1",
    );
    let pending = cluster.number(&db, "SELECT count(*) FROM core.notification_queue");
    let bucket = |le: &str| {
        m.find(
            "app_queue_retries_bucket",
            &[("target", T), ("queue", NQ), ("le", le)],
        )
        .first()
        .map(|s| s.value)
    };
    assert_eq!(bucket("0"), Some(pending - retried));
    assert_eq!(bucket("1"), Some(pending));
    assert_eq!(bucket("+Inf"), Some(pending));
    assert_eq!(retried, 5.0);

    // Nothing finished yet: processed = inserted - pending = 0 (once the stats are flushed).
    let m = exporter.wait_for(Duration::from_secs(10), "inserted counter", |m| {
        get(m, "app_queue_inserted_total", &[("queue", NQ)]) == Some(35.0)
    });
    assert_eq!(
        get(&m, "app_queue_processed_total", &[("queue", NQ)]),
        Some(0.0)
    );

    // Consumers running while a producer adds work: processed rises, lag stays bounded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let client = cluster.client(&db).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = client
                    .query("SELECT id FROM core.claim_notifications('worker-1', 20, interval '1 minute')", &[])
                    .await
                    .unwrap();
                for row in rows {
                    let id: i64 = row.get(0);
                    client
                        .query_one("SELECT core.complete_notification($1, 'worker-1')", &[&id])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let producer_until = Instant::now() + Duration::from_secs(5);
    let mut max_lag_after_drain: f64 = 0.0;
    let mut drained_at: Option<Instant> = None;
    while Instant::now() < producer_until {
        client
            .execute("INSERT INTO core.notification_queue (notification_id) SELECT min(id) FROM core.notifications", &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = exporter.metrics();
        let lag = get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap_or(0.0);
        // Once the old backlog is gone, the lag reflects the running consumer only.
        if drained_at.is_none() && lag < 5.0 && depth(&m, NQ, "ready").unwrap_or(99.0) < 5.0 {
            drained_at = Some(Instant::now());
        }
        if drained_at.is_some() {
            max_lag_after_drain = max_lag_after_drain.max(lag);
        }
    }
    // Ending the session flushes its insert statistics at once.
    drop(client);
    assert!(
        drained_at.is_some(),
        "the consumer never drained the backlog"
    );
    assert!(
        max_lag_after_drain < 3.0,
        "lag with consumers running: {max_lag_after_drain}"
    );
    // Let the consumer finish what is due, then stop it and compare with the table.
    exporter.wait_for(Duration::from_secs(10), "ready drained", |m| {
        depth(m, NQ, "ready") == Some(0.0)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    consumer.await.unwrap();
    let done = cluster.number(
        &db,
        "SELECT count(*) FROM core.notification_queue WHERE status IN ('done', 'dead')",
    );
    assert!(done > 30.0, "{done}");
    let m = exporter.wait_for(Duration::from_secs(15), "processed = finished rows", |m| {
        get(m, "app_queue_processed_total", &[("queue", NQ)]) == Some(done)
    });
    assert_eq!(depth(&m, NQ, "done"), Some(done));
    assert_eq!(
        m.types.get("app_queue_processed_total").map(String::as_str),
        Some("counter")
    );
}

#[test]
fn large_queue_estimates_instead_of_scanning() {
    let cluster = Cluster::shared();
    let db = migrated(cluster, "nqbig");
    // 40 000 finished rows, 50 ready: counting done would read the whole table.
    enqueue(
        cluster,
        &db,
        40_000,
        ", status, completed_at",
        ", 'done', now()",
    );
    enqueue(cluster, &db, 50, "", "");
    cluster.psql(&db, "VACUUM ANALYZE core.notification_queue");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "1s")
        .raw(&format!(
            "[[queues]]\nname = \"{NQ}\"\npreset = \"notification_queue\"\nexact_count_limit = 1000\n"
        ));
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "queue metrics", |m| {
        depth(m, NQ, "done").is_some()
    });
    assert_eq!(estimated(&m, NQ, "done"), Some(1.0));
    assert_eq!(estimated(&m, NQ, "ready"), Some(0.0));
    assert_eq!(
        depth(&m, NQ, "ready"),
        Some(50.0),
        "exact through the claim index"
    );
    let done = depth(&m, NQ, "done").unwrap();
    assert!((done - 40_000.0).abs() < 4_000.0, "estimate {done}");
    // The breakdown by retries still runs: it reads the pending rows through the partial indexes.
    assert!(
        m.find("app_queue_retries_count", &[("target", T), ("queue", NQ)])
            .len()
            == 1
    );
}
