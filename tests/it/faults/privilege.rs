//! A lost privilege: what pgkpi cannot see is reported as unknown, never read as 0.

use std::time::Duration;

use crate::support::{Cluster, Exporter, ExporterConfig, Metrics};

/// The role of the privilege-loss scenario: cluster-wide, so its name is its own.
const PRIV_ROLE: &str = "pgkpi_priv_lost";

/// Issue 13, defect 4: without pg_monitor, other users' sessions lose `state` and
/// `backend_type` in pg_stat_activity, and the activity definition's filters dropped them, so
/// `pg_idle_in_transaction_sessions` read 0 while one was open. Now the collector declares the
/// privilege: after REVOKE it is skipped with reason `permission` within a few intervals and
/// its families are absent (never 0); after GRANT (of pg_read_all_stats alone) the value
/// comes back without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_privilege_is_reported_not_read_as_zero() {
    const T: &str = "priv";
    let (cluster, db) = Cluster::shared_database("priv");
    cluster.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE {PRIV_ROLE} LOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ),
    );
    cluster.psql(
        "postgres",
        &format!("GRANT pg_monitor TO {PRIV_ROLE}; REVOKE pg_read_all_stats FROM {PRIV_ROLE}"),
    );
    let dsn = cluster
        .dsn(&db)
        .replace("user=postgres", &format!("user={PRIV_ROLE}"));
    let exporter = Exporter::start(
        &ExporterConfig::new(T, &dsn)
            .interval("activity", "1s")
            .build(),
    );

    // Another user's (postgres) session, idle inside a transaction for the whole test.
    let other = cluster.client(&db).await;
    other
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let idle = |m: &Metrics| m.of(T, "pg_idle_in_transaction_sessions", &[]);
    exporter.wait_for(Duration::from_secs(20), "the idle session seen", |m| {
        idle(m).is_some_and(|v| v >= 1.0)
    });

    cluster.psql("postgres", &format!("REVOKE pg_monitor FROM {PRIV_ROLE}"));
    let skipped = |m: &Metrics| {
        m.of(
            T,
            "pgkpi_collector_skipped",
            &[("collector", "activity"), ("reason", "permission")],
        )
    };
    let lost = exporter.wait_for(
        Duration::from_secs(20),
        "activity skipped for permission",
        |m| skipped(m) == Some(1.0),
    );
    assert_eq!(
        idle(&lost),
        None,
        "an unknown value is served:\n{}",
        lost.text
    );
    // A few more runs: still skipped, and the value never reads 0 meanwhile.
    let later = exporter.wait_more_runs(T, "activity", 2.0);
    assert_eq!(skipped(&later), Some(1.0), "{}", later.text);
    assert_eq!(idle(&later), None, "{}", later.text);

    // The part of pg_monitor these collectors need is pg_read_all_stats: granting only that
    // brings the value back, without a restart.
    cluster.psql(
        "postgres",
        &format!("GRANT pg_read_all_stats TO {PRIV_ROLE}"),
    );
    exporter.wait_for(Duration::from_secs(20), "the value back after GRANT", |m| {
        idle(m).is_some_and(|v| v >= 1.0) && skipped(m) != Some(1.0)
    });
    other.batch_execute("ROLLBACK").await.unwrap();
}
