//! Replication with a real streaming standby (pg_basebackup): the primary reports the standby
//! and its lag, an idle slot retaining WAL; the standby reports recovery and replay lag, and the
//! primary-only collector is skipped there by design.

use std::time::Duration;

use crate::support::{Cluster, Exporter, ExporterConfig};

/// The replication collectors every second.
fn config(target: &str, dsn: &str) -> String {
    ["replication", "replication_slots", "recovery", "wal"]
        .iter()
        .fold(ExporterConfig::new(target, dsn), |config, collector| {
            config.interval(collector, "1s")
        })
        .build()
}

#[test]
fn primary_and_standby_report_replication() {
    let primary = Cluster::start();
    let standby = Cluster::standby_of(&primary);
    primary.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('idle_slot', true); \
         CREATE TABLE r AS SELECT g AS id FROM generate_series(1, 50000) g",
    );
    let on_primary = Exporter::start(&config("primary", &primary.dsn("postgres")));
    let on_standby = Exporter::start(&config("standby", &standby.dsn("postgres")));

    // The primary sees its standby streaming, with a lag in bytes matching pg_stat_replication.
    let standby_labels = [
        ("target", "primary"),
        ("application_name", "standby1"),
        ("state", "streaming"),
    ];
    // Collectors publish independently: wait until every family asserted on below is in.
    let slot = [("target", "primary"), ("slot_name", "idle_slot")];
    let m = on_primary.wait_for(Duration::from_secs(20), "the standby on the primary", |m| {
        m.value("pg_replication_replay_lag_bytes", &standby_labels)
            .is_some()
            && m.value("pg_in_recovery", &[("target", "primary")])
                .is_some()
            && m.value("pg_replication_slot_retained_wal_bytes", &slot)
                .is_some()
            && m.value(
                "pgkpi_collector_skipped",
                &skipped("primary", "recovery", "primary"),
            )
            .is_some()
    });
    let lag = m
        .value("pg_replication_replay_lag_bytes", &standby_labels)
        .unwrap();
    assert!(lag >= 0.0, "replay lag bytes {lag}");
    assert_eq!(
        m.value("pg_in_recovery", &[("target", "primary")]),
        Some(0.0)
    );
    // The idle slot retains the WAL written since it was created.
    assert_eq!(m.value("pg_replication_slot_active", &slot), Some(0.0));
    let retained = m
        .value("pg_replication_slot_retained_wal_bytes", &slot)
        .unwrap();
    let expected = primary.number(
        "postgres",
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots \
         WHERE slot_name = 'idle_slot'",
    );
    assert!(
        retained > 1_000_000.0 && retained <= expected,
        "retained {retained}, now {expected}"
    );
    assert_eq!(
        m.value(
            "pgkpi_collector_skipped",
            &skipped("primary", "recovery", "primary")
        ),
        Some(1.0)
    );

    // The standby: in recovery, replay lag exported, primary-only collectors skipped.
    let m = on_standby.wait_for(
        Duration::from_secs(20),
        "recovery metrics on the standby",
        |m| {
            let standby = [("target", "standby")];
            m.value("pg_standby_replay_lag_bytes", &standby).is_some()
                && m.value("pg_in_recovery", &standby).is_some()
                && m.value("pg_standby_replay_paused", &standby).is_some()
                && m.value(
                    "pgkpi_collector_skipped",
                    &skipped("standby", "replication", "standby"),
                )
                .is_some()
        },
    );
    assert_eq!(
        m.value("pg_in_recovery", &[("target", "standby")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("pg_standby_replay_paused", &[("target", "standby")]),
        Some(0.0)
    );
    assert_eq!(
        m.value(
            "pgkpi_collector_skipped",
            &skipped("standby", "replication", "standby")
        ),
        Some(1.0)
    );
    for collector in ["recovery", "replication", "wal", "replication_slots"] {
        assert_eq!(
            m.value(
                "pgkpi_collector_errors_total",
                &[("target", "standby"), ("collector", collector)]
            ),
            Some(0.0),
            "{collector} failed on the standby:\n{}",
            on_standby.logs()
        );
    }
    // Caught up and idle: replay lag falls to 0 (not "seconds since the last write").
    on_standby.wait_for(Duration::from_secs(20), "replay lag back to 0", |m| {
        m.value("pg_standby_replay_lag_seconds", &[("target", "standby")]) == Some(0.0)
    });
}

fn skipped<'a>(target: &'a str, collector: &'a str, reason: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("target", target),
        ("collector", collector),
        ("reason", reason),
    ]
}
