//! The `[backups]` configuration: where full backups land and where the restore-test marker
//! is. Pure configuration: validated by `check-config` without touching the files.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// `[backups]`: full backups are files in `directory` whose names match `pattern`; they are
/// only stat'ed, never opened.
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
            retention: Duration::from_secs(30 * 86400),
            restore_test_marker: None,
            target: None,
        }
    }
}

impl BackupsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.pattern.is_empty() || self.pattern.contains('/') {
            return Err(format!(
                "backups.pattern \"{}\" must be a non-empty file name pattern without '/', e.g. \"app_full_*.dump\"",
                self.pattern
            ));
        }
        if self.retention.is_zero() {
            return Err("backups.retention must be a positive duration, e.g. \"30d\"".into());
        }
        if self.directory.is_none() && self.restore_test_marker.is_some() {
            return Err(
                "backups.restore_test_marker is set but backups.directory is not; set both".into(),
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
    use super::matches;

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
