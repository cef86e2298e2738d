//! The WAL-G source: `wal-g backup-list --json --detail`, saved to a file by the backup's
//! timer. Only the fields read are declared; serde skips the rest. Written against WAL-G's
//! documented format (its `BackupTime` and `ExtendedMetadataDto`), not a live WAL-G, which is
//! not packaged in Debian.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Backup, SourceError};

const COMMAND: &str = "wal-g backup-list --json --detail";

/// What separates a delta backup's own name from its base's in WAL-G's backup names:
/// `base_<WAL segment>_D_<base's WAL segment>`. A name without it is a full backup (the
/// listing has no increment fields of its own).
const DELTA_MARK: &str = "_D_";

#[derive(Deserialize)]
struct Entry {
    backup_name: String,
    /// When the backup's sentinel was written to storage (the storage's clock; may carry an
    /// offset). Only used when `finish_time` is missing.
    #[serde(default)]
    time: Option<String>,
    /// When the backup finished (from its metadata.json, UTC). Go's zero time
    /// ("0001-01-01T00:00:00Z") when the backup has no metadata.
    #[serde(default)]
    finish_time: Option<String>,
    /// Bytes in storage (compressed); for a delta backup only the delta.
    #[serde(default)]
    compressed_size: u64,
}

pub(super) fn parse(json: &[u8]) -> Result<Vec<Backup>, SourceError> {
    // WAL-G prints nothing at all (exit status 0, "No backups found" on stderr) when the
    // storage holds no backup.
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let entries: Vec<Entry> =
        serde_json::from_slice(json).map_err(|error| SourceError::Malformed {
            command: COMMAND,
            error,
        })?;
    entries
        .into_iter()
        .map(|e| {
            let stop = [&e.finish_time, &e.time]
                .into_iter()
                .flatten()
                .find_map(|t| parse_time(t))
                .ok_or_else(|| SourceError::Backup {
                    name: e.backup_name.clone(),
                    problem: format!(
                        "neither finish_time ({:?}) nor time ({:?}) is an RFC 3339 time after 1970",
                        e.finish_time, e.time
                    ),
                })?;
            Ok(Backup {
                stop,
                size: e.compressed_size,
                full: !e.backup_name.contains(DELTA_MARK),
            })
        })
        .collect()
}

/// An RFC 3339 time as Go marshals `time.Time`: fractional seconds optional, "Z" or a
/// `±hh:mm` offset. None for anything else, and for times before 1970 (Go's zero time).
fn parse_time(text: &str) -> Option<SystemTime> {
    if text.ends_with('Z') {
        return humantime::parse_rfc3339(text).ok();
    }
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = offset[1..].split_once(':')?;
    let seconds = hours.parse::<u64>().ok()? * 3600 + minutes.parse::<u64>().ok()? * 60;
    let as_if_utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let offset = Duration::from_secs(seconds);
    // Local time = UTC + offset, so UTC = local - offset.
    if sign > 0 {
        as_if_utc.checked_sub(offset)
    } else {
        as_if_utc.checked_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by hand in WAL-G's documented format, not produced by WAL-G (see
    /// tests/fixtures/backups/README.md).
    const LISTING: &[u8] =
        include_bytes!("../../../tests/fixtures/backups/walg-backup-list-detail.json");

    fn at(epoch: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(epoch, nanos)
    }

    #[test]
    fn reads_full_and_delta_backups_with_their_finish_times() {
        let backups = parse(LISTING).unwrap();
        assert_eq!(
            backups,
            vec![
                // No metadata: the sentinel's time, 07:10:26 at +05:00.
                Backup {
                    stop: at(1795054226, 755_881_407),
                    size: 0,
                    full: true
                },
                Backup {
                    stop: at(1795140849, 500_000_000),
                    size: 1684893052,
                    full: true
                },
                Backup {
                    stop: at(1795226580, 250_000_000),
                    size: 52428800,
                    full: false
                },
                Backup {
                    stop: at(1795313730, 758_489_000),
                    size: 1700000000,
                    full: true
                },
            ]
        );
    }

    #[test]
    fn no_backups_is_an_empty_file_or_list() {
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"\n").unwrap(), vec![]);
        assert_eq!(parse(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn bad_input_names_the_command_or_the_backup() {
        let err = parse(&LISTING[..100]).unwrap_err().to_string();
        assert!(
            err.starts_with("is not the JSON of `wal-g backup-list --json --detail` ("),
            "{err}"
        );
        // The plain `wal-g backup-list` table saved by mistake.
        let table = parse(b"name modified wal_segment_backup_start\n").unwrap_err();
        assert!(matches!(table, SourceError::Malformed { .. }), "{table}");
        let timeless = parse(br#"[{"backup_name": "base_1", "finish_time": "yesterday"}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            timeless.starts_with(
                "backup \"base_1\": neither finish_time (Some(\"yesterday\")) nor time (None)"
            ),
            "{timeless}"
        );
    }

    #[test]
    fn times_with_offsets_are_converted_to_utc() {
        assert_eq!(parse_time("2026-11-20T02:14:09Z"), Some(at(1795140849, 0)));
        assert_eq!(
            parse_time("2026-11-20T07:14:09+05:00"),
            Some(at(1795140849, 0))
        );
        assert_eq!(
            parse_time("2026-11-19T21:14:09.25-05:00"),
            Some(at(1795140849, 250_000_000))
        );
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("2026-11-20T02:14:09"), None);
        assert_eq!(parse_time("é"), None);
    }
}
