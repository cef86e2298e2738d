//! `backups`: the newest full backup's age and size, how many are kept within retention, and
//! the age of the last restore test. The backups come from one source (`[backups]`): a
//! directory of dump files (stat'ed, never opened: `directory.rs`), or the JSON that pgBackRest
//! (`pgbackrest.rs`) or WAL-G (`walg.rs`) wrote about its repository. Every source yields the
//! same list of [`Backup`]s, summarised in one place. Reading runs on the blocking pool. The
//! WAL-archiving half of a backup strategy is `pg_stat_archiver_*` (the `archiver` collector).

mod directory;
mod pgbackrest;
pub mod settings;
mod walg;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use self::settings::{BackupsConfig, Source};
use super::{BuildContext, CollectError, CollectFuture, Collector, Lane, Session, Spec};
use crate::config::TargetKind;
use crate::metric::{describe_all, Family, FamilyDesc};

/// Largest JSON listing read. pgBackRest's info and WAL-G's detail take under 1 KiB per
/// backup (pgBackRest 2.45: 1.8 KiB for a stanza with three), so this holds thousands; a
/// larger file is a mistake (the wrong file, a log) that must not be read into memory every
/// minute.
const MAX_JSON_BYTES: u64 = 16 << 20;

pub fn spec() -> Spec {
    Spec {
        name: "backups",
        description: "Full backups (newest age and size, count within retention) from [backups] directory, or from the JSON pgBackRest or WAL-G wrote, and the last restore test; only on the target [backups] names.",
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
    NEWEST_AGE = gauge("pg_backup_newest_age_seconds", &["target"], "Age of the newest full backup: the file's modification time, or when pgBackRest/WAL-G finished it; absent when there is none.");
    NEWEST_SIZE = gauge("pg_backup_newest_size_bytes", &["target"], "Size of the newest full backup: the file, or its compressed size in the pgBackRest/WAL-G repository; a sudden drop means an incomplete backup.");
    FILES = gauge("pg_backup_files", &["target"], "Full backups newer than [backups] retention (files in the directory, or full backups in the pgBackRest/WAL-G listing).");
    TOTAL_SIZE = gauge("pg_backup_size_bytes", &["target"], "Total size of the backups newer than [backups] retention: the files, or with pgBackRest/WAL-G each backup's own compressed size in the repository, differential and incremental ones included, WAL not.");
    INFO_AGE = gauge("pg_backup_info_age_seconds", &["target"], "Time since the pgBackRest/WAL-G JSON file ([backups] pgbackrest_info or walg_backup_list) was written (modification time); longer than the backup timer's period means the job that writes it stopped and the other pg_backup_* values are as of then. Absent for a directory.");
    RESTORE_TEST_AGE = gauge("pg_backup_restore_test_age_seconds", &["target"], "Time since the last successful restore test (modification time of [backups] restore_test_marker); absent when the marker does not exist.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        NEWEST_AGE,
        NEWEST_SIZE,
        FILES,
        TOTAL_SIZE,
        INFO_AGE,
        RESTORE_TEST_AGE,
    ])
}

/// One backup as its source lists it.
#[derive(Debug, Clone, PartialEq)]
struct Backup {
    /// When it finished: the file's modification time, or the tool's stop/finish time.
    stop: SystemTime,
    /// Its own size: the file, or what it stored in the repository (compressed; for a
    /// differential or incremental backup only its changes).
    size: u64,
    /// A full backup, restorable on its own (every file of a directory counts as one).
    full: bool,
}

/// Why a source could not be read. The collector names the source's key and path before it.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error("cannot list it ({0})")]
    List(std::io::Error),
    #[error("cannot read it ({0})")]
    Read(std::io::Error),
    #[error("is not a regular file")]
    NotAFile,
    #[error(
        "is {0} bytes, more than the {MAX_JSON_BYTES} bytes pgkpi reads; is it the right file?"
    )]
    TooLarge(u64),
    #[error("is not the JSON of `{command}` ({error})")]
    Malformed {
        command: &'static str,
        error: serde_json::Error,
    },
    #[error("holds no stanza; write it with `pgbackrest --stanza=<name> info --output=json`")]
    NoStanza,
    #[error("holds the stanzas {0}; set backups.stanza to the one to read")]
    SeveralStanzas(String),
    #[error("has no stanza \"{wanted}\" (it holds {found}); fix backups.stanza")]
    StanzaMissing { wanted: String, found: String },
    #[error("stanza \"{stanza}\": pgBackRest reports status {code} ({message})")]
    StanzaStatus {
        stanza: String,
        code: i64,
        message: String,
    },
    #[error("backup \"{name}\": {problem}")]
    Backup { name: String, problem: String },
}

struct Backups {
    /// None on every target but the one `[backups]` names.
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
    let Some(source) = config.source() else {
        return Ok(Vec::new());
    };
    let (backups, written) = list(source).map_err(|e| {
        CollectError::failed(format!("{} {}: {e}", source.key(), source.path().display()))
    })?;
    let mut out = summarize(&backups, now, config.retention);
    if let Some(written) = written {
        out.push(INFO_AGE.family().with(&[], age(now, written)));
    }
    if let Some(marker) = &config.restore_test_marker {
        if let Some(modified) = modified(marker) {
            out.push(RESTORE_TEST_AGE.family().with(&[], age(now, modified)));
        }
    }
    Ok(out)
}

/// The backups a source lists, and for a JSON file when it was written.
fn list(source: Source) -> Result<(Vec<Backup>, Option<SystemTime>), SourceError> {
    match source {
        Source::Directory { path, pattern } => Ok((directory::list(path, pattern)?, None)),
        Source::PgBackRest { file, stanza } => {
            let (json, written) = read_json_file(file)?;
            Ok((pgbackrest::parse(&json, stanza)?, Some(written)))
        }
        Source::WalG { file } => {
            let (json, written) = read_json_file(file)?;
            Ok((walg::parse(&json)?, Some(written)))
        }
    }
}

/// The newest full backup, and the backups within `retention`: full ones counted, all sized.
fn summarize(backups: &[Backup], now: SystemTime, retention: Duration) -> Vec<Family> {
    let kept: Vec<&Backup> = backups
        .iter()
        .filter(|b| age(now, b.stop) <= retention.as_secs_f64())
        .collect();
    let mut out = vec![
        FILES
            .family()
            .with(&[], kept.iter().filter(|b| b.full).count() as f64),
        TOTAL_SIZE
            .family()
            .with(&[], kept.iter().map(|b| b.size).sum::<u64>() as f64),
    ];
    if let Some(newest) = backups.iter().filter(|b| b.full).max_by_key(|b| b.stop) {
        out.push(NEWEST_AGE.family().with(&[], age(now, newest.stop)));
        out.push(NEWEST_SIZE.family().with(&[], newest.size as f64));
    }
    out
}

/// A JSON file's bytes, at most [`MAX_JSON_BYTES`], and its modification time.
fn read_json_file(path: &Path) -> Result<(Vec<u8>, SystemTime), SourceError> {
    let file = std::fs::File::open(path).map_err(SourceError::Read)?;
    let meta = file.metadata().map_err(SourceError::Read)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile);
    }
    if meta.len() > MAX_JSON_BYTES {
        return Err(SourceError::TooLarge(meta.len()));
    }
    let written = meta.modified().map_err(SourceError::Read)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the stat and the read (a writer without rename).
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(SourceError::Read)?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(SourceError::TooLarge(bytes.len() as u64));
    }
    Ok((bytes, written))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86400;

    fn value(families: &[Family], name: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.samples.first().map(|s| s.value))
    }

    #[test]
    fn newest_is_the_newest_full_and_retention_sizes_every_kind() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * DAY);
        let at = |days_ago: u64| now - Duration::from_secs(days_ago * DAY);
        let backups = [
            Backup {
                stop: at(40),
                size: 1000,
                full: true,
            },
            Backup {
                stop: at(8),
                size: 900,
                full: true,
            },
            Backup {
                stop: at(1),
                size: 50,
                full: false,
            },
        ];
        let out = summarize(&backups, now, Duration::from_secs(30 * DAY));
        assert_eq!(
            value(&out, "pg_backup_newest_age_seconds"),
            Some((8 * DAY) as f64)
        );
        assert_eq!(value(&out, "pg_backup_newest_size_bytes"), Some(900.0));
        assert_eq!(value(&out, "pg_backup_files"), Some(1.0));
        assert_eq!(value(&out, "pg_backup_size_bytes"), Some(950.0));

        let none = summarize(&backups[2..], now, Duration::from_secs(30 * DAY));
        assert_eq!(value(&none, "pg_backup_newest_age_seconds"), None);
        assert_eq!(value(&none, "pg_backup_files"), Some(0.0));
    }

    #[test]
    fn a_json_file_is_read_whole_up_to_the_bound() {
        let dir = std::env::temp_dir().join(format!("pgkpi-backups-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.json");
        std::fs::write(&small, "[]").unwrap();
        assert_eq!(read_json_file(&small).unwrap().0, b"[]");
        let large = dir.join("large.json");
        std::fs::File::create(&large)
            .unwrap()
            .set_len(MAX_JSON_BYTES + 1)
            .unwrap();
        let err = read_json_file(&large).unwrap_err().to_string();
        assert!(err.contains("16777217 bytes, more than"), "{err}");
        let missing = read_json_file(&dir.join("missing.json")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read it ("),
            "{missing}"
        );
        assert!(matches!(
            read_json_file(&dir).unwrap_err(),
            SourceError::NotAFile | SourceError::Read(_)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
