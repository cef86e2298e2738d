//! The HTTP server's limits: scrapes keep working when file descriptors run out, when slow
//! clients hold connections (slowloris) and when more clients connect than the cap allows.
//!
//! No database is needed: every exporter here has a target on a closed port, and what is
//! asserted on is the exporter's own HTTP surface and metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{self, Exporter, ExporterConfig};

/// One target that is never reachable; only the server collector, so the exporter is quiet.
fn config() -> ExporterConfig {
    let port = support::free_port();
    ExporterConfig::new(
        "nowhere",
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"),
    )
    .only_builtin(&["server"])
}

/// GET `path` on a fresh connection; Err unless a complete 200 response arrives within `limit`.
fn scrape_within(address: &str, path: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address.parse().unwrap(), limit)
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.set_write_timeout(Some(limit)).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read after {:?}: {e}", start.elapsed()))?;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "no 200 response: {:?}",
            &text[..text.len().min(200)]
        ));
    }
    if elapsed > limit {
        return Err(format!("took {elapsed:?}"));
    }
    Ok(elapsed)
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Raises this process's soft open-file limit to `want` (or its hard limit if lower).
fn raise_own_nofile(want: u64) {
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        let target = (want as libc::rlim_t).min(rl.rlim_max);
        if rl.rlim_cur < target {
            rl.rlim_cur = target;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        }
    }
}

/// True when the peer closes `stream` within `limit` (end of stream or a reset).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => return false,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

fn count(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn scrapes_answer_and_accept_does_not_spin_when_descriptors_run_out() {
    const LIMIT: u64 = 256;
    const HELD: usize = 300;
    raise_own_nofile(4096);
    let exporter = Exporter::start_with_nofile(&config().build(), Some(LIMIT));
    // More idle connections than the exporter has descriptors, held by this process.
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(TcpStream::connect(&exporter.address).expect("connect"));
    }
    let start = Instant::now();
    let cpu_before = cpu_time(exporter.pid());
    let lines_before = count(&exporter.logs(), "accept failed");
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let took = scrape_within(&exporter.address, "/metrics", Duration::from_secs(1))
            .unwrap_or_else(|e| {
                let logs = exporter.logs();
                panic!(
                    "scrape {i} with {HELD} connections held: {e}; {} 'accept failed' lines; \
                     last logs:\n{}",
                    count(&logs, "accept failed"),
                    logs.lines().rev().take(5).collect::<Vec<_>>().join("\n")
                )
            });
        slowest = slowest.max(took);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time(exporter.pid()) - cpu_before;
    let logs = exporter.logs();
    let accept_lines = count(&logs, "accept failed") - lines_before;
    let failures = exporter
        .metrics()
        .value("pgkpi_http_accept_errors_total", &[])
        .unwrap();
    eprintln!(
        "held {HELD} with nofile {LIMIT}: slowest scrape {slowest:?}, cpu {cpu:?} in {elapsed:?}, \
         {accept_lines} 'accept failed' lines in that time, {} in all, {failures} accept errors",
        count(&logs, "accept failed")
    );
    assert!(
        cpu.as_secs_f64() < 0.10 * elapsed.as_secs_f64(),
        "pgkpi used {cpu:?} of CPU in {elapsed:?}"
    );
    assert!(
        accept_lines as f64 <= elapsed.as_secs_f64().ceil() + 1.0,
        "{accept_lines} 'accept failed' lines in {elapsed:?}"
    );
    drop(held);
}

fn rejected(m: &support::Metrics, reason: &str) -> f64 {
    m.value(
        "pgkpi_http_connections_rejected_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// 500 slowloris connections against the default cap (100): the scrape still answers within
/// 1 s, and the 400 beyond the cap are closed and counted.
#[test]
fn slowloris_beyond_the_cap_cannot_starve_scrapes() {
    const CAP: i64 = 100; // the default of [web] max_connections
    const SLOW: usize = 500;
    raise_own_nofile(4096);
    let exporter = Exporter::start(&config().set("web", "header_read_timeout", "30s").build());
    // Each sends a partial request line and headers, never the blank line that ends them.
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(&exporter.address).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.push(s);
    }
    let took = scrape_within(&exporter.address, "/metrics", Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("scrape with {SLOW} slow connections: {e}"));
    eprintln!("scrape with {SLOW} slowloris connections and a cap of {CAP}: {took:?}");
    // Every slow connection beyond the cap made room by closing the oldest waiting one. (A
    // scrape at the cap closes one too, so the socket it evicted may still be counted open
    // for an instant: wait for both.)
    let beyond = (SLOW as i64 - CAP) as f64;
    let m = exporter.wait_for(Duration::from_secs(5), "evictions counted", |m| {
        rejected(m, "evicted") >= beyond
            && m.value("pgkpi_http_connections_open", &[]) <= Some(CAP as f64)
    });
    assert_eq!(
        m.value("pgkpi_http_connections_limit", &[]),
        Some(CAP as f64)
    );
    // The oldest slow connection was among those closed.
    assert!(
        closed_within(&mut slow[0], Duration::from_secs(2)),
        "the oldest slow connection is still open"
    );
}

#[test]
fn header_read_timeout_closes_slow_and_idle_connections() {
    let exporter = Exporter::start(&config().set("web", "header_read_timeout", "1s").build());
    // A slowloris: one byte of a request every 300 ms, never finishing the headers.
    let mut slow = TcpStream::connect(&exporter.address).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let idle = TcpStream::connect(&exporter.address).unwrap();
    let start = Instant::now();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed_after = None;
    for i in 0..40 {
        if slow.write_all(&request[i % request.len()..][..1]).is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(_) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed_after = Some(start.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("the slow connection was still open after 12 s");
    eprintln!("slow connection closed after {closed_after:?} (header_read_timeout 1s)");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    // A connection that never sends anything is closed by the same timer.
    let mut idle = idle;
    assert!(
        closed_within(&mut idle, Duration::from_secs(3))
            && start.elapsed() < Duration::from_secs(4),
        "the idle connection is still open after {:?}",
        start.elapsed()
    );
    exporter.wait_for(Duration::from_secs(5), "timeouts counted", |m| {
        rejected(m, "timeout") >= 2.0
    });
}

/// Sends `request` raw on a fresh connection and returns the status code of the answer.
fn raw_status(address: &str, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may answer and close before it read everything (an oversized header).
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Malformed and unexpected requests each get the status that names the problem (400, 404,
/// 405, 431), are counted, and leave the server answering scrapes.
#[test]
fn malformed_requests_get_a_clear_status_and_scrapes_keep_working() {
    let exporter = Exporter::start(&config().build());
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "not HTTP at all",
            b"\x16\x03\x01 hello, not http\r\n\r\n".to_vec(),
            400,
        ),
        (
            "an unknown path",
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            "a POST to /metrics",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
        ),
        ("a 1 MiB header", huge.into_bytes(), 431),
    ];
    for (what, request, want) in &cases {
        assert_eq!(
            raw_status(&exporter.address, request),
            Some(*want),
            "{what}"
        );
        let took = scrape_within(&exporter.address, "/metrics", Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("scrape after {what}: {e}"));
        eprintln!("malformed request, {what}: {want}; the next scrape took {took:?}");
    }
}
