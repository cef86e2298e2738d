//! What the collector exports: workload labels from the rules, the top-N bound with the rest
//! counted, and query texts, read once per new statement (counted on the server).

use std::time::Duration;

use super::{config, database, hist_count, one_row, wait_runs};
use crate::support::{retry_async, Cluster, Exporter, ExporterConfig, Metrics};

/// Sum of calls of the exporter's own statements carrying `marker` in database `db`.
fn own_calls(cluster: &Cluster, db: &str, marker: &str) -> i64 {
    cluster
        .psql(
            db,
            &format!(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid \
                 WHERE d.datname = current_database() AND s.query LIKE '%{marker}%' \
                 AND s.query NOT LIKE '%coalesce(sum(calls)%'"
            ),
        )
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_labels_follow_the_rules() {
    let cluster = Cluster::shared();
    let db = database(cluster, "stmt_rules");
    cluster.psql(
        &db,
        "CREATE SCHEMA chat; CREATE SCHEMA core; \
         CREATE TABLE chat.messages (id int); CREATE TABLE chat.conversations (id int); \
         CREATE TABLE core.notification_queue (id int); CREATE TABLE plain (id int)",
    );
    let client = cluster.client(&db).await;
    // A statement pinned by queryid whose text would also match the chat rule: the first rule
    // (the queryid list) wins.
    let pinned_sql = "SELECT count(*) FROM chat.messages WHERE id > 1000000";
    client.query_one(pinned_sql, &[]).await.unwrap();
    let pinned: i64 = cluster
        .psql(
            &db,
            // This database's statement only: other tests share the cluster.
            "SELECT queryid FROM pg_stat_statements WHERE query LIKE '%id > $1%' \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .parse()
        .unwrap();
    let statements = format!(
        "[[statements.workloads]]\nname = \"pinned\"\nqueryids = [{pinned}]\n\n\
         [[statements.workloads]]\nname = \"chat\"\nquery = 'chat\\.(messages|conversations)'\n\n\
         [[statements.workloads]]\nname = \"notifications\"\nquery = '(?i)NOTIFICATION_QUEUE'\n"
    );
    let exporter = Exporter::start(&config("rules", &cluster.dsn(&db), &statements));
    wait_runs(&exporter, "rules", 1.0);
    for _ in 0..3 {
        one_row(&client, "SELECT count(*) FROM chat.messages").await;
        client.query_one(pinned_sql, &[]).await.unwrap();
    }
    for _ in 0..2 {
        one_row(&client, "SELECT count(*) FROM chat.conversations").await;
    }
    for _ in 0..4 {
        client
            .execute("UPDATE core.notification_queue SET id = id + 1", &[])
            .await
            .unwrap();
        one_row(&client, "SELECT count(*) FROM plain").await;
    }
    let m = exporter.wait_for(Duration::from_secs(20), "all workloads", |m| {
        hist_count(m, "rules", &db, "chat") >= 5.0
            && hist_count(m, "rules", &db, "pinned") >= 3.0
            && hist_count(m, "rules", &db, "notifications") >= 4.0
            && hist_count(m, "rules", &db, "other") >= 4.0
            && hist_count(m, "rules", &db, "pgkpi") > 0.0
    });
    assert_eq!(hist_count(&m, "rules", &db, "chat"), 5.0);
    assert_eq!(hist_count(&m, "rules", &db, "pinned"), 3.0);
    assert_eq!(hist_count(&m, "rules", &db, "notifications"), 4.0);
    // Only configured workloads, `other` and pgkpi's own statements (the built-in `pgkpi`,
    // never a user workload) appear.
    for s in m.find("pg_statement_latency_seconds_count", &[("target", "rules")]) {
        let w = s.labels["workload"].as_str();
        assert!(
            ["chat", "pinned", "notifications", "other", "pgkpi"].contains(&w),
            "unexpected workload {w}"
        );
    }
    // Query text stays out of the metrics unless asked for.
    assert!(m.find("pg_stat_statements_query_info", &[]).is_empty());
    assert!(!m.text.contains("chat.messages"));
}

#[tokio::test(flavor = "multi_thread")]
async fn top_statements_are_bounded_with_the_rest_counted() {
    let cluster = Cluster::start();
    let db = database(&cluster, "stmt_top");
    let mut ddl = String::new();
    for t in ["slow_a", "slow_b", "slow_c", "f1", "f2", "f3", "f4", "f5"] {
        ddl.push_str(&format!(
            "CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1); "
        ));
    }
    cluster.psql(&db, &ddl);
    let statements = "[statements]\ntop_n = 3\nquery_text = true\nquery_text_max_length = 40\n";
    let exporter = Exporter::start(&config("top", &cluster.dsn(&db), statements));
    wait_runs(&exporter, "top", 1.0);
    let client = cluster.client(&db).await;
    let slow_ids: Vec<String> = {
        let mut ids = Vec::new();
        for t in ["slow_a", "slow_b", "slow_c"] {
            client
                .query_one(&format!("SELECT pg_sleep(0.2) FROM {t}"), &[])
                .await
                .unwrap();
            ids.push(cluster.psql(
                &db,
                &format!("SELECT queryid FROM pg_stat_statements WHERE query LIKE '%FROM {t}'"),
            ));
        }
        ids.sort();
        ids
    };
    let top_ids = |m: &Metrics| {
        let mut ids: Vec<String> = m
            .find("pg_stat_statements_calls_total", &[("target", "top")])
            .iter()
            .map(|s| s.labels["queryid"].clone())
            .collect();
        ids.sort();
        ids
    };
    // A burst of three slow and five fast statements; repeated if a poll split it.
    let mut found = None;
    for _ in 0..5 {
        for t in ["slow_a", "slow_b", "slow_c"] {
            client
                .query_one(&format!("SELECT pg_sleep(0.2) FROM {t}"), &[])
                .await
                .unwrap();
        }
        for t in ["f1", "f2", "f3", "f4", "f5"] {
            client
                .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                .await
                .unwrap();
        }
        found = retry_async(
            Duration::from_millis(2500),
            Duration::from_millis(100),
            || async {
                let m = exporter.metrics();
                assert!(top_ids(&m).len() <= 3, "top_n = 3 exceeded:\n{}", m.text);
                if top_ids(&m) == slow_ids {
                    Ok(m)
                } else {
                    Err(())
                }
            },
        )
        .await
        .ok();
        if found.is_some() {
            break;
        }
    }
    let m = found.expect("the three slow statements never formed the top 3");
    let series = m.find(
        "pg_stat_statements_exec_seconds_total",
        &[("target", "top")],
    );
    assert_eq!(series.len(), 3, "top_n bounds the series");
    for s in &series {
        assert!(
            s.value >= 0.2,
            "exec seconds {} of a pg_sleep(0.2)",
            s.value
        );
        assert_eq!(s.labels["datname"], db);
        assert_eq!(s.labels["user"], "postgres");
    }
    let omitted = m
        .value("pg_stat_statements_top_omitted", &[("target", "top")])
        .unwrap();
    assert!(
        omitted >= 5.0,
        "the five fast statements are omitted: {omitted}"
    );
    // The opt-in text: truncated, for the exported statements only.
    let info = m.find("pg_stat_statements_query_info", &[("target", "top")]);
    assert_eq!(info.len(), 3);
    for s in info {
        assert!(s.labels["query"].contains("pg_sleep"), "{:?}", s.labels);
        assert!(s.labels["query"].chars().count() <= 41);
    }
    // The debug view: the last interval's top statements, bounded by top_n.
    let view = exporter.get("/debug/statements");
    assert_eq!(view.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&view.body).unwrap();
    let view = &doc["targets"]["top"];
    let top = view["top"].as_array().expect("top statements array");
    assert!(top.len() <= 3, "{doc}");
    assert!(view["entries"].as_f64().unwrap() >= 8.0, "{doc}");
    // Fill level against pg_stat_statements.max.
    let max = cluster.number(&db, "SHOW pg_stat_statements.max");
    assert_eq!(
        m.value("pg_stat_statements_max", &[("target", "top")]),
        Some(max)
    );
    let entries = m
        .value("pg_stat_statements_entries", &[("target", "top")])
        .unwrap();
    assert!(entries >= 8.0);
    let ratio = m
        .value("pg_stat_statements_fill_ratio", &[("target", "top")])
        .unwrap();
    assert!((ratio - entries / max).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_text_is_read_once_per_new_statement() {
    let cluster = Cluster::start();
    let db = database(&cluster, "stmt_text");
    cluster.psql(&db, "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int)");
    // Only `server` and `statements` run, so that every statement in the cluster is known.
    let probe = Exporter::start(&ExporterConfig::new("text", &cluster.dsn(&db)).build());
    let m = wait_runs(&probe, "text", 1.0);
    drop(probe);
    let mut config = ExporterConfig::new("text", &cluster.dsn(&db));
    for s in m.find("pgkpi_collector_up", &[("target", "text")]) {
        let name = &s.labels["collector"];
        if name != "server" && name != "statements" {
            config = config.disable(name);
        }
    }
    let config = config
        .interval("statements", "1s")
        .raw("[[statements.workloads]]\nname = \"t\"\nquery = 'FROM t[12]'\n");
    cluster.psql(&db, "SELECT pg_stat_statements_reset()");
    let exporter = Exporter::start(&config.build());
    let fetches = || own_calls(&cluster, &db, "pgkpi statements: text");
    let polls = || own_calls(&cluster, &db, "pgkpi statements: poll");
    // The exporter's own statements are new in its first polls, and so is the counting query
    // of this test; then nothing is new.
    // Warm-up: the first polls read the texts of everything there, then of the text query
    // itself; on a loaded machine that can take a few polls.
    fetches();
    polls();
    wait_runs(&exporter, "text", 6.0);
    let (f0, p0) = (fetches(), polls());
    wait_runs(&exporter, "text", 4.0);
    let (f1, p1) = (fetches(), polls());
    assert!(p1 >= p0 + 4, "polls ran: {p0} -> {p1}");
    assert_eq!(f1, f0, "no text read while no statement is new");

    // Two new statements, run many times: their text is read once.
    let client = cluster.client(&db).await;
    for _ in 0..20 {
        one_row(&client, "SELECT count(*) FROM t1").await;
        one_row(&client, "SELECT count(*) FROM t2").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = exporter.wait_for(Duration::from_secs(20), "the new statements", |m| {
        hist_count(m, "text", &db, "t") >= 40.0
    });
    assert_eq!(hist_count(&m, "text", &db, "t"), 40.0);
    wait_runs(&exporter, "text", 2.0);
    let f2 = fetches();
    assert!(
        (1..=2).contains(&(f2 - f1)),
        "the two new statements were read in {} text queries",
        f2 - f1
    );
    // The exporter's own count agrees with the server's.
    let m = exporter.metrics();
    assert_eq!(
        m.value("pgkpi_statements_text_fetches_total", &[("target", "text")]),
        Some(fetches() as f64)
    );
}

/// After the first (baseline) poll a workload whose statements exist is exported at zero, so
/// that rate() sees the next interval's calls as an increase.
#[tokio::test(flavor = "multi_thread")]
async fn histograms_start_at_zero_after_the_baseline() {
    let cluster = Cluster::shared();
    let db = database(cluster, "stmt_zero");
    cluster.psql(
        &db,
        "CREATE TABLE zero_t (id int); SELECT count(*) FROM zero_t",
    );
    let exporter = Exporter::start(&config(
        "zero",
        &cluster.dsn(&db),
        "[[statements.workloads]]\nname = \"z\"\nquery = 'FROM zero_t'\n",
    ));
    let m = wait_runs(&exporter, "zero", 1.0);
    assert_eq!(
        m.value(
            "pg_statement_latency_seconds_count",
            &[("target", "zero"), ("datname", &db), ("workload", "z")]
        ),
        Some(0.0),
        "exported at zero after the baseline"
    );
    let client = cluster.client(&db).await;
    for _ in 0..3 {
        one_row(&client, "SELECT count(*) FROM zero_t").await;
    }
    let m = exporter.wait_for(Duration::from_secs(20), "the three calls", |m| {
        hist_count(m, "zero", &db, "z") >= 3.0
    });
    assert_eq!(hist_count(&m, "zero", &db, "z"), 3.0);
}
