//! The two ways to reach the server log ([`super::follow::Reader`]s):
//! * [`LocalDir`]: pgkpi runs beside the server or as a sidecar that mounts its log directory;
//!   it needs read access to that directory and nothing in the database.
//! * [`Server`]: over the monitoring connection with `pg_read_binary_file`, for a role that was
//!   explicitly granted it. That function reads any file the server's OS user can read
//!   (configuration, keys, data files), so the grant is a real widening of the role's rights:
//!   opt-in, and documented as such in docs/statements.md.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use super::follow::{Chunk, ReadError, Reader};

/// Log files in a local directory; `pg_current_logfile()`'s name is reduced to its file name,
/// so the directory may be mounted anywhere.
pub struct LocalDir {
    pub directory: PathBuf,
}

impl Reader for LocalDir {
    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Chunk, ReadError> {
        let file_name = Path::new(name)
            .file_name()
            .ok_or_else(|| ReadError::Other(format!("log file name {name:?} has no file name")))?;
        let path = self.directory.join(file_name);
        // File reads block; a chunk is at most a few MiB, but the runtime's workers also serve
        // the other targets' polls.
        tokio::task::spawn_blocking(move || read_local(&path, offset, len))
            .await
            .map_err(|e| ReadError::Other(e.to_string()))?
    }
}

fn read_local(path: &Path, offset: u64, len: u64) -> Result<Chunk, ReadError> {
    let describe = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ReadError::Permission(path.display().to_string()),
        _ => ReadError::Other(format!("{}: {e}", path.display())),
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Chunk::default()),
        Err(e) => return Err(describe(e)),
    };
    let size = file.metadata().map_err(describe)?.len();
    let mut bytes = Vec::new();
    if offset < size && len > 0 {
        file.seek(SeekFrom::Start(offset)).map_err(describe)?;
        file.take(len).read_to_end(&mut bytes).map_err(describe)?;
    }
    Ok(Chunk {
        size: Some(size),
        bytes,
    })
}

/// Log files read by the server itself.
pub struct Server<'a> {
    pub client: &'a Client,
}

pub const READ_SQL: &str = "SELECT /* pgkpi statements: log read */ \
     (pg_stat_file($1, true)).size, pg_read_binary_file($1, $2, $3, true)";

impl Reader for Server<'_> {
    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Chunk, ReadError> {
        let row = self
            .client
            .query_one(READ_SQL, &[&name, &(offset as i64), &(len as i64)])
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
                    ReadError::Permission(
                        "GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, \
                         boolean), pg_stat_file(text, boolean) TO <monitoring role>"
                            .into(),
                    )
                }
                _ => ReadError::Other(e.to_string()),
            })?;
        let size: Option<i64> = row.get(0);
        let bytes: Option<Vec<u8>> = row.get(1);
        Ok(Chunk {
            size: size.map(|s| s.max(0) as u64),
            bytes: if size.is_some() {
                bytes.unwrap_or_default()
            } else {
                Vec::new()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_reads_from_an_offset_and_reports_a_missing_file() {
        let dir = std::env::temp_dir().join(format!("pgkpi-log-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("postgresql.json"), b"0123456789").unwrap();
        let local = LocalDir {
            directory: dir.clone(),
        };
        let chunk = local.read("log/postgresql.json", 4, 3).await.unwrap();
        assert_eq!(
            chunk,
            Chunk {
                size: Some(10),
                bytes: b"456".to_vec()
            }
        );
        assert_eq!(
            local.read("log/gone.json", 0, 3).await.unwrap(),
            Chunk::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
