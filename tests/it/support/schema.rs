//! The application's schema: `fixtures/baseline.sql` and the migrations in `migrations/`.
//!
//! Migration 001 creates the cluster-wide role `pgkpi` and alters its settings, 001 and 008
//! grant to it: two sessions doing that at the same moment collide ("tuple concurrently
//! updated"). Every area applies migrations on the one shared cluster, so every migration
//! file is applied under one lock of the whole test binary ([`apply_migration`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{repo_path, Cluster};

/// migrations/0*.sql in file-name order (the order they must be applied in).
pub fn migration_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("migrations"))
        .expect("migrations/")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with('0') && name.ends_with(".sql")
        })
        .collect();
    files.sort();
    files
}

/// Applies one migration file and returns how long it took; one at a time in the whole test
/// binary (see the module's documentation).
pub fn apply_migration(cluster: &Cluster, db: &str, file: &Path) -> Duration {
    static CLUSTER_WIDE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CLUSTER_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    cluster.psql_file(db, file, &[]);
    started.elapsed()
}

/// A database of the test's own with the baseline and the given migrations (paths from the
/// repository root) applied.
pub fn database_with(cluster: &Cluster, prefix: &str, migrations: &[&str]) -> String {
    let db = cluster.create_database(prefix);
    cluster.psql_file(&db, repo_path("fixtures/baseline.sql"), &[]);
    for file in migrations {
        apply_migration(cluster, &db, &repo_path(file));
    }
    db
}

/// A database of the test's own with the baseline and every migration applied.
pub fn app_database(cluster: &Cluster, prefix: &str) -> String {
    let db = cluster.create_database(prefix);
    cluster.psql_file(&db, repo_path("fixtures/baseline.sql"), &[]);
    let migrations = migration_files();
    assert!(migrations.len() >= 8, "migrations/ holds {migrations:?}");
    for file in migrations {
        apply_migration(cluster, &db, &file);
    }
    db
}
