//! The pgBackRest source: `pgbackrest info --output=json`, saved to a file by the backup's
//! timer. Only the fields read are declared; serde skips the rest, so newer pgBackRest
//! versions that add fields still parse. Shape checked against pgBackRest 2.45's own output
//! (tests/fixtures/backups/).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Backup, SourceError};

const COMMAND: &str = "pgbackrest info --output=json";

/// Stanza status codes that still describe the backups truthfully: "ok", and "no valid
/// backups" (a new stanza, or every backup expired: zero backups is the answer). The others
/// (missing stanza path or data, repositories that disagree, "other" for an unreadable
/// repository) mean the listing cannot be trusted, so the collector fails with pgBackRest's
/// message rather than export zero backups.
const STATUS_OK: i64 = 0;
const STATUS_NO_BACKUP: i64 = 2;

#[derive(Deserialize)]
struct Stanza {
    name: String,
    #[serde(default)]
    backup: Vec<BackupEntry>,
    status: Status,
}

#[derive(Deserialize)]
struct Status {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct BackupEntry {
    #[serde(rename = "type")]
    kind: BackupType,
    timestamp: Timestamps,
    info: Info,
}

/// pgBackRest's backup types; only a full one restores without another.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum BackupType {
    Full,
    Diff,
    Incr,
}

#[derive(Deserialize)]
struct Timestamps {
    /// Epoch seconds when the backup finished.
    stop: u64,
}

#[derive(Deserialize)]
struct Info {
    repository: Repository,
}

#[derive(Deserialize)]
struct Repository {
    /// Bytes this backup stored in the repository (compressed): for a full backup all of it,
    /// for diff/incr only what changed. `size` would count the files a diff/incr references
    /// in its full backup again, so summing it over a retention window double-counts.
    delta: u64,
}

/// The backups of `stanza`, or of the only stanza in the file when `stanza` is None.
pub(super) fn parse(json: &[u8], stanza: Option<&str>) -> Result<Vec<Backup>, SourceError> {
    let stanzas: Vec<Stanza> =
        serde_json::from_slice(json).map_err(|error| SourceError::Malformed {
            command: COMMAND,
            error,
        })?;
    let names = || {
        stanzas
            .iter()
            .map(|s| format!("\"{}\"", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen =
        match stanza {
            Some(wanted) => stanzas.iter().find(|s| s.name == wanted).ok_or_else(|| {
                SourceError::StanzaMissing {
                    wanted: wanted.to_string(),
                    found: if stanzas.is_empty() {
                        "none".to_string()
                    } else {
                        names()
                    },
                }
            })?,
            None => match stanzas.as_slice() {
                [] => return Err(SourceError::NoStanza),
                [only] => only,
                _ => return Err(SourceError::SeveralStanzas(names())),
            },
        };
    if chosen.status.code != STATUS_OK && chosen.status.code != STATUS_NO_BACKUP {
        return Err(SourceError::StanzaStatus {
            stanza: chosen.name.clone(),
            code: chosen.status.code,
            message: chosen.status.message.clone(),
        });
    }
    Ok(chosen
        .backup
        .iter()
        .map(|b| Backup {
            stop: SystemTime::UNIX_EPOCH + Duration::from_secs(b.timestamp.stop),
            size: b.info.repository.delta,
            full: b.kind == BackupType::Full,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of pgBackRest 2.45 (Debian 12), produced by hand on a PostgreSQL 15
    /// cluster: stanza "demo" with a full, a diff and an incr backup (gz compression, local
    /// repository), stanza "other" created on the same cluster and never backed up; then
    /// `pgbackrest info --output=json`.
    const TWO_STANZAS: &[u8] =
        include_bytes!("../../../tests/fixtures/backups/pgbackrest-2.45-two-stanzas.json");
    /// The same pgBackRest's `pgbackrest --stanza=ghost info --output=json` for a stanza that
    /// was never created (exit status 0, status code 1).
    const MISSING_STANZA: &[u8] =
        include_bytes!("../../../tests/fixtures/backups/pgbackrest-2.45-missing-stanza.json");

    fn at(epoch: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)
    }

    #[test]
    fn reads_every_backup_of_the_named_stanza() {
        let backups = parse(TWO_STANZAS, Some("demo")).unwrap();
        assert_eq!(
            backups,
            vec![
                Backup {
                    stop: at(1796470331),
                    size: 3043455,
                    full: true
                },
                Backup {
                    stop: at(1796470333),
                    size: 430,
                    full: false
                },
                Backup {
                    stop: at(1796470334),
                    size: 430,
                    full: false
                },
            ]
        );
        assert_eq!(parse(TWO_STANZAS, Some("other")).unwrap(), vec![]);
    }

    #[test]
    fn a_single_stanza_needs_no_name() {
        let demo_only = {
            let mut all: Vec<serde_json::Value> = serde_json::from_slice(TWO_STANZAS).unwrap();
            all.truncate(1);
            serde_json::to_vec(&all).unwrap()
        };
        assert_eq!(parse(&demo_only, None).unwrap().len(), 3);
    }

    #[test]
    fn stanza_problems_name_the_stanzas() {
        let several = parse(TWO_STANZAS, None).unwrap_err().to_string();
        assert_eq!(
            several,
            "holds the stanzas \"demo\", \"other\"; set backups.stanza to the one to read"
        );
        let missing = parse(TWO_STANZAS, Some("main")).unwrap_err().to_string();
        assert_eq!(
            missing,
            "has no stanza \"main\" (it holds \"demo\", \"other\"); fix backups.stanza"
        );
        let none = parse(b"[]", None).unwrap_err();
        assert!(matches!(none, SourceError::NoStanza), "{none}");
        let status = parse(MISSING_STANZA, None).unwrap_err().to_string();
        assert_eq!(
            status,
            "stanza \"ghost\": pgBackRest reports status 1 (missing stanza path)"
        );
    }

    #[test]
    fn malformed_json_says_what_was_expected() {
        let truncated = &TWO_STANZAS[..TWO_STANZAS.len() / 2];
        let err = parse(truncated, None).unwrap_err().to_string();
        assert!(
            err.starts_with("is not the JSON of `pgbackrest info --output=json` ("),
            "{err}"
        );
        // Text output saved by mistake (no --output=json).
        let text = parse(b"stanza: demo\n    status: ok\n", None).unwrap_err();
        assert!(matches!(text, SourceError::Malformed { .. }), "{text}");
    }
}
