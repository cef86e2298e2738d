//! The directory source: every file in `[backups] directory` whose name matches `pattern` is
//! a full backup, finished at its modification time. Files are stat'ed, never opened, so pgkpi
//! needs only read and execute permission on the directory.

use std::path::Path;

use super::settings::matches;
use super::{Backup, SourceError};

/// Most directory entries looked at per run: a backup directory holds tens of files; one with
/// millions is a mistake that must not stall the blocking pool.
const MAX_ENTRIES: usize = 100_000;

pub(super) fn list(directory: &Path, pattern: &str) -> Result<Vec<Backup>, SourceError> {
    let entries = std::fs::read_dir(directory).map_err(SourceError::List)?;
    let mut backups = Vec::new();
    for entry in entries.take(MAX_ENTRIES).flatten() {
        if !matches(pattern, &entry.file_name().to_string_lossy()) {
            continue;
        }
        // A file deleted or unreadable between the listing and the stat is skipped, as is
        // anything but a regular file (a subdirectory named like a dump).
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        if meta.is_file() {
            backups.push(Backup {
                stop: modified,
                size: meta.len(),
                full: true,
            });
        }
    }
    Ok(backups)
}
