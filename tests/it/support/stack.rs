//! Real Prometheus and Alertmanager processes for end-to-end tests (Debian's packages), on
//! loopback ports, with their data in temporary directories removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get, TempDir};

fn find(candidates: &[&str]) -> String {
    for name in candidates {
        if Command::new(name).arg("--version").output().is_ok() {
            return name.to_string();
        }
    }
    panic!(
        "none of {candidates:?} found: run the README's test command (scripts/test.sh), which \
         installs Debian's prometheus and prometheus-alertmanager"
    );
}

/// A child process killed on drop, with its output kept in a file for failure messages.
pub struct Service {
    child: Child,
    pub address: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Service {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, path: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited ({status}):\n{}", self.log());
            }
            if http_get(&self.address, path, &[]).is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what} not ready after 30s:\n{}", self.log());
    }

    /// GET a JSON API path (query already encoded).
    pub fn json(&self, path: &str) -> serde_json::Value {
        let response =
            http_get(&self.address, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", response.text()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &str, args: &[String], dir: TempDir, address: String) -> Service {
    let log = dir.0.join("output.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    Service {
        child,
        address,
        log,
        _dir: dir,
    }
}

/// Starts Alertmanager with `config` (a path).
pub fn alertmanager(config: &Path) -> Service {
    let program = find(&["prometheus-alertmanager", "alertmanager"]);
    let dir = TempDir::new("alertmanager");
    let address = format!("127.0.0.1:{}", free_port());
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.0.join("data").display()),
        format!("--web.listen-address={address}"),
        // One instance: no gossip port, nothing listening beyond loopback.
        "--cluster.listen-address=".to_string(),
    ];
    let mut service = spawn(&program, &args, dir, address);
    service.wait_ready("/-/ready", "alertmanager");
    service
}

/// Starts Prometheus scraping `pgkpi` (host:port) every `interval`, loading `rule_files`,
/// alerting to `alertmanager` (host:port).
pub fn prometheus(
    pgkpi: &str,
    rule_files: &[PathBuf],
    alertmanager: &str,
    interval: &str,
) -> Service {
    let program = find(&["prometheus"]);
    let dir = TempDir::new("prometheus");
    let address = format!("127.0.0.1:{}", free_port());
    let rules: String = rule_files
        .iter()
        .map(|f| format!("  - {}\n", f.display()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
         rule_files:\n{rules}\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n\
         scrape_configs:\n  - job_name: pgkpi\n    static_configs:\n      - targets: ['{pgkpi}']\n"
    );
    let config_path = dir.0.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let args = vec![
        format!("--config.file={}", config_path.display()),
        format!("--storage.tsdb.path={}", dir.0.join("data").display()),
        format!("--web.listen-address={address}"),
    ];
    let mut service = spawn(&program, &args, dir, address);
    service.wait_ready("/-/ready", "prometheus");
    service
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs an instant query; returns (status, result series, error text).
pub fn query(prometheus: &Service, promql: &str) -> (String, Vec<serde_json::Value>, String) {
    let body = prometheus.json(&format!("/api/v1/query?query={}", encode(promql)));
    let status = body["status"].as_str().unwrap_or("").to_string();
    let result = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let error = body["error"].as_str().unwrap_or("").to_string();
    (status, result, error)
}
