//! A pgkpi process under test and a minimal HTTP client to talk to it (and to Prometheus and
//! Alertmanager).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, pgkpi_bin, retry, Metrics, TempDir};

/// A pgkpi process under test, listening on a free 127.0.0.1 port.
pub struct Exporter {
    child: Child,
    pub address: String,
    logs: Arc<Mutex<String>>,
    _config_dir: TempDir,
}

impl Exporter {
    /// Starts pgkpi with the given TOML configuration (without a [web] listen address, which
    /// is chosen here) and waits until it answers /healthz.
    pub fn start(config_toml: &str) -> Exporter {
        Exporter::start_with_nofile(config_toml, None)
    }

    /// Like [`Exporter::start`], with the process's open-file limit (RLIMIT_NOFILE, soft and
    /// hard) set to `nofile` when given, as `ulimit -n` would before starting it.
    pub fn start_with_nofile(config_toml: &str, nofile: Option<u64>) -> Exporter {
        Exporter::start_with(config_toml, nofile, &[])
    }

    /// Like [`Exporter::start`], with more command-line arguments (`--total-shards 3`).
    pub fn start_with_args(config_toml: &str, args: &[&str]) -> Exporter {
        Exporter::start_with(config_toml, None, args)
    }

    fn start_with(config_toml: &str, nofile: Option<u64>, args: &[&str]) -> Exporter {
        let config_dir = TempDir::new("config");
        let path = config_dir.0.join("pgkpi.toml");
        std::fs::write(&path, config_toml).unwrap();
        for _ in 0..5 {
            let address = format!("127.0.0.1:{}", free_port());
            let mut command = Command::new(pgkpi_bin());
            if let Some(limit) = nofile {
                use std::os::unix::process::CommandExt;
                // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    command.pre_exec(move || {
                        let rlimit = libc::rlimit {
                            rlim_cur: limit as libc::rlim_t,
                            rlim_max: limit as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = command
                .arg("--config.file")
                .arg(&path)
                .arg("--web.listen-address")
                .arg(&address)
                .arg("--log.level")
                .arg("debug")
                .args(args)
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

    /// The configuration file it was started with (rewrite it, then reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._config_dir.0.join("pgkpi.toml")
    }

    /// Sends a signal (`libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill {signal}");
    }

    pub fn post(&self, path: &str) -> HttpResponse {
        http_request(&self.address, "POST", path, &[])
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
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
        retry(timeout, Duration::from_millis(100), || {
            let metrics = self.metrics();
            if check(&metrics) {
                Ok(metrics)
            } else {
                Err(metrics)
            }
        })
        .unwrap_or_else(|metrics| {
            panic!(
                "waited {timeout:?} for {what}; last scrape:\n{}\nlogs:\n{}",
                metrics.text,
                self.logs()
            )
        })
    }

    /// Waits for `n` more completed runs of `collector` on `target`, so that what is scraped
    /// next was collected after the caller's scenario settled; returns that scrape.
    pub fn wait_more_runs(&self, target: &str, collector: &str, n: f64) -> Metrics {
        let start = self.metrics().runs(target, collector);
        self.wait_for(
            Duration::from_secs(30),
            &format!("{n} more runs of {collector}"),
            |m| m.runs(target, collector) >= start + n,
        )
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        // Every test doubles as a check that each family a collector served was declared:
        // the poller drops an undeclared one and logs this line (see poller::keep_declared).
        if !std::thread::panicking() {
            let logs = self.logs();
            let undeclared: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains("undeclared family dropped"))
                .collect();
            assert!(
                undeclared.is_empty(),
                "a collector served families it does not declare:\n{}",
                undeclared.join("\n")
            );
        }
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
    http_request(address, "GET", path, headers)
}

/// A minimal HTTP/1.1 request without a body.
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    // A reload answers once it is done: stopping a target may wait for a run in progress.
    let timeout = if method == "GET" { 10 } else { 30 };
    stream.set_read_timeout(Some(Duration::from_secs(timeout)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if method != "GET" {
        request.push_str("Content-Length: 0\r\n");
    }
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
