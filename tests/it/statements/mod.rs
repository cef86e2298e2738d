//! The `statements` collector against a real PostgreSQL: latency accuracy against
//! client-measured truth, resets between polls, workload rules, the top-N bound and the cost of
//! reading query texts.
//!
//! Tests that reset pg_stat_statements, change its settings, restart the server, or need to
//! know every statement the server runs, use a private cluster: pg_stat_statements is shared
//! by all databases of a cluster. The others work in a database of their own on the shared
//! cluster and read only that database's statements (by datname or dbid).
//!
//! [`latency`] checks the quantiles, [`counters`] that counts never go backwards or inflate
//! (resets, evictions), [`series`] what is exported (workload labels, the top-N bound, query
//! texts and what reading them costs), and [`skips`] the skip reasons. This module keeps the
//! helpers all of them use.

mod counters;
mod latency;
mod log_source;
mod series;
mod skips;

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics};
use tokio_postgres::Client;

/// A database with pg_stat_statements created in it.
fn database(cluster: &Cluster, prefix: &str) -> String {
    let db = cluster.create_database(prefix);
    cluster.psql(&db, "CREATE EXTENSION pg_stat_statements");
    db
}

/// The statements collector every second, plus `[statements]` settings (TOML).
fn config(target: &str, dsn: &str, statements: &str) -> String {
    ExporterConfig::new(target, dsn)
        .interval("statements", "1s")
        .raw(statements)
        .build()
}

/// Waits until the statements collector has run `more` more times.
fn wait_runs(exporter: &Exporter, target: &str, more: f64) -> Metrics {
    exporter.wait_more_runs(target, "statements", more)
}

/// Runs a statement returning one row.
async fn one_row(client: &Client, sql: &str) {
    client.query_one(sql, &[]).await.unwrap();
}

/// `_count` of the latency histogram of (datname, workload).
fn hist_count(m: &Metrics, target: &str, db: &str, workload: &str) -> f64 {
    m.value(
        "pg_statement_latency_seconds_count",
        &[("target", target), ("datname", db), ("workload", workload)],
    )
    .unwrap_or(0.0)
}
