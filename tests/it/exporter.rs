//! The exporter against a real PostgreSQL: reachability, outages, readiness, scrape isolation,
//! and the HTTP surface (TLS is in `tls`).
//!
//! On the shared cluster every exporter has a target name and an application_name of its own,
//! and looks for its sessions by that name. Stopping the server (outages, stale values) and
//! freezing a backend (a stuck poll) happen on clusters of their own.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::{self, retry, Cluster, Exporter, ExporterConfig, Frozen};

/// The default configuration: one target, the server collector every second.
fn config(target: &str, dsn: &str) -> String {
    ExporterConfig::new(target, dsn).build()
}

#[test]
fn exports_pg_up_and_server_version() {
    let cluster = Cluster::shared();
    let exporter = Exporter::start(&config("main", &cluster.dsn("postgres")));
    let m = exporter.wait_for(Duration::from_secs(10), "server collector values", |m| {
        m.value("pg_server_version_num", &[("target", "main")])
            .is_some()
    });
    assert_eq!(m.value("pg_up", &[("target", "main")]), Some(1.0));
    let expected_num = cluster.number("postgres", "SHOW server_version_num");
    assert_eq!(
        m.value("pg_server_version_num", &[("target", "main")]),
        Some(expected_num)
    );
    let version = cluster.psql(
        "postgres",
        "SELECT split_part(current_setting('server_version'), ' ', 1)",
    );
    assert_eq!(
        m.value(
            "pg_server_info",
            &[("target", "main"), ("version", &version)]
        ),
        Some(1.0)
    );
    assert_eq!(m.value("pg_in_recovery", &[("target", "main")]), Some(0.0));
    assert_eq!(
        m.value(
            "pgkpi_collector_up",
            &[("target", "main"), ("collector", "server")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "pgkpi_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Every family has HELP and TYPE.
    for sample in &m.samples {
        let family = sample
            .name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            m.types.contains_key(&sample.name) || m.types.contains_key(family),
            "no TYPE for {}",
            sample.name
        );
    }
}

#[test]
fn holds_one_connection_per_lane_with_application_name() {
    let cluster = Cluster::shared();
    let config = ExporterConfig::new("single", &cluster.dsn("postgres"))
        .session("application_name", "pgkpi-single");
    let exporter = Exporter::start(&config.build());
    exporter.wait_for(Duration::from_secs(10), "first run", |m| {
        m.runs("single", "server") >= 3.0 && m.runs("single", "activity_sampler") >= 1.0
    });
    // One connection per lane: the main one and the activity sampler's (whose last query is
    // always the sampler's).
    let count = cluster.psql(
        "postgres",
        "SELECT count(*), count(*) FILTER (WHERE query LIKE '%pgkpi activity_sampler%') \
         FROM pg_stat_activity WHERE application_name = 'pgkpi-single'",
    );
    assert_eq!(
        count, "2|1",
        "pgkpi must hold exactly one connection per lane (main + sampler) per target"
    );
}

#[test]
fn survives_an_outage_and_recovers_without_restart() {
    let cluster = Cluster::start();
    let mut exporter = Exporter::start(&config("outage", &cluster.dsn("postgres")));
    exporter.wait_for(Duration::from_secs(10), "pg_up 1", |m| {
        m.value("pg_up", &[("target", "outage")]) == Some(1.0)
    });

    cluster.stop();
    let stopped = Instant::now();
    exporter.wait_for(Duration::from_secs(10), "pg_up 0 after stop", |m| {
        m.value("pg_up", &[("target", "outage")]) == Some(0.0)
    });
    assert!(
        stopped.elapsed() <= Duration::from_millis(1500),
        "pg_up fell to 0 after {:?}, more than one poll interval (1s)",
        stopped.elapsed()
    );
    let response = exporter.get("/metrics");
    assert_eq!(response.status, 200);
    exporter.wait_for(Duration::from_secs(5), "collector reported down", |m| {
        m.value(
            "pgkpi_collector_up",
            &[("target", "outage"), ("collector", "server")],
        ) == Some(0.0)
    });
    assert!(
        exporter.alive(),
        "pgkpi must keep running while the database is down"
    );
    // Connected once is enough: readiness does not follow the database down.
    let ready = exporter.get("/readyz?connected");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["connected"], true);
    assert_eq!(body["targets"]["outage"]["connected_once"], true);
    assert_eq!(body["targets"]["outage"]["up"], false);

    cluster.resume();
    let m = exporter.wait_for(Duration::from_secs(10), "pg_up 1 after restart", |m| {
        m.value("pg_up", &[("target", "outage")]) == Some(1.0)
            && m.value(
                "pgkpi_collector_up",
                &[("target", "outage"), ("collector", "server")],
            ) == Some(1.0)
    });
    assert!(
        m.value(
            "pgkpi_target_connection_errors_total",
            &[("target", "outage")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(exporter.alive());
}

#[test]
fn stale_values_are_kept_for_a_bounded_window_then_dropped() {
    let cluster = Cluster::start();
    let config = ExporterConfig::new("stale", &cluster.dsn("postgres"))
        .interval("server", "1s")
        .set("collectors.server", "stale_after", "3s");
    let exporter = Exporter::start(&config.build());
    exporter.wait_for(Duration::from_secs(10), "values", |m| {
        m.value("pg_server_version_num", &[("target", "stale")])
            .is_some()
    });
    cluster.stop();
    let stopped = Instant::now();
    exporter.wait_for(Duration::from_secs(5), "stale flag", |m| {
        m.value(
            "pgkpi_collector_stale",
            &[("target", "stale"), ("collector", "server")],
        ) == Some(1.0)
            && m.value("pg_server_version_num", &[("target", "stale")])
                .is_some()
    });
    let m = exporter.wait_for(Duration::from_secs(10), "values dropped", |m| {
        m.value("pg_server_version_num", &[("target", "stale")])
            .is_none()
    });
    let gone_after = stopped.elapsed();
    assert!(
        gone_after >= Duration::from_secs(1) && gone_after <= Duration::from_secs(6),
        "stale values dropped after {gone_after:?}; expected within the 3s window (+1 janitor tick)"
    );
    assert_eq!(m.value("pg_up", &[("target", "stale")]), Some(0.0));
    // The janitor clears the flag just after dropping the values.
    exporter.wait_for(Duration::from_secs(2), "stale flag cleared", |m| {
        m.value(
            "pgkpi_collector_stale",
            &[("target", "stale"), ("collector", "server")],
        ) == Some(0.0)
    });
}

#[test]
fn unreachable_target_at_start_serves_pg_up_0() {
    let closed_port = support::free_port();
    let dsn =
        format!("host=127.0.0.1 port={closed_port} user=postgres dbname=postgres sslmode=disable");
    let mut exporter = Exporter::start(&config("nowhere", &dsn));
    let m = exporter.wait_for(Duration::from_secs(5), "connection attempts", |m| {
        m.value(
            "pgkpi_target_connection_errors_total",
            &[("target", "nowhere")],
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(m.value("pg_up", &[("target", "nowhere")]), Some(0.0));
    let ready = exporter.get("/readyz");
    assert_eq!(
        ready.status,
        200,
        "a down target has completed its first poll: {}",
        ready.text()
    );
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["targets"]["nowhere"]["up"], false);
    assert!(
        body["targets"]["nowhere"]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{body}"
    );
    assert!(exporter.alive());
}

#[test]
fn readyz_connected_waits_until_a_target_was_reached() {
    let closed_port = support::free_port();
    let nowhere =
        format!("host=127.0.0.1 port={closed_port} user=postgres dbname=postgres sslmode=disable");
    let ready_after_first_poll = |exporter: &Exporter| {
        let ready = answer_200(exporter, "/readyz");
        assert_eq!(ready.status, 200, "{}", ready.text());
    };

    // Never reached: /readyz is 200 (the first poll is done), /readyz?connected is 503.
    let exporter = Exporter::start(&config("unreached", &nowhere));
    ready_after_first_poll(&exporter);
    let strict = exporter.get("/readyz?connected");
    assert_eq!(strict.status, 503, "{}", strict.text());
    let body: serde_json::Value = serde_json::from_slice(&strict.body).unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["connected"], false);
    assert_eq!(body["targets"]["unreached"]["connected_once"], false);
    assert_eq!(body["targets"]["unreached"]["attempted"], true);
    assert_eq!(exporter.get("/readyz?connected=false").status, 200);
    let page = exporter.get("/").text();
    assert!(page.contains("down, never connected"), "{page}");
    drop(exporter);

    // One target reached among two is enough; each target says whether it was reached.
    let cluster = Cluster::shared();
    let config = ExporterConfig::new("reached", &cluster.dsn("postgres"))
        .session("application_name", "pgkpi-reached")
        .raw(&format!(
            "[[targets]]\nname = \"unreached\"\ndsn = \"{nowhere}\"\n"
        ));
    let exporter = Exporter::start(&config.build());
    let strict = answer_200(&exporter, "/readyz?connected");
    assert_eq!(strict.status, 200, "{}", strict.text());
    let body: serde_json::Value = serde_json::from_slice(&strict.body).unwrap();
    assert_eq!(body["connected"], true);
    assert_eq!(body["targets"]["reached"]["connected_once"], true);
    assert_eq!(body["targets"]["unreached"]["connected_once"], false);
    assert_eq!(body["targets"]["unreached"]["up"], false);
}

#[test]
fn readyz_flips_after_the_first_poll() {
    // A server that accepts TCP and never answers holds the first connection attempt until
    // connect_timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(2).flatten() {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(8));
    });
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable");
    let config = ExporterConfig::new("silent", &dsn).session("connect_timeout", "2s");
    let exporter = Exporter::start(&config.build());
    let before = exporter.get("/readyz");
    assert_eq!(
        before.status,
        503,
        "not ready before the first poll: {}",
        before.text()
    );
    let body: serde_json::Value = serde_json::from_slice(&before.body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["targets"]["silent"]["attempted"], false);

    let after = answer_200(&exporter, "/readyz");
    assert_eq!(after.status, 200, "{}", after.text());
    let body: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
    assert_eq!(body["targets"]["silent"]["up"], false);
    assert!(
        body["targets"]["silent"]["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body}"
    );
    assert_eq!(
        body["targets"]["silent"]["collectors"]["server"]["attempted"],
        true
    );
    drop(holder);
}

#[test]
fn scrape_returns_at_once_while_the_poll_is_stuck() {
    // Private cluster: the frozen backend may hold shared-memory locks others would wait on.
    let cluster = Cluster::start();
    let config = ExporterConfig::new("slow", &cluster.dsn("postgres"))
        .session("application_name", "pgkpi-slow")
        .session("statement_timeout", "1s")
        // Without the sampler's second connection, the one pgkpi-slow backend is the main one.
        .disable("activity_sampler");
    let exporter = Exporter::start(&config.build());
    exporter.wait_for(Duration::from_secs(10), "values", |m| {
        m.value("pg_server_version_num", &[("target", "slow")])
            .is_some()
    });
    // Freeze the backend serving pgkpi: its next poll hangs inside the database.
    let pid: i32 = cluster
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgkpi-slow'",
        )
        .parse()
        .unwrap();
    let frozen = Frozen::stop(pid);
    std::thread::sleep(Duration::from_millis(1200)); // a poll is now in flight and stuck
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let response = exporter.get("/metrics");
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status, 200);
        assert!(response
            .text()
            .contains("pg_server_version_num{target=\"slow\"}"));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?} while the poll hung"
    );
    // The stuck poll is cut by the client-side timeout and reported, and pgkpi reconnects.
    // A run is counted once its outcome is published: the failed run is the second.
    exporter.wait_for(Duration::from_secs(10), "timeout reported", |m| {
        m.value(
            "pgkpi_collector_errors_total",
            &[("target", "slow"), ("collector", "server")],
        )
        .unwrap_or(0.0)
            >= 1.0
            && m.runs("slow", "server") >= 2.0
    });
    let ready: serde_json::Value = serde_json::from_slice(&exporter.get("/readyz").body).unwrap();
    let error = ready["targets"]["slow"]["collectors"]["server"]["last_error"].clone();
    drop(frozen);
    exporter.wait_for(Duration::from_secs(10), "recovered", |m| {
        m.value(
            "pgkpi_collector_up",
            &[("target", "slow"), ("collector", "server")],
        ) == Some(1.0)
            && m.value("pg_up", &[("target", "slow")]) == Some(1.0)
    });
    assert!(
        error.is_null()
            || error.as_str().unwrap().contains("timed out")
            || error.as_str().unwrap().contains("closed"),
        "{error}"
    );
}

#[test]
fn metrics_are_gzipped_on_request_and_other_paths_behave() {
    let cluster = Cluster::shared();
    let exporter = Exporter::start(&config("http", &cluster.dsn("postgres")));
    exporter.wait_for(Duration::from_secs(10), "values", |m| {
        m.value("pg_server_version_num", &[("target", "http")])
            .is_some()
    });
    let plain = exporter.get("/metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(plain.header("content-encoding"), None);

    // The first gzip scrape deflates the snapshot itself; later ones find it deflated ahead
    // once a run publishes. Either way one gzip member holds the snapshot and the
    // self-metrics (GzDecoder reads the first member only).
    let runs = exporter.metrics().runs("http", "locks");
    for scrape in 0..2 {
        if scrape == 1 {
            exporter.wait_for(Duration::from_secs(10), "another run", |m| {
                m.runs("http", "locks") > runs
            });
            std::thread::sleep(Duration::from_millis(500));
        }
        let zipped = exporter.get_with("/metrics", &[("Accept-Encoding", "gzip")]);
        assert_eq!(zipped.status, 200);
        assert_eq!(zipped.header("content-encoding"), Some("gzip"));
        let mut text = String::new();
        let mut decoder = flate2::read::GzDecoder::new(zipped.body.as_slice());
        decoder.read_to_string(&mut text).expect("valid gzip");
        assert!(decoder.into_inner().is_empty(), "one gzip member");
        assert!(text.contains("pg_up{target=\"http\"} 1"), "{text}");
        assert!(text.contains("pgkpi_build_info{"), "{text}");
        assert!(text.ends_with('\n'), "{text}");
    }

    assert_eq!(exporter.get("/healthz").status, 200);
    let index = exporter.get("/");
    assert_eq!(index.status, 200);
    let html = index.text();
    assert!(
        html.contains("target http") && html.contains("server") && html.contains("/metrics"),
        "{html}"
    );
    assert_eq!(exporter.get("/nope").status, 404);
    let m = exporter.metrics();
    assert!(
        m.value(
            "pgkpi_http_requests_total",
            &[("path", "other"), ("code", "404")]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let cluster = Cluster::shared();
    let exporter = Exporter::start(&config("term", &cluster.dsn("postgres")));
    exporter.wait_for(Duration::from_secs(10), "up", |m| {
        m.value("pg_up", &[("target", "term")]) == Some(1.0)
    });
    let status = exporter.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// GETs `path` until it answers 200 (at most 10 s); returns the last response either way, so
/// the caller's assertion shows what it got.
fn answer_200(exporter: &Exporter, path: &str) -> support::exporter::HttpResponse {
    let (Ok(response) | Err(response)) =
        retry(Duration::from_secs(10), Duration::from_millis(100), || {
            let response = exporter.get(path);
            if response.status == 200 {
                Ok(response)
            } else {
                Err(response)
            }
        });
    response
}
