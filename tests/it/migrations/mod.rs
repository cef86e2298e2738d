//! The migrations in `migrations/` against the fixtures in `fixtures/`, and the workload
//! generator `pgkpi-load` against both schemas (issue 4's acceptance tests).
//!
//! * One database is built once for the plan checks, as the contract in
//!   `fixtures/query_patterns.toml` describes: baseline, seed at scale 1, EXPLAIN every
//!   pattern, migrations 001..009 (timed), all of them again, seed again, EXPLAIN again.
//! * The queue and partition tests clone a template database that holds the baseline with all
//!   migrations applied and no data.
//! * The workload test runs the real `pgkpi-load` binary for 30 s against a baseline-only and
//!   a migrated database at the same time.
//!
//! Everything happens in databases of their own on the shared cluster. The migrations create
//! and alter the cluster-wide role `pgkpi`: every area applies them through
//! `support::schema::apply_migration`, one at a time.
//!
//! [`plans`] builds the plan-check database and checks the migrations and the query patterns,
//! [`queue`] drives the queue functions, [`claim`] checks the claim's plan and crash safety, [`partitions`] the partition maintenance, and
//! [`workload`] runs `pgkpi-load`. This module keeps what several of them use: the migration
//! files and the migrated template database.

mod claim;
mod partitions;
mod plans;
mod queue;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::support::{schema, Cluster};

/// migrations/0*.sql in file-name order (the order they must be applied in): all nine.
fn migration_files() -> Vec<PathBuf> {
    let files = schema::migration_files();
    assert_eq!(files.len(), 9, "expected migrations 001..009: {files:?}");
    files
}

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
