//! `backups`: the full backups in `[backups] directory` (newest one's age and size, how many
//! are kept within retention) and the age of the last restore test, from file times only.
//! Files are stat'ed, never opened; reading the directory runs on the blocking pool. The
//! WAL-archiving half of a backup strategy is `pg_stat_archiver_*` (the `archiver`
//! collector).

pub mod settings;

use std::path::Path;
use std::time::{Duration, SystemTime};

use self::settings::{matches, BackupsConfig};
use super::{BuildContext, CollectError, CollectFuture, Collector, Lane, Session, Spec};
use crate::config::TargetKind;
use crate::metric::{describe_all, Family, FamilyDesc};

/// Most directory entries looked at per run: a backup directory holds tens of files; one with
/// millions is a mistake that must not stall the blocking pool.
const MAX_ENTRIES: usize = 100_000;

pub fn spec() -> Spec {
    Spec {
        name: "backups",
        description: "Full backups in [backups] directory (newest age and size, count within retention) and the last restore test, from file times; only on the target [backups] names.",
        default_interval: Duration::from_secs(60),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |context: &BuildContext| {
            Box::new(Backups {
                config: context.backups.cloned(),
            })
        },
    }
}

crate::metric::metrics! {
    NEWEST_AGE = gauge("pg_backup_newest_age_seconds", &["target"], "Age of the newest full backup file (by modification time); absent when there is none.");
    NEWEST_SIZE = gauge("pg_backup_newest_size_bytes", &["target"], "Size of the newest full backup file; a sudden drop means an incomplete dump.");
    FILES = gauge("pg_backup_files", &["target"], "Full backup files newer than [backups] retention.");
    TOTAL_SIZE = gauge("pg_backup_size_bytes", &["target"], "Total size of the full backup files newer than [backups] retention.");
    RESTORE_TEST_AGE = gauge("pg_backup_restore_test_age_seconds", &["target"], "Time since the last successful restore test (modification time of [backups] restore_test_marker); absent when the marker does not exist.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[NEWEST_AGE, NEWEST_SIZE, FILES, TOTAL_SIZE, RESTORE_TEST_AGE])
}

struct Backups {
    /// None on every target but the one `[backups]` names, or when no directory is set.
    config: Option<BackupsConfig>,
}

impl Collector for Backups {
    fn collect<'a>(&'a mut self, _session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let Some(config) = self.config.clone() else {
                return Ok(Vec::new());
            };
            tokio::task::spawn_blocking(move || scan(&config, SystemTime::now()))
                .await
                .map_err(|e| CollectError::failed(format!("backup scan did not finish: {e}")))?
        })
    }
}

/// Seconds from `then` to `now`; 0 for a time in the future (clock skew, a copied file).
fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).unwrap_or_default().as_secs_f64()
}

fn scan(config: &BackupsConfig, now: SystemTime) -> Result<Vec<Family>, CollectError> {
    let Some(directory) = &config.directory else {
        return Ok(Vec::new());
    };
    let entries = std::fs::read_dir(directory).map_err(|e| {
        CollectError::failed(format!(
            "backups.directory {}: cannot list it ({e})",
            directory.display()
        ))
    })?;
    let mut newest: Option<(SystemTime, u64)> = None;
    let (mut kept, mut kept_bytes) = (0u64, 0u64);
    for entry in entries.take(MAX_ENTRIES).flatten() {
        let name = entry.file_name();
        if !matches(&config.pattern, &name.to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if newest.is_none_or(|(t, _)| modified > t) {
            newest = Some((modified, meta.len()));
        }
        if age(now, modified) <= config.retention.as_secs_f64() {
            kept += 1;
            kept_bytes += meta.len();
        }
    }
    let mut out = vec![
        FILES.family().with(&[], kept as f64),
        TOTAL_SIZE.family().with(&[], kept_bytes as f64),
    ];
    if let Some((modified, size)) = newest {
        out.push(NEWEST_AGE.family().with(&[], age(now, modified)));
        out.push(NEWEST_SIZE.family().with(&[], size as f64));
    }
    if let Some(marker) = &config.restore_test_marker {
        if let Some(modified) = modified(marker) {
            out.push(RESTORE_TEST_AGE.family().with(&[], age(now, modified)));
        }
    }
    Ok(out)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}
