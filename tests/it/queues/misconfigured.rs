//! A queue whose table is missing is skipped (not an error), a table the role may not read
//! fails with the one hint that fits, and an entry with a bad predicate is rejected by
//! `check-config`.

use std::time::Duration;

use super::T;
use crate::support::{check_config, stderr, Cluster, Exporter, ExporterConfig, TempDir};

#[test]
fn missing_table_is_skipped_and_bad_entries_are_rejected() {
    let (cluster, db) = Cluster::shared_database("noqueue");
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

/// A monitoring role that may not read the queue table gets one hint, the grant that opens
/// the table; not "grant pg_monitor", which does not open application tables.
#[test]
fn a_table_the_role_may_not_read_gets_only_the_select_hint() {
    let (cluster, db) = Cluster::shared_database("qdenied");
    cluster.psql(
        &db,
        "DO $$ BEGIN CREATE ROLE pgkpi_qdenied LOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         CREATE TABLE public.jobs (id int, state text); \
         REVOKE ALL ON public.jobs FROM PUBLIC;",
    );
    let dsn = cluster
        .dsn(&db)
        .replace("user=postgres", "user=pgkpi_qdenied");
    let config = ExporterConfig::new(T, &dsn)
        .only_builtin(&["queues"])
        .interval("queues", "1s")
        .raw("[[queues]]\nname = \"jobs\"\ntable = \"public.jobs\"\nready_predicate = \"state = 'ready'\"\n");
    let exporter = Exporter::start(&config.build());
    let errors = [("target", T), ("collector", "queues")];
    exporter.wait_for(Duration::from_secs(20), "a failed queues run", |m| {
        m.value("pgkpi_collector_errors_total", &errors)
            .is_some_and(|v| v >= 1.0)
    });
    let logs = exporter.logs();
    let denied: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("permission denied for table jobs"))
        .collect();
    assert!(!denied.is_empty(), "no permission error logged:\n{logs}");
    for line in denied {
        assert_eq!(
            line.matches("grant the monitoring role SELECT on the table")
                .count(),
            1,
            "{line}"
        );
        assert!(!line.contains("pg_monitor"), "a second, wrong hint: {line}");
    }
}
