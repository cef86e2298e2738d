//! Counters that never go backwards or inflate: pg_stat_statements reset between polls, and
//! entries evicted and re-created between polls (pg_stat_statements.max reached). Both on a
//! cluster of the test's own (they reset the statistics or change the server's settings).

use std::time::{Duration, Instant};

use super::{config, database, hist_count, one_row, wait_runs};
use crate::support::{retry, Cluster, Exporter};

#[tokio::test(flavor = "multi_thread")]
async fn reset_between_polls_never_goes_backwards() {
    let cluster = Cluster::start();
    let db = database(&cluster, "stmt_reset");
    cluster.psql(&db, "CREATE TABLE reset_t (id int)");
    let statements = "[[statements.workloads]]\nname = \"resetw\"\nquery = 'reset_t'\n";
    let exporter = Exporter::start(&config("reset", &cluster.dsn(&db), statements));
    wait_runs(&exporter, "reset", 1.0);
    let client = cluster.client(&db).await;
    let run = |n: usize| {
        let client = &client;
        async move {
            for _ in 0..n {
                one_row(client, "SELECT count(*) FROM reset_t").await;
            }
        }
    };
    // Every scrape while waiting must see monotonic counters.
    let watch = |expected: f64, what: &str| {
        let mut last_count = 0.0;
        let mut last_all = 0.0;
        retry(Duration::from_secs(20), Duration::from_millis(100), || {
            let m = exporter.metrics();
            let count = hist_count(&m, "reset", &db, "resetw");
            let all = m
                .value(
                    "pg_stat_statements_all_calls_total",
                    &[("target", "reset"), ("datname", &db)],
                )
                .unwrap_or(0.0);
            assert!(
                count >= last_count,
                "{what}: count went from {last_count} to {count}"
            );
            assert!(
                all >= last_all,
                "{what}: all calls went from {last_all} to {all}"
            );
            assert!(count <= expected, "{what}: count {count} above {expected}");
            last_count = count;
            last_all = all;
            if count == expected {
                Ok(m)
            } else {
                Err(count)
            }
        })
        .unwrap_or_else(|count| {
            panic!(
                "{what}: waited for {expected}, have {count}\n{}",
                exporter.logs()
            )
        })
    };
    run(30).await;
    let before = watch(30.0, "before the reset");
    let reset_before = before.value(
        "pg_stat_statements_last_reset_timestamp_seconds",
        &[("target", "reset")],
    );
    // After the reset the entry holds 45 calls, more than the 30 seen before: a naive
    // subtraction would count 15 instead of 45.
    one_row(&client, "SELECT pg_stat_statements_reset()").await;
    run(45).await;
    let after = watch(75.0, "across the reset");
    assert_ne!(
        after.value(
            "pg_stat_statements_last_reset_timestamp_seconds",
            &[("target", "reset")]
        ),
        reset_before
    );
    // The next interval is plain deltas again.
    run(10).await;
    watch(85.0, "after the reset");
    // A reset of the single entry (no stats_reset change before 17): counters go down.
    let queryid = cluster.psql(
        &db,
        "SELECT queryid FROM pg_stat_statements WHERE query LIKE '%FROM reset_t%'",
    );
    wait_runs(&exporter, "reset", 1.0);
    cluster.psql(
        &db,
        &format!("SELECT pg_stat_statements_reset(0, 0, {queryid})"),
    );
    run(5).await;
    watch(90.0, "after a single-entry reset");

    // A clean restart keeps the statistics (pg_stat_statements.save), but counters of another
    // server process are of unknown age: the first poll after it is a new baseline, and
    // nothing is counted twice.
    drop(client);
    cluster.stop();
    cluster.resume();
    let restarted = Instant::now();
    exporter.wait_for(Duration::from_secs(30), "the reconnection", |m| {
        m.value(
            "pgkpi_collector_last_success_timestamp_seconds",
            &[("target", "reset"), ("collector", "statements")],
        )
        .is_some_and(|t| {
            t > std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
                - restarted.elapsed().as_secs_f64()
        })
    });
    wait_runs(&exporter, "reset", 1.0);
    let client = cluster.client(&db).await;
    for _ in 0..10 {
        one_row(&client, "SELECT count(*) FROM reset_t").await;
    }
    watch(100.0, "after a restart");
}

/// Entries evicted and re-created between polls (pg_stat_statements.max reached): counts may
/// be lost with the evicted entries but are never inflated, and the evictions are counted.
#[tokio::test(flavor = "multi_thread")]
async fn evictions_never_inflate_counts() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "ALTER SYSTEM SET pg_stat_statements.max = 100");
    cluster.stop();
    cluster.resume();
    let db = database(&cluster, "stmt_evict");
    cluster.psql(&db, "CREATE TABLE evict_t (id int)");
    let statements = "[[statements.workloads]]\nname = \"evict\"\nquery = 'evict_t'\n";
    let exporter = Exporter::start(&config("evict", &cluster.dsn(&db), statements));
    wait_runs(&exporter, "evict", 1.0);
    let client = cluster.client(&db).await;
    // IN lists of different lengths are different statements (before PostgreSQL 18): 150 of
    // them do not fit in 100 entries.
    let mut made = 0.0;
    let mut last = 0.0;
    for _ in 0..5 {
        for k in 1..=150 {
            let list: Vec<String> = (1..=k).map(|i| i.to_string()).collect();
            client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM evict_t WHERE id IN ({})",
                        list.join(",")
                    ),
                    &[],
                )
                .await
                .unwrap();
            made += 1.0;
        }
        let count = hist_count(&exporter.metrics(), "evict", &db, "evict");
        assert!(count >= last, "count went from {last} to {count}");
        assert!(count <= made, "{count} counted for {made} executions");
        last = count;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = wait_runs(&exporter, "evict", 2.0);
    let count = hist_count(&m, "evict", &db, "evict");
    assert!(count <= made, "{count} counted for {made} executions");
    assert!(count > 0.0);
    println!("evictions: {count} of {made} executions counted");
    let server_dealloc = || -> f64 {
        cluster
            .psql(&db, "SELECT dealloc FROM pg_stat_statements_info")
            .parse()
            .unwrap()
    };
    let before = server_dealloc();
    assert!(before > 0.0, "the test should have caused evictions");
    let m = wait_runs(&exporter, "evict", 1.0);
    let exported = m
        .value("pg_stat_statements_dealloc_total", &[("target", "evict")])
        .unwrap();
    let after = server_dealloc();
    assert!(
        before <= exported && exported <= after,
        "dealloc: server {before}..{after}, exported {exported}"
    );
    let fill = m
        .value("pg_stat_statements_fill_ratio", &[("target", "evict")])
        .unwrap();
    assert!(fill > 0.5 && fill <= 1.0, "fill ratio {fill}");
}
