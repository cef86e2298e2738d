//! The collector is skipped, with the fix in the log, when pg_stat_statements is not created
//! in the database or not in shared_preload_libraries.

use std::time::Duration;

use super::{config, database};
use crate::support::{Cluster, Exporter};

/// Waits until the statements collector of `target` is skipped for `reason`.
fn wait_skipped(exporter: &Exporter, target: &str, reason: &str) {
    exporter.wait_for(Duration::from_secs(20), "the skip", |m| {
        m.value(
            "pgkpi_collector_skipped",
            &[
                ("target", target),
                ("collector", "statements"),
                ("reason", reason),
            ],
        ) == Some(1.0)
    });
}

#[test]
fn missing_extension_is_skipped_with_the_fix() {
    let (cluster, db) = Cluster::shared_database("stmt_missing");
    let exporter = Exporter::start(&config("missing", &cluster.dsn(&db), ""));
    wait_skipped(&exporter, "missing", "extension_missing");
    assert!(exporter
        .logs()
        .contains("CREATE EXTENSION pg_stat_statements"));
}

#[test]
fn not_preloaded_is_skipped_with_the_fix() {
    let cluster = Cluster::start();
    let db = database(&cluster, "stmt_preload");
    cluster.psql("postgres", "ALTER SYSTEM RESET shared_preload_libraries");
    cluster.stop();
    cluster.resume();
    let exporter = Exporter::start(&config("preload", &cluster.dsn(&db), ""));
    wait_skipped(&exporter, "preload", "not_preloaded");
    assert!(exporter.logs().contains("shared_preload_libraries"));
}
