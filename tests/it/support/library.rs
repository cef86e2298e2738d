//! Every use of the pgkpi library's API by the tests, in one place: when the library moves or
//! renames one of these, this file is the one to follow it.

use std::collections::BTreeSet;

/// Names of the built-in collectors of PostgreSQL targets (Rust ones and built-in
/// definitions); a pgBouncer target's are `pgbouncer_*`.
pub fn builtin_collectors() -> Vec<String> {
    pgkpi::collector::registry::load(&[])
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == pgkpi::config::TargetKind::Postgres)
        .map(|e| e.name)
        .collect()
}

/// Every metric family pgkpi defines: its collectors' and its own telemetry.
pub fn defined_families() -> BTreeSet<String> {
    pgkpi::collector::registry::load(&[])
        .unwrap()
        .iter()
        .flat_map(|e| e.families.iter().map(|f| f.name.clone()))
        .chain(
            pgkpi::telemetry::Telemetry::describe()
                .into_iter()
                .map(|f| f.name),
        )
        .collect()
}

/// The statements (purpose, SQL) one poll of the webhooks collector runs on these tables.
pub fn webhook_statements(
    deliveries_table: &str,
    events_table: &str,
    top_failing: usize,
) -> Vec<(&'static str, String)> {
    let config = pgkpi::collector::webhooks::settings::WebhooksConfig {
        deliveries_table: Some(deliveries_table.into()),
        events_table: Some(events_table.into()),
        top_failing,
        ..Default::default()
    };
    config
        .statements()
        .unwrap()
        .into_iter()
        .map(|(purpose, sql)| (purpose.name(), sql))
        .collect()
}
