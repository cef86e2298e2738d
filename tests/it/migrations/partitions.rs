//! Partition maintenance of `core.analytics_events` on a clone of the migrated template:
//! idempotent, and retention drops old partitions while keeping their aggregate.

use std::collections::BTreeSet;

use super::migrated_db;
use crate::support::Cluster;

#[test]
fn partition_maintenance_is_idempotent_and_retention_keeps_the_aggregate() {
    let cluster = Cluster::shared();
    let db = migrated_db("parts");
    let partitions = || {
        cluster.psql(
            &db,
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'core.analytics_events'::regclass \
               AND c.relname <> 'analytics_events_default'",
        )
    };
    // Month starts (UTC) from 5 months back to 3 ahead.
    let months = "generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '5 months', \
                                  date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months', \
                                  interval '1 month') m";
    let expected_all = cluster.psql(
        &db,
        &format!("SELECT string_agg('analytics_events_p' || to_char(m, 'YYYY_MM'), ',' ORDER BY m) FROM {months}"),
    );
    // The migration made the current month and 3 ahead; asking for 5 past months adds 5.
    let created = cluster.psql(
        &db,
        "SELECT count(*) FROM core.create_future_partitions('core.analytics_events', 3, 5) r \
         WHERE r LIKE 'created %'",
    );
    assert_eq!(created, "5");
    assert_eq!(partitions(), expected_all);
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT count(*) FROM core.create_future_partitions('core.analytics_events', 3, 5)"
        ),
        "0",
        "a second call must create nothing"
    );
    assert_eq!(partitions(), expected_all);

    // One row per hour for 140 days (inside the 5 past months whatever today's date).
    cluster.psql(
        &db,
        "INSERT INTO core.analytics_events (occurred_at, event_type, user_id) \
         SELECT now() - g * interval '1 hour', (ARRAY['page_view', 'search', 'login'])[1 + g % 3], g % 50 \
         FROM generate_series(0, 24 * 140 - 1) g",
    );
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM core.analytics_events_default"),
        "0"
    );
    // An aggregate older than the 12-month aggregate retention.
    cluster.psql(
        &db,
        "INSERT INTO core.analytics_events_monthly (month, event_type, events, unique_users) \
         VALUES (date_trunc('month', now() - interval '14 months')::date, 'ancient', 1, 1)",
    );
    let per_month = "SELECT to_char(date_trunc('month', occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS month, \
                            event_type, count(*) AS events, count(DISTINCT user_id) AS users \
                     FROM core.analytics_events GROUP BY 1, 2";
    // Expected: partitions whose upper bound is at or before now() - 90 days.
    let dropped_months = format!(
        "SELECT m FROM {months} WHERE (m + interval '1 month') AT TIME ZONE 'UTC' <= now() - interval '90 days'"
    );
    let expected_dropped = cluster.psql(
        &db,
        &format!(
            "SELECT string_agg('analytics_events_p' || to_char(m, 'YYYY_MM'), ',' ORDER BY m) \
             FROM ({dropped_months}) d"
        ),
    );
    let n_dropped = expected_dropped
        .split(',')
        .filter(|s| !s.is_empty())
        .count();
    assert!(
        n_dropped >= 1,
        "140 days of rows must leave a month to drop"
    );
    let expected_aggregate = cluster.psql(
        &db,
        &format!(
            "SELECT string_agg(format('%s/%s/%s/%s', month, event_type, events, users), ',' \
                               ORDER BY month, event_type) \
             FROM ({per_month}) p \
             WHERE month::timestamp IN ({dropped_months})"
        ),
    );
    let expected_remaining = cluster.psql(
        &db,
        &format!(
            "SELECT sum(events) FROM ({per_month}) p WHERE month::timestamp NOT IN ({dropped_months})"
        ),
    );

    let report = cluster.psql(
        &db,
        "SELECT * FROM core.apply_retention('core.analytics_events', '90 days', '12 months')",
    );
    let dropped_lines = report.lines().filter(|l| l.starts_with("dropped ")).count();
    assert_eq!(dropped_lines, n_dropped, "retention report:\n{report}");
    assert!(
        report.contains("deleted 1 aggregate rows"),
        "the 14-month-old aggregate must go:\n{report}"
    );
    let remaining: BTreeSet<String> = expected_all
        .split(',')
        .filter(|p| !expected_dropped.split(',').any(|d| d == *p))
        .map(String::from)
        .collect();
    let after: BTreeSet<String> = partitions().split(',').map(String::from).collect();
    assert_eq!(after, remaining, "retention dropped the wrong partitions");
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM core.analytics_events"),
        expected_remaining,
        "rows newer than the policy must stay"
    );
    let aggregate = || {
        cluster.psql(
            &db,
            "SELECT string_agg(format('%s/%s/%s/%s', to_char(month, 'YYYY-MM-DD'), event_type, \
                                      events, unique_users), ',' ORDER BY month, event_type) \
             FROM core.analytics_events_monthly",
        )
    };
    assert_eq!(
        aggregate(),
        expected_aggregate,
        "the aggregate must hold exactly the dropped months' counts"
    );

    // Idempotent: a second run drops nothing and leaves the aggregate alone.
    let again = cluster.psql(
        &db,
        "SELECT * FROM core.apply_retention('core.analytics_events', '90 days', '12 months')",
    );
    assert_eq!(again, "", "second retention run:\n{again}");
    assert_eq!(
        partitions()
            .split(',')
            .map(String::from)
            .collect::<BTreeSet<_>>(),
        remaining
    );
    assert_eq!(aggregate(), expected_aggregate);
}
