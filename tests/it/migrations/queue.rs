//! The queue functions of the migrations (`core.notification_queue`): eight consumers
//! process ten thousand items exactly once, an expired lease is reclaimed, a failing item backs
//! off and goes dead after its maximum attempts. Each test clones the migrated template.

use std::collections::BTreeSet;
use std::time::Duration;

use super::migrated_db;
use crate::support::Cluster;

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
