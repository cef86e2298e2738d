//! A real pgBouncer (Debian's `/usr/sbin/pgbouncer`, installed by scripts/test.sh) in front of
//! a database of the test cluster, on a free 127.0.0.1 port, in transaction mode, trusting
//! the users of its auth file. pgBouncer refuses to run as root, so as root it runs as the
//! `postgres` OS user. Stopped when dropped.
//!
//! Users: `postgres` is an admin (it may RELOAD), `pgkpi` is the monitoring user, listed in
//! `stats_users` unless [`Pgbouncer::start`] is told otherwise.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, retry, Cluster, TempDir};

pub const BINARY: &str = "/usr/sbin/pgbouncer";

pub struct Pgbouncer {
    pub port: u16,
    /// The pool (pgBouncer database name) that leads to the test database.
    pub pool: String,
    dir: TempDir,
    backend: (u16, String),
    pool_size: u32,
    child: Option<Child>,
}

impl Pgbouncer {
    /// pgBouncer with pool `app` → `db` on `cluster`, `pool_size` server connections per pool;
    /// `monitor_allowed` puts the `pgkpi` user in stats_users.
    pub fn start(cluster: &Cluster, db: &str, pool_size: u32, monitor_allowed: bool) -> Pgbouncer {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} not found: run scripts/test.sh, which installs Debian's pgbouncer"
        );
        let dir = TempDir::new("pgbouncer");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let mut bouncer = Pgbouncer {
            port: free_port(),
            pool: "app".to_string(),
            dir,
            backend: (cluster.port, db.to_string()),
            pool_size,
            child: None,
        };
        bouncer.write_config(monitor_allowed);
        bouncer.launch();
        bouncer
    }

    /// DSN of the admin console for `user`.
    pub fn admin_dsn(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=pgbouncer sslmode=disable",
            self.port
        )
    }

    /// DSN of the pool, as an application connects.
    pub fn pool_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={} sslmode=disable",
            self.port, self.pool
        )
    }

    /// Rewrites the configuration (stats_users with or without `pgkpi`) and has pgBouncer
    /// reload it (RELOAD on the admin console).
    pub fn reconfigure(&self, monitor_allowed: bool) {
        self.write_config(monitor_allowed);
        self.admin("RELOAD");
    }

    /// Stops pgBouncer (SIGTERM: immediate shutdown, clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = self.pid() {
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let _ = child.wait();
        }
    }

    /// Starts pgBouncer again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs an admin console command as `postgres`; returns its rows, columns joined by '|'.
    pub fn admin(&self, command: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(self.admin_dsn("postgres"))
            .args(["-c", command])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pgBouncer log (startup errors, refused logins).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("pgbouncer.log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.0.join("pgbouncer.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn write_config(&self, monitor_allowed: bool) {
        let dir = &self.dir.0;
        let (backend_port, db) = &self.backend;
        self.dir.write(
            "userlist.txt",
            "\"postgres\" \"\"\n\"pgkpi\" \"\"\n\"intruder\" \"\"\n",
        );
        let stats_users = if monitor_allowed { "pgkpi" } else { "" };
        self.dir.write(
            "pgbouncer.ini",
            &format!(
                "[databases]\n\
                 {pool} = host=127.0.0.1 port={backend_port} dbname={db} pool_size={size}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {dir}/userlist.txt\n\
                 admin_users = postgres\n\
                 stats_users = {stats_users}\n\
                 pool_mode = transaction\n\
                 max_client_conn = 50\n\
                 default_pool_size = {size}\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n",
                pool = self.pool,
                size = self.pool_size,
                port = self.port,
                dir = dir.display(),
            ),
        );
    }

    fn launch(&mut self) {
        let config: PathBuf = self.dir.0.join("pgbouncer.ini");
        let _ = std::fs::remove_file(self.dir.0.join("pgbouncer.pid"));
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", BINARY]);
            cmd
        } else {
            Command::new(BINARY)
        };
        let child = cmd
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        self.child = Some(child);
        retry(Duration::from_secs(20), Duration::from_millis(50), || {
            let ready = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.pid().is_some();
            ready.then_some(()).ok_or(())
        })
        .unwrap_or_else(|_| panic!("pgbouncer did not start; log:\n{}", self.log()));
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
