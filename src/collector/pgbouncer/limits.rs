//! `pgbouncer_limits`: the pooler's own limits (SHOW CONFIG), its client and server
//! connections (SHOW LISTS) to hold against them, and its version.

use std::time::Duration;

use super::show::{number, show, text};
use crate::collector::{CollectFuture, Collector, Lane, Session, Spec};
use crate::config::TargetKind;
use crate::metric::{describe_all, FamilyDesc, Metric};

pub fn spec() -> Spec {
    Spec {
        name: "pgbouncer_limits",
        description: "pgBouncer target: its connection limits (SHOW CONFIG), client and server connections in use (SHOW LISTS), version.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: TargetKind::Pgbouncer,
        scope: crate::config::Scope::Server,
        families,
        build: |_| Box::new(Limits),
    }
}

crate::metric::metrics! {
    VERSION = gauge("pgbouncer_version_info", &["target", "version"], "Always 1; the pgBouncer version (SHOW VERSION) as a label.");
    MAX_CLIENT_CONN = gauge("pgbouncer_config_max_client_conn", &["target"], "Most client connections pgBouncer accepts (max_client_conn); pgbouncer_client_connections over it is the pooler's client connection use.");
    DEFAULT_POOL_SIZE = gauge("pgbouncer_config_default_pool_size", &["target"], "Server connections per user/database pool unless the database sets its own (default_pool_size).");
    MIN_POOL_SIZE = gauge("pgbouncer_config_min_pool_size", &["target"], "Server connections kept open per pool even when idle (min_pool_size).");
    RESERVE_POOL_SIZE = gauge("pgbouncer_config_reserve_pool_size", &["target"], "Extra server connections per pool for clients that waited reserve_pool_timeout (reserve_pool_size).");
    MAX_DB_CONNECTIONS = gauge("pgbouncer_config_max_db_connections", &["target"], "Most server connections per database over all its pools (max_db_connections); 0 means no limit.");
    MAX_USER_CONNECTIONS = gauge("pgbouncer_config_max_user_connections", &["target"], "Most server connections per user over all its pools (max_user_connections); 0 means no limit.");
    CLIENTS = gauge("pgbouncer_client_connections", &["target"], "Client connections pgBouncer holds, logging in or logged in (SHOW LISTS used_clients).");
    SERVERS = gauge("pgbouncer_server_connections", &["target"], "Server connections pgBouncer holds (SHOW LISTS used_servers).");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        VERSION,
        MAX_CLIENT_CONN,
        DEFAULT_POOL_SIZE,
        MIN_POOL_SIZE,
        RESERVE_POOL_SIZE,
        MAX_DB_CONNECTIONS,
        MAX_USER_CONNECTIONS,
        CLIENTS,
        SERVERS,
    ])
}

/// SHOW CONFIG key → family. Only counts: their values read the same in every release,
/// whereas time settings changed units and formats over the years.
const SETTINGS: &[(&str, Metric)] = &[
    ("max_client_conn", MAX_CLIENT_CONN),
    ("default_pool_size", DEFAULT_POOL_SIZE),
    ("min_pool_size", MIN_POOL_SIZE),
    ("reserve_pool_size", RESERVE_POOL_SIZE),
    ("max_db_connections", MAX_DB_CONNECTIONS),
    ("max_user_connections", MAX_USER_CONNECTIONS),
];

/// SHOW LISTS list name → family.
const LISTS: &[(&str, Metric)] = &[("used_clients", CLIENTS), ("used_servers", SERVERS)];

struct Limits;

impl Collector for Limits {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let config = show(&session.client, "CONFIG").await?;
            let lists = show(&session.client, "LISTS").await?;
            let mut out = vec![VERSION
                .family()
                .with(&[("version", session.server.version.as_str())], 1.0)];
            for (key, metric) in SETTINGS {
                if let Some(value) = config
                    .iter()
                    .find(|row| text(row, "key") == Some(key))
                    .and_then(|row| number(row, "value"))
                {
                    out.push(metric.family().with(&[], value));
                }
            }
            for (list, metric) in LISTS {
                if let Some(value) = lists
                    .iter()
                    .find(|row| text(row, "list") == Some(list))
                    .and_then(|row| number(row, "items"))
                {
                    out.push(metric.family().with(&[], value));
                }
            }
            Ok(out)
        })
    }
}
