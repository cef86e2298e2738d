//! The `backups` collector on real files: dumps created, aged through their modification times
//! and deleted; and a real pgBackRest (Debian's package, installed by scripts/test.sh) backing
//! up a cluster of the test's own into a local repository, its `info --output=json` saved to a
//! file as a backup timer would. Read through pgkpi's /metrics. The files live in directories
//! of the test's own.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{run_ok, Cluster, Exporter, ExporterConfig, Metrics, TempDir};

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

/// Runs pgBackRest with the cluster's configuration, as the cluster's OS user (pgBackRest
/// must read the data directory and write a repository the server's user owns).
fn pgbackrest(cluster: &Cluster, args: &[&str]) -> String {
    let config = format!("--config={}", cluster.dir.join("pgbackrest.conf").display());
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "pgbackrest"]);
        cmd
    } else {
        Command::new("pgbackrest")
    };
    cmd.arg(config).args(args);
    run_ok(cmd, &format!("pgbackrest {}", args.join(" ")))
}

/// A repository under the cluster's directory. No WAL archiving (`archive-check=n`): the test
/// is about what the info says of the backups, not about point-in-time recovery.
fn configure_pgbackrest(cluster: &Cluster) {
    let dir = cluster.dir.display();
    let conf = format!(
        "[global]\n\
         repo1-path={dir}/pgbackrest-repo\n\
         repo1-retention-full=2\n\
         lock-path={dir}/pgbackrest-lock\n\
         log-path={dir}\n\
         log-level-file=off\n\
         log-level-console=warn\n\
         start-fast=y\n\
         archive-check=n\n\
         [main]\n\
         pg1-path={dir}/data\n\
         pg1-socket-path={dir}\n\
         pg1-port={port}\n\
         pg1-user=postgres\n",
        port = cluster.port
    );
    let path = cluster.dir.join("pgbackrest.conf");
    std::fs::write(&path, conf).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        run_ok(
            {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&path);
                chown
            },
            "chown pgbackrest.conf",
        );
    }
    pgbackrest(cluster, &["--stanza=main", "stanza-create"]);
}

/// What the backup timer does after a backup: `pgbackrest info --output=json` into a file,
/// through a temporary file and a rename so pgkpi never reads half of it. Returns the parsed
/// JSON.
fn save_info(cluster: &Cluster, file: &Path) -> serde_json::Value {
    let json = pgbackrest(cluster, &["info", "--output=json"]);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &json).unwrap();
    std::fs::rename(&tmp, file).unwrap();
    serde_json::from_str(&json).unwrap()
}

fn seconds_since(epoch: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(epoch)
}

#[test]
fn pgbackrest_backups_are_read_from_the_saved_info() {
    // A cluster of the test's own: a backup forces a checkpoint and reads every file.
    let cluster = Cluster::start();
    configure_pgbackrest(&cluster);
    pgbackrest(&cluster, &["--stanza=main", "--type=full", "backup"]);
    let dir = TempDir::new("pgbackrest");
    let info_file = dir.0.join("pgbackrest-info.json");
    let info = save_info(&cluster, &info_file);
    let full = &info[0]["backup"][0];
    assert_eq!(full["type"], "full", "{info}");
    let full_stop = full["timestamp"]["stop"].as_u64().unwrap();
    let full_size = full["info"]["repository"]["delta"].as_u64().unwrap();
    assert!(full_size > 0, "{info}");

    let config = ExporterConfig::new(T, &cluster.dsn("postgres"))
        .only_builtin(&["server", "backups"])
        .interval("server", "1s")
        .interval("backups", "1s")
        .set(
            "backups",
            "pgbackrest_info",
            info_file.display().to_string(),
        )
        .set("backups", "retention", "30d")
        .build();
    let exporter = Exporter::start(&config);
    let first = exporter.wait_for(Duration::from_secs(30), "backup metrics", |m| {
        m.of(T, "pg_backup_files", &[]).is_some()
    });
    let age = first.of(T, "pg_backup_newest_age_seconds", &[]);
    assert!(
        near(age, seconds_since(full_stop)),
        "{age:?}\n{}",
        first.text
    );
    assert!(age.unwrap() < 300.0, "the backup just ran: {age:?}");
    assert_eq!(
        first.of(T, "pg_backup_newest_size_bytes", &[]),
        Some(full_size as f64),
        "the repository size pgBackRest reports"
    );
    assert_eq!(first.of(T, "pg_backup_files", &[]), Some(1.0));
    assert_eq!(
        first.of(T, "pg_backup_size_bytes", &[]),
        Some(full_size as f64)
    );
    assert!(near(first.of(T, "pg_backup_info_age_seconds", &[]), 0));

    // A differential backup: not a full one (newest and count unchanged), but its own size
    // in the repository counts in the total kept.
    pgbackrest(&cluster, &["--stanza=main", "--type=diff", "backup"]);
    let info = save_info(&cluster, &info_file);
    let diff = &info[0]["backup"][1];
    assert_eq!(diff["type"], "diff", "{info}");
    let diff_size = diff["info"]["repository"]["delta"].as_u64().unwrap();
    let total = (full_size + diff_size) as f64;
    let after = exporter.wait_for(Duration::from_secs(30), "the diff backup", |m| {
        m.of(T, "pg_backup_size_bytes", &[]) == Some(total)
    });
    assert_eq!(after.of(T, "pg_backup_files", &[]), Some(1.0));
    assert_eq!(
        after.of(T, "pg_backup_newest_size_bytes", &[]),
        Some(full_size as f64)
    );

    // The timer writes something else (a truncated file): the collector fails with the file
    // and the problem in the log; the exporter and the other collectors go on.
    std::fs::write(&info_file, "[{\"archive\":[").unwrap();
    let broken = exporter.wait_for(
        Duration::from_secs(30),
        "the backups collector failing",
        |m| {
            m.value(
                "pgkpi_collector_up",
                &[("target", T), ("collector", "backups")],
            ) == Some(0.0)
        },
    );
    assert_eq!(
        broken.value(
            "pgkpi_collector_up",
            &[("target", T), ("collector", "server")]
        ),
        Some(1.0)
    );
    assert_eq!(broken.of(T, "pg_up", &[]), Some(1.0));
    let logs = exporter.logs();
    let expected = format!(
        "backups.pgbackrest_info {}: is not the JSON of `pgbackrest info --output=json`",
        info_file.display()
    );
    assert!(logs.contains(&expected), "{expected}\nnot in:\n{logs}");
}

/// WAL-G is not packaged in Debian: its listing is the fixture written from WAL-G's documented
/// format (tests/fixtures/backups/README.md). What this checks live is the configuration key,
/// the file read and the summary through pgkpi's /metrics.
#[test]
fn walg_listing_is_read_from_the_saved_file() {
    let (cluster, db) = Cluster::shared_database("walg");
    let dir = TempDir::new("walg");
    let listing = dir.0.join("walg-backups.json");
    std::fs::copy(
        crate::support::repo_path("tests/fixtures/backups/walg-backup-list-detail.json"),
        &listing,
    )
    .unwrap();
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .only_builtin(&["server", "backups"])
        .interval("backups", "1s")
        .set("backups", "walg_backup_list", listing.display().to_string())
        // Ten years: the fixture's backups (November 2026) stay within it.
        .set("backups", "retention", "3650d")
        .build();
    let exporter = Exporter::start(&config);
    let m = exporter.wait_for(Duration::from_secs(30), "backup metrics", |m| {
        m.of(T, "pg_backup_files", &[]).is_some()
    });
    // The newest full backup, base_000000010000000000000020, finished 2026-11-22T02:15:30Z;
    // the delta after base_...02 is not a full backup.
    assert!(
        near(
            m.of(T, "pg_backup_newest_age_seconds", &[]),
            seconds_since(1795313730)
        ),
        "{}",
        m.text
    );
    assert_eq!(
        m.of(T, "pg_backup_newest_size_bytes", &[]),
        Some(1700000000.0)
    );
    assert_eq!(m.of(T, "pg_backup_files", &[]), Some(3.0));
    assert_eq!(
        m.of(T, "pg_backup_size_bytes", &[]),
        Some((1684893052u64 + 52428800 + 1700000000) as f64)
    );
}
