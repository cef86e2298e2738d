//! `/probe?target=host:port&auth_module=name`: a target named by Prometheus is polled in the
//! background while it keeps being probed, served on /probe only (never on /metrics), and
//! dropped once probes stop; only allowed targets and named auth modules are accepted.

use std::time::Duration;

use crate::support::{retry, Cluster, Exporter, ExporterConfig};

#[test]
fn a_probed_target_is_polled_while_probed_and_dropped_after() {
    let (cluster, db) = Cluster::shared_database("probe");
    let app = format!("pgkpi-{db}");
    let toml = ExporterConfig::new(&format!("{db}-configured"), &cluster.dsn(&db))
        .only_builtin(&["server"])
        .session("application_name", app.as_str())
        .raw(&format!(
            "[probe]\nallowed_targets = [\"127.0.0.1:*\"]\nexpire_after = \"3s\"\n\
             [probe.auth_modules.main]\ndsn = \"user=postgres dbname={db} sslmode=disable\"\n"
        ))
        .build();
    let exporter = Exporter::start(&toml);
    let name = format!("127.0.0.1:{}", cluster.port);
    let path = format!("/probe?target={name}&auth_module=main");
    let series = format!("pg_server_version_num{{target=\"{name}\"}}");
    let body = retry(Duration::from_secs(30), Duration::from_millis(200), || {
        let response = exporter.get(&path);
        assert_eq!(response.status, 200, "{}", response.text());
        let text = response.text();
        if text.contains(&series) && text.contains(&format!("pg_up{{target=\"{name}\"}} 1")) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .unwrap_or_else(|last| panic!("the probed target's values never came:\n{last}"));
    assert!(
        !body.contains(&format!("{db}-configured")),
        "/probe serves only the probed target:\n{body}"
    );
    let metrics = exporter.metrics();
    assert!(
        !metrics.text.contains(&format!("target=\"{name}\"")),
        "/metrics leaves probed targets out"
    );
    assert!(metrics.text.contains(&format!("{db}-configured")));
    assert_eq!(metrics.value("pgkpi_probe_targets", &[]), Some(1.0));

    // Refused: a target outside the allowed patterns, an unknown auth module, no target.
    assert_eq!(
        exporter
            .get("/probe?target=10.1.2.3:5432&auth_module=main")
            .status,
        403
    );
    let unknown = exporter.get(&format!("/probe?target={name}&auth_module=nope"));
    assert_eq!(unknown.status, 400);
    assert!(
        unknown
            .text()
            .contains("no auth module \"nope\"; known: main"),
        "{}",
        unknown.text()
    );
    assert_eq!(exporter.get("/probe?auth_module=main").status, 400);

    // No more probes: dropped after expire_after (3 s, checked every 5 s), session closed.
    let sessions = || {
        cluster.number(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"),
        )
    };
    assert_eq!(
        sessions(),
        2.0,
        "the configured target's and the probed one's"
    );
    exporter.wait_for(Duration::from_secs(30), "the probed target dropped", |m| {
        m.value("pgkpi_probe_targets", &[]) == Some(0.0)
    });
    retry(Duration::from_secs(10), Duration::from_millis(100), || {
        let n = sessions();
        if n == 1.0 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .unwrap_or_else(|n| panic!("{n} sessions left; the probed one should be closed"));
}

#[test]
fn probe_is_off_without_allowed_targets() {
    let (cluster, db) = Cluster::shared_database("probe_off");
    let exporter = Exporter::start(
        &ExporterConfig::new(&db, &cluster.dsn(&db))
            .only_builtin(&["server"])
            .build(),
    );
    let response = exporter.get(&format!(
        "/probe?target=127.0.0.1:{}&auth_module=main",
        cluster.port
    ));
    assert_eq!(response.status, 403);
    assert!(
        response.text().contains("allowed_targets"),
        "{}",
        response.text()
    );
}
