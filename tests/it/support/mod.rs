//! Test support: an ephemeral PostgreSQL cluster, a running pgkpi binary, and helpers to
//! scrape and parse what it serves.
//!
//! The cluster is real: `initdb` + `pg_ctl` on a free 127.0.0.1 port, data and socket in a
//! temporary directory, `pg_stat_statements` preloaded, TLS on with a CA and server certificate
//! made for it. As root the server runs as the `postgres` OS user (initdb refuses root). One
//! cluster is shared by every test of the binary, of every area, running concurrently
//! ([`Cluster::shared`]): a test on it works in a database of its own and looks only at that
//! database. Tests that stop or restart the server, change its settings, freeze its backends
//! or need to know everything that runs on it start their own ([`Cluster::start`]). Clusters
//! are stopped and removed when the test process exits, even after a panic, and a watchdog
//! process removes them if the test process is killed.
//!
//! [`Cluster`] and the PostgreSQL binaries are in `cluster.rs`, the TLS certificates in
//! `tls.rs`, a pgBouncer in front of it in `pgbouncer.rs`; this module keeps the helpers for repository files, temporary directories,
//! processes and the pgkpi binary.

mod cluster;
pub mod config;
pub mod exporter;
pub mod library;
pub mod metrics;
pub mod pgbouncer;
pub mod schema;
pub mod stack;
mod tls;
pub mod wait;

pub use cluster::{pg_bindir, pg_major_bindir, Cluster};
pub use config::ExporterConfig;
pub use exporter::{http_get, Exporter};
pub use metrics::Metrics;
pub use tls::{make_ca, make_certificates};
pub use wait::{retry, retry_async};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A file of the repository (fixtures, migrations, ...) by its path from the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The files of the repository folder `dir` whose names end with `suffix`, sorted.
pub fn repo_files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_path(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// The Prometheus rule files: alerts/*.yml but the Alertmanager configuration.
pub fn rule_files() -> Vec<PathBuf> {
    repo_files("alerts", ".yml")
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "alertmanager.yml")
        .collect()
}

/// Runs a tool that must succeed; returns its stdout and stderr.
pub fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e}; run the README's test command (scripts/test.sh), which installs it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds first).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "pgkpi-{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl TempDir {
    /// Writes the file `name` in this directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pgkpi binary built for these tests.
pub fn pgkpi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgkpi")
}

/// A child process killed (and reaped) when dropped, also when the test panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs pgkpi to completion with `args` and `env` (without any DATA_SOURCE_NAME inherited).
pub fn pgkpi(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(pgkpi_bin());
    cmd.args(args)
        .env_remove("DATA_SOURCE_NAME")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgkpi")
}

/// `pgkpi --config.file <config> check-config`.
pub fn check_config(config: &Path) -> Output {
    pgkpi(
        &["--config.file", config.to_str().unwrap(), "check-config"],
        &[],
    )
}

/// What a pgkpi run wrote to stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A SIGSTOPped backend (frozen mid-query), resumed when dropped, even if the test fails.
/// Only on a cluster of the test's own: a frozen backend may hold shared-memory locks every
/// other session would then wait on.
pub struct Frozen(i32);

impl Frozen {
    pub fn stop(pid: i32) -> Frozen {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Held for its whole run by a test that loads the machine for minutes (a workload generator
/// and a monitoring stack): two of them at once would starve the other tests on a 2-core
/// machine, as they never met when each area was a binary of its own.
pub fn heavy_load() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
