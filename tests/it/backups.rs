//! The `backups` collector on real files: created, aged through their modification times and
//! deleted, read through pgkpi's /metrics. The files live in a directory of the test's own.

use std::fs::File;
use std::time::{Duration, SystemTime};

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics, TempDir};

const T: &str = "bk";
const HOUR: u64 = 3600;
const DAY: u64 = 86400;

/// Writes `name` with `size` bytes, last modified `age` ago.
fn backup(dir: &TempDir, name: &str, size: usize, age: Duration) {
    let path = dir.write(name, &"x".repeat(size));
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// Ages are read at collection time, so compare within a few seconds.
fn near(value: Option<f64>, expected: u64) -> bool {
    value.is_some_and(|v| (v - expected as f64).abs() < 30.0)
}

#[test]
fn newest_backup_age_size_and_count_follow_the_files() {
    let (cluster, db) = Cluster::shared_database("backups");
    let dir = TempDir::new("backups");
    backup(&dir, "fixia_full_3.dump", 3000, Duration::from_secs(HOUR));
    backup(
        &dir,
        "fixia_full_2.dump",
        2000,
        Duration::from_secs(10 * DAY),
    );
    backup(
        &dir,
        "fixia_full_1.dump",
        1000,
        Duration::from_secs(40 * DAY),
    );
    backup(&dir, "unrelated.log", 99, Duration::from_secs(60));
    let marker = dir.0.join("restore-tested");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .only_builtin(&["server", "backups"])
        .interval("backups", "1s")
        .set("backups", "directory", dir.0.display().to_string())
        .set("backups", "pattern", "fixia_full_*.dump")
        .set("backups", "retention", "30d")
        .set(
            "backups",
            "restore_test_marker",
            marker.display().to_string(),
        )
        .build();
    let exporter = Exporter::start(&config);
    let first = exporter.wait_for(Duration::from_secs(30), "backup metrics", |m| {
        m.of(T, "pg_backup_files", &[]).is_some()
    });
    assert!(
        near(first.of(T, "pg_backup_newest_age_seconds", &[]), HOUR),
        "{}",
        first.text
    );
    assert_eq!(
        first.of(T, "pg_backup_newest_size_bytes", &[]),
        Some(3000.0)
    );
    assert_eq!(
        first.of(T, "pg_backup_files", &[]),
        Some(2.0),
        "the 40-day-old one is past retention"
    );
    assert_eq!(first.of(T, "pg_backup_size_bytes", &[]), Some(5000.0));
    assert_eq!(
        first.of(T, "pg_backup_restore_test_age_seconds", &[]),
        None,
        "no marker yet"
    );

    // The newest is deleted (or never written): the next one is now the newest, 10 days old;
    // a restore test ran 36 days ago.
    std::fs::remove_file(dir.0.join("fixia_full_3.dump")).unwrap();
    backup(&dir, "restore-tested", 0, Duration::from_secs(36 * DAY));
    let after = exporter.wait_for(
        Duration::from_secs(30),
        "the deletion and the marker",
        |m: &Metrics| {
            m.of(T, "pg_backup_files", &[]) == Some(1.0)
                && m.of(T, "pg_backup_restore_test_age_seconds", &[]).is_some()
        },
    );
    assert!(
        near(after.of(T, "pg_backup_newest_age_seconds", &[]), 10 * DAY),
        "{}",
        after.text
    );
    assert_eq!(
        after.of(T, "pg_backup_newest_size_bytes", &[]),
        Some(2000.0)
    );
    assert!(near(
        after.of(T, "pg_backup_restore_test_age_seconds", &[]),
        36 * DAY
    ));

    // Every backup gone: no newest, none kept.
    std::fs::remove_file(dir.0.join("fixia_full_2.dump")).unwrap();
    std::fs::remove_file(dir.0.join("fixia_full_1.dump")).unwrap();
    let none = exporter.wait_for(Duration::from_secs(30), "no backups", |m| {
        m.of(T, "pg_backup_files", &[]) == Some(0.0)
    });
    assert_eq!(none.of(T, "pg_backup_newest_age_seconds", &[]), None);
}
