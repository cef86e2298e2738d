//! The `[backups]` configuration: where the backups are read from (a directory of dumps, or a
//! JSON listing pgBackRest or WAL-G wrote) and where the restore-test marker is. Pure
//! configuration: validated by `check-config` without touching the files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// `[backups]`: one source of backups. Either files in `directory` whose names match `pattern`
/// (only stat'ed, never opened), or the JSON a backup tool wrote about its repository
/// (`pgbackrest_info`, `walg_backup_list`), so pgkpi never needs the repository's credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupsConfig {
    /// The directory the full backups land in (e.g. where a daily pg_dump writes). Unset: the
    /// `backups` collector exports nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// File names that are backups: `*` matches any run of characters, `?` one character,
    /// e.g. "fixia_full_*.dump".
    pub pattern: String,
    /// A file holding `pgbackrest info --output=json`, rewritten by the backup's timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgbackrest_info: Option<PathBuf>,
    /// The stanza to read from `pgbackrest_info`; unset: the file must hold exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stanza: Option<String>,
    /// A file holding `wal-g backup-list --json --detail`, rewritten by the backup's timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walg_backup_list: Option<PathBuf>,
    /// Backups newer than this count as kept (`pg_backup_files`), e.g. "30d".
    #[serde(with = "duration")]
    pub retention: Duration,
    /// A file whose modification time is the last successful restore test (`touch` it when
    /// a test restore succeeds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test_marker: Option<PathBuf>,
    /// The target whose `target` label the backup metrics carry; default: the first
    /// PostgreSQL target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        BackupsConfig {
            directory: None,
            pattern: "*".to_string(),
            pgbackrest_info: None,
            stanza: None,
            walg_backup_list: None,
            retention: Duration::from_secs(30 * 86400),
            restore_test_marker: None,
            target: None,
        }
    }
}

/// Where the `backups` collector reads the backups from: exactly one per `[backups]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source<'a> {
    /// Files in a directory, by modification time and size.
    Directory { path: &'a Path, pattern: &'a str },
    /// `pgbackrest info --output=json` saved to a file.
    PgBackRest {
        file: &'a Path,
        stanza: Option<&'a str>,
    },
    /// `wal-g backup-list --json --detail` saved to a file.
    WalG { file: &'a Path },
}

impl Source<'_> {
    /// The configuration key the source is set by, for messages.
    pub fn key(&self) -> &'static str {
        match self {
            Source::Directory { .. } => "backups.directory",
            Source::PgBackRest { .. } => "backups.pgbackrest_info",
            Source::WalG { .. } => "backups.walg_backup_list",
        }
    }

    /// The directory or file read, for messages.
    pub fn path(&self) -> &Path {
        match self {
            Source::Directory { path, .. } => path,
            Source::PgBackRest { file, .. } | Source::WalG { file } => file,
        }
    }
}

impl BackupsConfig {
    /// The sources that are set, in the order of the keys (more than one is a configuration
    /// error that `validate` reports).
    fn sources(&self) -> Vec<Source<'_>> {
        let mut found = Vec::new();
        if let Some(path) = &self.directory {
            found.push(Source::Directory {
                path,
                pattern: &self.pattern,
            });
        }
        if let Some(file) = &self.pgbackrest_info {
            found.push(Source::PgBackRest {
                file,
                stanza: self.stanza.as_deref(),
            });
        }
        if let Some(file) = &self.walg_backup_list {
            found.push(Source::WalG { file });
        }
        found
    }

    /// The one source of a validated configuration; None when `[backups]` sets none (the
    /// collector then exports nothing).
    pub fn source(&self) -> Option<Source<'_>> {
        self.sources().into_iter().next()
    }

    pub fn validate(&self) -> Result<(), String> {
        let sources = self.sources();
        if sources.len() > 1 {
            let keys: Vec<&str> = sources.iter().map(Source::key).collect();
            return Err(format!(
                "{} are {} set, but one [backups] section reads one source; keep one of them \
                 (the tool that makes the backups: its JSON file, or the directory its dumps land in)",
                keys.join(" and "),
                if keys.len() == 2 { "both" } else { "all" }
            ));
        }
        if self.stanza.is_some() && self.pgbackrest_info.is_none() {
            return Err(
                "backups.stanza is set but backups.pgbackrest_info is not; the stanza picks one \
                 stanza of the pgBackRest info file, so set both or remove stanza"
                    .into(),
            );
        }
        if self.stanza.as_deref().is_some_and(str::is_empty) {
            return Err("backups.stanza must not be empty; name the stanza, e.g. \"main\"".into());
        }
        if self.pattern.is_empty() || self.pattern.contains('/') {
            return Err(format!(
                "backups.pattern \"{}\" must be a non-empty file name pattern without '/', e.g. \"app_full_*.dump\"",
                self.pattern
            ));
        }
        if self.retention.is_zero() {
            return Err("backups.retention must be a positive duration, e.g. \"30d\"".into());
        }
        if sources.is_empty() && self.restore_test_marker.is_some() {
            return Err(
                "backups.restore_test_marker is set but no backup source is; set backups.directory, \
                 backups.pgbackrest_info or backups.walg_backup_list too"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Whether a file name matches a pattern of `*` (any run, also empty) and `?` (one character).
/// A matcher of our own: patterns are single file names, so a glob crate's directory
/// walking, classes and escapes would be unused.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last '*' was and which name position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::{matches, BackupsConfig, Source};

    fn config(toml_text: &str) -> BackupsConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn one_source_per_section() {
        let two = config("directory = \"/b\"\npgbackrest_info = \"/i.json\"\n");
        assert_eq!(
            two.validate().unwrap_err(),
            "backups.directory and backups.pgbackrest_info are both set, but one [backups] \
             section reads one source; keep one of them (the tool that makes the backups: its \
             JSON file, or the directory its dumps land in)"
        );
        let three = config(
            "directory = \"/b\"\npgbackrest_info = \"/i.json\"\nwalg_backup_list = \"/w.json\"\n",
        );
        assert!(three.validate().unwrap_err().starts_with(
            "backups.directory and backups.pgbackrest_info and backups.walg_backup_list are all set"
        ));
        let tools = config("pgbackrest_info = \"/i.json\"\nwalg_backup_list = \"/w.json\"\n");
        assert!(tools.validate().is_err());

        let walg = config("walg_backup_list = \"/w.json\"\nrestore_test_marker = \"/m\"\n");
        walg.validate().unwrap();
        assert_eq!(
            walg.source(),
            Some(Source::WalG {
                file: "/w.json".as_ref()
            })
        );
        let pgbackrest = config("pgbackrest_info = \"/i.json\"\nstanza = \"main\"\n");
        pgbackrest.validate().unwrap();
        assert_eq!(
            pgbackrest.source(),
            Some(Source::PgBackRest {
                file: "/i.json".as_ref(),
                stanza: Some("main")
            })
        );
        assert_eq!(config("").source(), None);
    }

    #[test]
    fn stanza_and_marker_need_their_source() {
        let stray = config("directory = \"/b\"\nstanza = \"main\"\n");
        assert!(stray
            .validate()
            .unwrap_err()
            .starts_with("backups.stanza is set but backups.pgbackrest_info is not"));
        let empty = config("pgbackrest_info = \"/i.json\"\nstanza = \"\"\n");
        assert!(empty.validate().is_err());
        let marker = config("restore_test_marker = \"/m\"\n");
        assert!(marker
            .validate()
            .unwrap_err()
            .starts_with("backups.restore_test_marker is set but no backup source is"));
    }

    #[test]
    fn wildcards_match_file_names() {
        assert!(matches("fixia_full_*.dump", "fixia_full_2026-12-04.dump"));
        assert!(matches("fixia_full_*.dump", "fixia_full_.dump"));
        assert!(!matches(
            "fixia_full_*.dump",
            "fixia_full_2026-12-04.dump.tmp"
        ));
        assert!(!matches("fixia_full_*.dump", "other_full_1.dump"));
        assert!(matches("*", "anything"));
        assert!(matches("a?c*", "abcdef"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*.dump*", "x.dump.gz"));
    }
}
