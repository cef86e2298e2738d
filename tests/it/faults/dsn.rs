//! Bad DSNs at run time (a role or database that does not exist, a closed port, a host name
//! that does not resolve): each target reports itself down with a reason, the others are
//! unaffected, and the password never appears in the logs, the metrics or the status page.

use std::time::Duration;

use crate::support::{free_port, Cluster, Exporter, ExporterConfig};

const PASSWORD: &str = "hunter2-never-shown";

#[test]
fn bad_dsns_are_reported_per_target_and_never_show_the_password() {
    let (cluster, db) = Cluster::shared_database("baddsn");
    let good = cluster.dsn(&db);
    let port = cluster.port;
    let bad = [
        ("norole", format!("host=127.0.0.1 port={port} user=no_such_role password={PASSWORD} dbname={db} sslmode=disable")),
        ("nodb", format!("host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=no_such_db sslmode=disable")),
        ("closed", format!("host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=x sslmode=disable", free_port())),
        ("nohost", format!("postgresql://postgres:{PASSWORD}@no-such-host.invalid:5432/x?sslmode=disable")),
    ];
    let mut config = ExporterConfig::new("good", &good).only_builtin(&["server"]);
    for (name, dsn) in &bad {
        config = config.raw(&format!(
            "[[targets]]\nname = \"{name}\"\ndsn = \"{dsn}\"\n"
        ));
    }
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(30), "every bad target reported", |m| {
        m.value("pg_up", &[("target", "good")]) == Some(1.0)
            && bad.iter().all(|(name, _)| {
                m.value("pg_up", &[("target", name)]) == Some(0.0)
                    && m.value("pgkpi_target_connection_errors_total", &[("target", name)])
                        .is_some_and(|v| v >= 1.0)
            })
    });
    let logs = exporter.logs();
    let status = exporter.get("/").text();
    let ready = exporter.get("/readyz").text();
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &m.text),
        ("status page", &status),
        ("readyz", &ready),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in the {what}:\n{text}"
        );
    }
    for (name, needle) in [
        ("norole", "no_such_role"),
        ("nodb", "no_such_db"),
        ("closed", "refused"),
        ("nohost", "no-such-host.invalid"),
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("target=\"{name}\"")) && l.contains(needle)),
            "no log line for {name} naming {needle}:\n{logs}"
        );
    }
}
