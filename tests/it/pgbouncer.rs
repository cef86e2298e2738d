//! pgBouncer targets against a real pgBouncer 1.18 (support/pgbouncer.rs) in front of a
//! database of the shared cluster: pool saturation read as pgBouncer reports it, and the
//! target's life through a refused user and a restart. Each test runs a pgBouncer of its own.

use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::pgbouncer::Pgbouncer;
use crate::support::{Cluster, Exporter, ExporterConfig, Metrics};

const T: &str = "pooler";

fn config(bouncer: &Pgbouncer, user: &str) -> String {
    ExporterConfig::new(T, &bouncer.admin_dsn(user))
        .kind("pgbouncer")
        .interval("pgbouncer_pools", "1s")
        .interval("pgbouncer_stats", "1s")
        .interval("pgbouncer_limits", "1s")
        .build()
}

/// The pool's row of SHOW POOLS now, as a number per column; None before a client used it.
async fn show_pool(bouncer: &Pgbouncer) -> Option<std::collections::HashMap<String, f64>> {
    let (client, connection) = tokio_postgres::connect(&bouncer.admin_dsn("postgres"), NoTls)
        .await
        .expect("connect to the admin console");
    tokio::spawn(connection);
    for message in client.simple_query("SHOW POOLS").await.unwrap() {
        if let SimpleQueryMessage::Row(row) = message {
            if row.get("database") == Some(bouncer.pool.as_str()) {
                return Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| {
                            Some((c.name().to_string(), row.get(i)?.parse().ok()?))
                        })
                        .collect(),
                );
            }
        }
    }
    None
}

/// (clients waiting, longest wait in seconds) of the pool as SHOW POOLS reports it now.
async fn show_pools(bouncer: &Pgbouncer) -> (f64, f64) {
    let pool = show_pool(bouncer).await.expect("the pool in SHOW POOLS");
    (
        pool["cl_waiting"],
        pool["maxwait"] + pool["maxwait_us"] / 1e6,
    )
}

/// Active servers of the pool (0 before a client used it).
async fn show_active_servers(bouncer: &Pgbouncer) -> f64 {
    show_pool(bouncer).await.map_or(0.0, |p| p["sv_active"])
}

fn pool_value(m: &Metrics, name: &str, state: Option<&str>) -> Option<f64> {
    let mut labels = vec![("database", "app"), ("user", "postgres")];
    if let Some(state) = state {
        labels.push(("state", state));
    }
    m.of(T, name, &labels)
}

/// pool_size = 2, 10 clients in pg_sleep, 2 of them holding the servers: 8 wait. The exported waiting clients and longest
/// wait match SHOW POOLS read right after the scrape, the pool is saturated by the bundle's
/// definition (active servers at pool size while clients wait), and after the load everything
/// is idle again at the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_pool_is_reported_as_pgbouncer_sees_it() {
    let (cluster, db) = Cluster::shared_database("pgb_sat");
    let bouncer = Pgbouncer::start(cluster, &db, 2, true);
    let exporter = Exporter::start(&config(&bouncer, "pgkpi"));
    let idle = exporter.wait_for(
        Duration::from_secs(30),
        "the pooler's series (a pool exists once a client used it)",
        |m| {
            m.of(T, "pg_up", &[]) == Some(1.0)
                && m.of(T, "pgbouncer_database_pool_size", &[("database", "app")])
                    .is_some()
        },
    );
    assert_eq!(
        idle.of(T, "pgbouncer_database_pool_size", &[("database", "app")]),
        Some(2.0)
    );
    assert_eq!(
        idle.of(T, "pgbouncer_config_max_client_conn", &[]),
        Some(50.0)
    );
    assert_eq!(
        idle.value(
            "pgbouncer_version_info",
            &[("target", T), ("version", "1.18.0")]
        ),
        Some(1.0)
    );
    assert_eq!(
        idle.value("pgkpi_target_info", &[("target", T), ("kind", "pgbouncer")]),
        Some(1.0)
    );
    assert!(
        idle.find("pg_server_info", &[("target", T)]).is_empty(),
        "no PostgreSQL collector runs on a pgbouncer target"
    );

    // Two clients take the pool's two servers for 6 s; only then do 8 more queue behind them
    // (each needs 0.5 s once served), so the pool stays saturated for seconds whatever the
    // machine's load.
    let started = Instant::now();
    let client = |sleep: f64| {
        let dsn = bouncer.pool_dsn();
        tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .simple_query(&format!("SELECT pg_sleep({sleep})"))
                .await
                .unwrap();
        })
    };
    let mut clients: Vec<_> = (0..2).map(|_| client(6.0)).collect();
    crate::support::retry_async(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let active = show_active_servers(&bouncer).await;
            (active == 2.0).then_some(()).ok_or(active)
        },
    )
    .await
    .expect("the two holders on the pool's servers");
    clients.extend((0..8).map(|_| client(0.5)));

    let saturated = exporter.wait_for(Duration::from_secs(10), "8 waiting clients", |m| {
        pool_value(m, "pgbouncer_pool_client_connections", Some("waiting")) == Some(8.0)
            && pool_value(m, "pgbouncer_pool_max_wait_seconds", None).unwrap_or(0.0) >= 1.0
    });
    let (show_waiting, show_max_wait) = show_pools(&bouncer).await;
    let exported_waiting = pool_value(
        &saturated,
        "pgbouncer_pool_client_connections",
        Some("waiting"),
    )
    .unwrap();
    let exported_max_wait =
        pool_value(&saturated, "pgbouncer_pool_max_wait_seconds", None).unwrap();
    eprintln!(
        "after {:?}: exported waiting {exported_waiting} max wait {exported_max_wait:.3} s; \
         SHOW POOLS waiting {show_waiting} max wait {show_max_wait:.3} s",
        started.elapsed()
    );
    assert_eq!(exported_waiting, show_waiting);
    // The export is at most one interval (1 s) older than SHOW POOLS read after the scrape.
    let lag = show_max_wait - exported_max_wait;
    assert!(
        (0.0..=1.5).contains(&lag),
        "max wait: exported {exported_max_wait}, SHOW POOLS {show_max_wait}"
    );
    assert_eq!(
        pool_value(
            &saturated,
            "pgbouncer_pool_server_connections",
            Some("active")
        ),
        Some(2.0)
    );
    assert_eq!(
        pool_value(
            &saturated,
            "pgbouncer_pool_client_connections",
            Some("active")
        ),
        Some(2.0)
    );
    assert_eq!(
        saturated.value(
            "pgbouncer_pool_mode_info",
            &[
                ("target", T),
                ("database", "app"),
                ("user", "postgres"),
                ("pool_mode", "transaction")
            ]
        ),
        Some(1.0)
    );
    assert!(
        saturated
            .of(T, "pgbouncer_client_connections", &[])
            .unwrap()
            >= 11.0,
        "10 clients and pgkpi"
    );

    for client in clients {
        client.await.unwrap();
    }
    eprintln!("load ended after {:?}", started.elapsed());
    let after = exporter.wait_more_runs(T, "pgbouncer_pools", 1.0);
    assert_eq!(
        pool_value(&after, "pgbouncer_pool_client_connections", Some("waiting")),
        Some(0.0)
    );
    assert_eq!(
        pool_value(&after, "pgbouncer_pool_client_connections", Some("active")),
        Some(0.0)
    );
    assert_eq!(
        pool_value(&after, "pgbouncer_pool_server_connections", Some("active")),
        Some(0.0)
    );
    assert_eq!(
        pool_value(&after, "pgbouncer_pool_max_wait_seconds", None),
        Some(0.0)
    );
    let stats = exporter.wait_more_runs(T, "pgbouncer_stats", 1.0);
    let db_label = [("database", "app")];
    assert!(
        stats
            .of(T, "pgbouncer_transactions_total", &db_label)
            .unwrap()
            >= 10.0
    );
    // 8 clients queued behind the holders' 6 s (at least 4 s each, however slow their
    // connecting was): 32 s of queueing and more; pgBouncer counts a transaction's time from
    // the client's statement, so 16 s of sleeping (2 x 6 + 8 x 0.5) plus the queueing.
    let waited = stats
        .of(T, "pgbouncer_client_wait_seconds_total", &db_label)
        .unwrap();
    let in_transactions = stats
        .of(T, "pgbouncer_transaction_seconds_total", &db_label)
        .unwrap();
    eprintln!("client wait {waited:.1} s, in transactions {in_transactions:.1} s");
    assert!(
        waited >= 32.0 && in_transactions >= waited + 15.0,
        "wait {waited}, transactions {in_transactions}"
    );
}

/// A console that refuses the monitoring user, then a restart of pgBouncer: pgkpi serves
/// throughout, pg_up says what holds, and it recovers on its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_user_and_a_restart_are_survived() {
    let (cluster, db) = Cluster::shared_database("pgb_life");
    let mut bouncer = Pgbouncer::start(cluster, &db, 2, false);
    let exporter = Exporter::start(&config(&bouncer, "pgkpi"));
    let refused = exporter.wait_for(Duration::from_secs(30), "a failed attempt", |m| {
        m.value("pgkpi_target_connection_errors_total", &[("target", T)])
            .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(refused.of(T, "pg_up", &[]), Some(0.0));
    assert!(refused
        .find("pgbouncer_pool_client_connections", &[])
        .is_empty());
    let status = exporter.get("/").text();
    assert!(
        status.contains("not allowed"),
        "the reason is shown: {status}"
    );

    bouncer.reconfigure(true);
    exporter.wait_for(Duration::from_secs(30), "the target up once allowed", |m| {
        m.of(T, "pg_up", &[]) == Some(1.0)
            && m.of(T, "pgbouncer_database_pool_size", &[("database", "app")])
                .is_some()
    });

    // One connection per target: pgkpi is one client of the console, however many
    // collectors it runs.
    let monitoring_clients = bouncer
        .admin("SHOW CLIENTS")
        .iter()
        .filter(|row| row.split('|').nth(1) == Some("pgkpi"))
        .count();
    assert_eq!(
        monitoring_clients,
        1,
        "{:#?}",
        bouncer.admin("SHOW CLIENTS")
    );

    bouncer.stop();
    // Served throughout (every scrape is a 200); the target and its collectors say down.
    exporter.wait_for(
        Duration::from_secs(30),
        "pg_up 0 and the pools collector down while pgBouncer is stopped",
        |m| {
            m.of(T, "pg_up", &[]) == Some(0.0)
                && m.of(T, "pgkpi_collector_up", &[("collector", "pgbouncer_pools")]) == Some(0.0)
        },
    );
    bouncer.restart();
    let runs = exporter.metrics().runs(T, "pgbouncer_pools");
    exporter.wait_for(
        Duration::from_secs(30),
        "fresh pool values after the restart",
        |m| {
            m.of(T, "pg_up", &[]) == Some(1.0)
                && m.runs(T, "pgbouncer_pools") > runs
                && m.of(T, "pgkpi_collector_up", &[("collector", "pgbouncer_pools")]) == Some(1.0)
        },
    );
}
