//! The claim of `core.notification_queue` (issue 13): with migration 009 it reads the head of
//! an index in the claim's order and stops after the batch, instead of sorting the whole ready
//! backlog; and consumers killed mid-run (their sessions terminated, as by `kill -9`) lose no
//! item and complete none twice (at-least-once: an item a dead consumer held is processed
//! again after its lease expires).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::migrated_db;
use crate::support::schema::{apply_migration, database_with};
use crate::support::{repo_path, Cluster, TempDir};

const NEW_INDEX: &str = "notification_queue_claim_order_idx";

/// The claim's inner SELECT (004's `picked`) with a literal batch of 1.
const CLAIM_SELECT: &str = "SELECT q.id FROM core.notification_queue q \
     WHERE q.status = 'ready' AND q.available_at <= now() \
     ORDER BY q.priority_score DESC, q.created_at, q.id \
     LIMIT 1 FOR UPDATE SKIP LOCKED";

/// Node types of a JSON plan (depth first) and the indexes it scans.
fn plan_nodes(plan: &serde_json::Value, nodes: &mut Vec<String>, indexes: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(t)) = map.get("Node Type") {
                nodes.push(t.clone());
            }
            if let Some(serde_json::Value::String(i)) = map.get("Index Name") {
                indexes.push(i.clone());
            }
            map.values().for_each(|v| plan_nodes(v, nodes, indexes));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| plan_nodes(v, nodes, indexes)),
        _ => {}
    }
}

/// EXPLAIN (FORMAT JSON) of the claim's SELECT → (node types, indexes, text plan).
fn explain_claim(cluster: &Cluster, db: &str) -> (Vec<String>, Vec<String>, String) {
    let json = cluster.psql(db, &format!("EXPLAIN (FORMAT JSON) {CLAIM_SELECT}"));
    let plan: serde_json::Value = serde_json::from_str(&json).expect("EXPLAIN JSON");
    let (mut nodes, mut indexes) = (Vec::new(), Vec::new());
    plan_nodes(&plan, &mut nodes, &mut indexes);
    let text = cluster.psql(db, &format!("EXPLAIN {CLAIM_SELECT}"));
    (nodes, indexes, text)
}

/// Runs `core.claim_notifications(w, 1)` `calls` times in one session with auto_explain
/// reporting every nested plan as a NOTICE (so past the plan cache's five custom plans, on the
/// generic plan if it switches), and returns psql's output with those plans.
fn function_plans(cluster: &Cluster, db: &str, calls: usize) -> String {
    let dir = TempDir::new("claim-plans");
    let mut sql = String::from(
        "LOAD 'auto_explain';\n\
         SET auto_explain.log_min_duration = 0;\n\
         SET auto_explain.log_nested_statements = on;\n\
         SET auto_explain.log_level = notice;\n\
         SET client_min_messages = notice;\n",
    );
    for _ in 0..calls {
        sql.push_str("SELECT count(*) FROM core.claim_notifications('plan-check', 1);\n");
    }
    cluster.psql_file(db, dir.write("claims.sql", &sql), &[])
}

/// The claim's ORDER BY over the table (`Sort Key: q.…`), as opposed to the final sort of the
/// claimed batch (`Sort Key: c.…`).
fn sorts_backlog(plans: &str) -> bool {
    plans.contains("Sort Key: q.priority_score")
}

#[test]
fn queue_claim_reads_the_index_head_instead_of_sorting_the_ready_backlog() {
    let cluster = Cluster::shared();
    // The queue as 002 and 004 left it: 200 000 due ready rows.
    let db = database_with(
        cluster,
        "claim_plan",
        &[
            "migrations/002_p0_notification_queue.sql",
            "migrations/004_fase2_queue_functions.sql",
        ],
    );
    cluster.psql(
        &db,
        "INSERT INTO core.notifications (user_id, type, title) VALUES (1, 'test', 'backlog')",
    );
    cluster.psql(
        &db,
        "INSERT INTO core.notification_queue (notification_id, priority_score, available_at, created_at) \
           SELECT (SELECT min(id) FROM core.notifications), g % 10, now() - interval '1 minute', \
                  now() - interval '1 day' + (g % 86400) * interval '1 second' \
           FROM generate_series(1, 200000) g",
    );
    cluster.psql(&db, "VACUUM ANALYZE core.notification_queue");

    // Before 009: every claim sorts the whole due backlog (the finding of issue 13).
    let (nodes, _, text) = explain_claim(cluster, &db);
    assert!(
        nodes.iter().any(|n| n == "Sort"),
        "before 009 the claim was expected to sort the backlog:\n{text}"
    );
    let plans = function_plans(cluster, &db, 2);
    assert!(
        sorts_backlog(&plans),
        "before 009 the claim function was expected to sort the backlog:\n{plans}"
    );

    apply_migration(
        cluster,
        &db,
        &repo_path("migrations/009_queue_claim_index.sql"),
    );

    // After: Limit -> LockRows -> Index Scan on the new index, no Sort anywhere.
    let (nodes, indexes, text) = explain_claim(cluster, &db);
    assert!(
        !nodes.iter().any(|n| n == "Sort" || n == "Incremental Sort"),
        "the claim still sorts:\n{text}"
    );
    assert_eq!(
        nodes,
        ["Limit", "LockRows", "Index Scan"],
        "expected a Limit over an index scan:\n{text}"
    );
    assert_eq!(indexes, [NEW_INDEX], "{text}");
    // The function itself, past the plan cache's custom plans: each of the 8 claims scans the
    // new index and none sorts the backlog; only the claimed row is sorted on the way out.
    let plans = function_plans(cluster, &db, 8);
    assert!(
        !sorts_backlog(&plans),
        "the claim function sorts the backlog:\n{plans}"
    );
    assert_eq!(
        plans
            .matches(&format!(
                "Index Scan using {NEW_INDEX} on notification_queue q"
            ))
            .count(),
        8,
        "{plans}"
    );
    // And it returned the head of the order: the 10 rows claimed so far (2 before, 8 after) are
    // the 10 first of priority 9 by created_at, id.
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT count(*) FROM (SELECT id, status FROM core.notification_queue \
               WHERE priority_score = 9 ORDER BY created_at, id LIMIT 10) s WHERE status = 'leased'"
        ),
        "10"
    );
}

/// Consumers that process items one claim of 10 at a time; twice during the run every consumer
/// session is terminated (`pg_terminate_backend`, as if the process died with `kill -9`) and
/// the consumers restart under new worker names; a reaper gives expired leases back. Every item
/// ends done, completed (complete_notification = true) exactly once, none lost; items a dead
/// consumer held are processed again (at-least-once), and an item was claimed at most once per
/// time it was given back (retry_count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_consumers_killed_twice_lose_no_item_and_complete_none_twice() {
    const ITEMS: i64 = 3000;
    const CONSUMERS: usize = 4;
    const APP: &str = "claim-crash-consumer";
    let cluster = Cluster::shared();
    let db = migrated_db("claim_crash");
    cluster.psql(
        &db,
        &format!(
            "INSERT INTO core.notifications (user_id, type, title) \
               SELECT g, 'test', 'item ' || g FROM generate_series(1, {ITEMS}) g; \
             INSERT INTO core.notification_queue (notification_id, priority_score) \
               SELECT id, (id % 5)::int FROM core.notifications"
        ),
    );
    let dsn = format!("{} application_name={APP}", cluster.dsn(&db));
    let deadline = Instant::now() + Duration::from_secs(60);

    // (claimed ids, successfully completed ids) per consumer.
    let mut consumers = Vec::new();
    for n in 0..CONSUMERS {
        let dsn = dsn.clone();
        consumers.push(tokio::spawn(async move {
            let (mut claimed, mut completed) = (Vec::<i64>::new(), Vec::<i64>::new());
            let mut generation = 0;
            'restart: while Instant::now() < deadline {
                generation += 1;
                let worker = format!("consumer-{n}-{generation}");
                let Ok((client, connection)) =
                    tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(connection);
                while Instant::now() < deadline {
                    let Ok(rows) = client
                        .query(
                            "SELECT id FROM core.claim_notifications($1, 10, interval '2 seconds')",
                            &[&worker],
                        )
                        .await
                    else {
                        continue 'restart; // killed: start again as a new worker
                    };
                    if rows.is_empty() {
                        let Ok(row) = client
                            .query_one(
                                "SELECT count(*) FILTER (WHERE status IN ('ready', 'leased')) \
                                 FROM core.notification_queue",
                                &[],
                            )
                            .await
                        else {
                            continue 'restart;
                        };
                        if row.get::<_, i64>(0) == 0 {
                            break 'restart;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    for row in rows {
                        let id: i64 = row.get(0);
                        claimed.push(id);
                        // "Processing" the item.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        match client
                            .query_one("SELECT core.complete_notification($1, $2)", &[&id, &worker])
                            .await
                        {
                            Ok(row) if row.get::<_, bool>(0) => completed.push(id),
                            Ok(_) => {} // lease lost to the reaper: someone else has it
                            Err(_) => continue 'restart,
                        }
                    }
                }
            }
            (claimed, completed)
        }));
    }

    // The reaper, until every item is done.
    let reaper = {
        let client = cluster.client(&db).await;
        tokio::spawn(async move {
            while Instant::now() < deadline {
                client
                    .query_one("SELECT core.reclaim_expired_leases()", &[])
                    .await
                    .expect("reclaim");
                let row = client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE status IN ('ready', 'leased')) \
                         FROM core.notification_queue",
                        &[],
                    )
                    .await
                    .expect("pending");
                if row.get::<_, i64>(0) == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Two crashes: at a third and at two thirds of the items done, while items are leased.
    let killer = cluster.client(&db).await;
    let mut kills = Vec::new();
    for threshold in [ITEMS / 3, 2 * ITEMS / 3] {
        loop {
            assert!(Instant::now() < deadline, "no progress to {threshold} done");
            let row = killer
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'done'), \
                            count(*) FILTER (WHERE status = 'leased') \
                     FROM core.notification_queue",
                    &[],
                )
                .await
                .unwrap();
            let (done, leased): (i64, i64) = (row.get(0), row.get(1));
            if done >= threshold && leased > 0 {
                assert!(
                    done < ITEMS,
                    "the run ended before the crash at {threshold}"
                );
                let killed: i64 = killer
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                         FROM pg_stat_activity WHERE application_name = $1",
                        &[&APP],
                    )
                    .await
                    .unwrap()
                    .get(0);
                kills.push((done, leased, killed));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        kills.iter().all(|&(_, _, killed)| killed >= 1),
        "a crash killed no consumer session: {kills:?}"
    );

    let (mut claims, mut completions) = (BTreeMap::<i64, i64>::new(), BTreeMap::<i64, i64>::new());
    for c in consumers {
        let (claimed, completed) = c.await.expect("consumer task");
        claimed
            .into_iter()
            .for_each(|id| *claims.entry(id).or_default() += 1);
        completed
            .into_iter()
            .for_each(|id| *completions.entry(id).or_default() += 1);
    }
    reaper.await.expect("reaper task");

    assert_eq!(
        cluster.psql(
            &db,
            "SELECT status, count(*) FROM core.notification_queue GROUP BY status"
        ),
        format!("done|{ITEMS}"),
        "not every item ended done (kills at done/leased/sessions: {kills:?})"
    );
    // A complete in flight when its session was killed may have committed unseen: at most one
    // per killed session is missing from the consumers' own records (the table says done).
    let killed_sessions: i64 = kills.iter().map(|&(_, _, killed)| killed).sum();
    assert!(
        completions.len() as i64 >= ITEMS - killed_sessions,
        "only {} completions seen for {ITEMS} items",
        completions.len()
    );
    let twice: Vec<_> = completions.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "items completed twice: {twice:?}");
    // Every claim after the first follows a reclaim of the item, which counts in retry_count.
    let retries: BTreeMap<i64, i64> = cluster
        .psql(
            &db,
            "SELECT id, retry_count FROM core.notification_queue WHERE retry_count > 0",
        )
        .lines()
        .map(|l| {
            let (id, n) = l.split_once('|').unwrap();
            (id.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    for (id, n) in &claims {
        let given_back = retries.get(id).copied().unwrap_or(0);
        assert!(
            *n <= 1 + given_back,
            "item {id} claimed {n} times but given back only {given_back} times"
        );
    }
    assert!(
        !retries.is_empty(),
        "no item held by a killed consumer was given back (kills: {kills:?})"
    );
    let processed_twice = claims.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{ITEMS} of {ITEMS} items done, none completed twice; kills (done, leased, sessions): \
         {kills:?}; {} items given back by the reaper, {processed_twice} claimed twice or more",
        retries.len()
    );
}
