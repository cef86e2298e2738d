//! `data_volume`: size and free space of the file systems holding the data directory and
//! the WAL directory, when pgkpi can see them (same host, or a shared volume mounted at the
//! target's `data_directory`).
//!
//! Before trusting a path it checks that it belongs to this cluster: the system identifier in
//! `global/pg_control` (its first 8 bytes) must equal `pg_control_system()`'s. Otherwise, or
//! when the directory is not visible, the collector is skipped (reason `remote`) and says why;
//! node_exporter on the database host covers that case (docs/configuration.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    pg_monitor_check, CollectError, CollectFuture, Collector, Lane, Session, SkipReason, Spec,
    ROLE_COLUMNS,
};
use crate::config::TargetKind;
use crate::metric::{describe_all, Family, FamilyDesc};

pub fn spec() -> Spec {
    Spec {
        name: "data_volume",
        description: "Size and free space of the file systems of the data and WAL directories, when pgkpi sees them and they are this cluster's.",
        default_interval: Duration::from_secs(30),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |context| {
            Box::new(DataVolume {
                configured: context.data_directory.map(Path::to_path_buf),
            })
        },
    }
}

crate::metric::metrics! {
    SIZE = gauge("pg_data_volume_size_bytes", &["target", "directory"], "Size of the file system holding the directory (directory: data, wal), as df reports it.");
    FREE = gauge("pg_data_volume_free_bytes", &["target", "directory"], "Space left on the file system holding the directory for unprivileged users (df's Avail); predict_linear() of it says when it fills.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[SIZE, FREE])
}

struct DataVolume {
    /// The target's `data_directory`: where pgkpi sees the data directory when it is mounted
    /// elsewhere than the server's own path.
    configured: Option<PathBuf>,
}

impl Collector for DataVolume {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let rows = session
                .client
                .query_typed(&format!("SELECT {ROLE_COLUMNS}"), &[])
                .await?;
            let (superuser, monitor) = rows
                .first()
                .map_or((false, false), |r| (r.get(0), r.get(1)));
            // data_directory is readable with pg_read_all_settings, which pg_monitor includes.
            pg_monitor_check(superuser, monitor)?;
            let row = session
                .client
                .query_one(
                    "SELECT current_setting('data_directory'), \
                            (SELECT system_identifier FROM pg_control_system())::text",
                    &[],
                )
                .await?;
            let server_path: String = row.get(0);
            let identifier: String = row.get(1);
            let identifier: u64 = identifier.parse().map_err(|_| {
                CollectError::failed(format!("system identifier {identifier:?} is not a number"))
            })?;
            let path = self
                .configured
                .clone()
                .unwrap_or_else(|| PathBuf::from(&server_path));
            tokio::task::spawn_blocking(move || measure(&path, identifier))
                .await
                .map_err(|e| {
                    CollectError::failed(format!("file system check did not finish: {e}"))
                })?
        })
    }
}

fn remote(message: String) -> CollectError {
    CollectError::skipped(SkipReason::Remote, message)
}

/// Checks the directory is this cluster's, then reads both file systems.
fn measure(data: &Path, identifier: u64) -> Result<Vec<Family>, CollectError> {
    let control = data.join("global").join("pg_control");
    let bytes = match std::fs::read(&control) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(CollectError::skipped(
                SkipReason::Permission,
                format!(
                    "{} is not readable by pgkpi ({e}); run pgkpi as the server's OS user or in its group (initdb --allow-group-access)",
                    control.display()
                ),
            ))
        }
        Err(e) => {
            return Err(remote(format!(
                "the data directory {} is not visible here ({e}): pgkpi runs on another host; set the target's data_directory to where it is mounted, or use node_exporter on the database host",
                data.display()
            )))
        }
    };
    let found = bytes
        .get(..8)
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
    if found != Some(identifier) {
        return Err(remote(format!(
            "{} belongs to another cluster (system identifier {} there, {identifier} on the server); not measuring it",
            data.display(),
            found.map_or("unreadable".to_string(), |f| f.to_string())
        )));
    }
    let mut size = SIZE.family();
    let mut free = FREE.family();
    for (label, path) in [("data", data.to_path_buf()), ("wal", data.join("pg_wal"))] {
        let stat = rustix::fs::statvfs(&path)
            .map_err(|e| CollectError::failed(format!("statvfs {}: {e}", path.display())))?;
        size.push(
            &[("directory", label)],
            (stat.f_blocks * stat.f_frsize) as f64,
        );
        free.push(
            &[("directory", label)],
            (stat.f_bavail * stat.f_frsize) as f64,
        );
    }
    Ok(vec![size, free])
}
