//! A queue whose table is missing is skipped (not an error), and an entry with a bad
//! predicate is rejected by `check-config`.

use std::time::Duration;

use super::T;
use crate::support::{check_config, stderr, Cluster, Exporter, ExporterConfig, TempDir};

#[test]
fn missing_table_is_skipped_and_bad_entries_are_rejected() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("noqueue");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "1s")
        .raw("[[queues]]\nname = \"river\"\npreset = \"river\"\n");
    let exporter = Exporter::start(&config.build());
    let labels = [
        ("target", T),
        ("collector", "queues"),
        ("reason", "missing_table"),
    ];
    let m = exporter.wait_for(Duration::from_secs(10), "skipped", |m| {
        m.value("pgkpi_collector_skipped", &labels) == Some(1.0)
    });
    assert_eq!(
        m.value(
            "pgkpi_collector_errors_total",
            &[("target", T), ("collector", "queues")]
        ),
        Some(0.0)
    );
    assert!(exporter.logs().contains("river_job"), "{}", exporter.logs());

    let dir = TempDir::new("badqueue");
    let path = dir.write(
        "pgkpi.toml",
        "[[queues]]\nname = \"jobs\"\ntable = \"app.jobs\"\nready_predicate = \"state = 'ready'; DELETE FROM app.jobs\"\n\n\
         [[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
    );
    let out = check_config(&path);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("queues[0] (jobs): ready_predicate contains ';'"),
        "{stderr}"
    );
}
