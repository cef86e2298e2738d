//! `pgbouncer_pools`: SHOW POOLS (clients and servers of each database/user pool by state,
//! the longest client wait, the pool mode) and SHOW DATABASES (how many server connections
//! each database's pools may open). Utilization is a PromQL division: active servers of a
//! pool over its database's pool size.

use std::time::Duration;

use super::show::{number, show, text, MAX_POOLS};
use crate::collector::{CollectFuture, Collector, Lane, Session, Spec};
use crate::config::TargetKind;
use crate::metric::{describe_all, FamilyDesc};

pub fn spec() -> Spec {
    Spec {
        name: "pgbouncer_pools",
        description: "pgBouncer target: clients, servers and the longest wait per pool (SHOW POOLS), pool sizes per database (SHOW DATABASES).",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: TargetKind::Pgbouncer,
        scope: crate::config::Scope::Server,
        families,
        build: |_| Box::new(Pools { dropped: 0 }),
    }
}

crate::metric::metrics! {
    CLIENTS = gauge("pgbouncer_pool_client_connections", &["target", "database", "user", "state"], "Client connections of the pool by state (SHOW POOLS cl_*): active (paired with a server or idle), waiting (queued for a server), active_cancel_req and waiting_cancel_req (cancel requests, 1.16+), cancel_req (before 1.16).");
    SERVERS = gauge("pgbouncer_pool_server_connections", &["target", "database", "user", "state"], "Server connections of the pool by state (SHOW POOLS sv_*): active (paired with a client), idle (ready), used (idle, to be checked before reuse), tested (being reset or checked), login (logging in), active_cancel and being_canceled (1.18+).");
    MAX_WAIT = gauge("pgbouncer_pool_max_wait_seconds", &["target", "database", "user"], "How long the oldest waiting client of the pool has waited for a server (maxwait + maxwait_us); 0 when none waits.");
    MODE = gauge("pgbouncer_pool_mode_info", &["target", "database", "user", "pool_mode"], "Always 1; the pool's mode (session, transaction, statement) as a label.");
    POOL_SIZE = gauge("pgbouncer_database_pool_size", &["target", "database"], "Server connections each user pool of the database may open (SHOW DATABASES pool_size); active servers of a pool over it is the pool's utilization.");
    RESERVE_POOL = gauge("pgbouncer_database_reserve_pool_size", &["target", "database"], "Extra server connections a pool may open when a client has waited reserve_pool_timeout (SHOW DATABASES reserve_pool).");
    MAX_CONNECTIONS = gauge("pgbouncer_database_max_connections", &["target", "database"], "Most server connections of the database over all its pools (SHOW DATABASES max_connections); 0 means no limit.");
    CURRENT_CONNECTIONS = gauge("pgbouncer_database_current_connections", &["target", "database"], "Server connections of the database over all its pools (SHOW DATABASES current_connections).");
    PAUSED = gauge("pgbouncer_database_paused", &["target", "database"], "1 while the database is paused (PAUSE), 0 otherwise.");
    DISABLED = gauge("pgbouncer_database_disabled", &["target", "database"], "1 while the database is disabled (DISABLE), 0 otherwise.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        CLIENTS,
        SERVERS,
        MAX_WAIT,
        MODE,
        POOL_SIZE,
        RESERVE_POOL,
        MAX_CONNECTIONS,
        CURRENT_CONNECTIONS,
        PAUSED,
        DISABLED,
    ])
}

/// SHOW POOLS column → `state` label of the client family.
const CLIENT_STATES: &[(&str, &str)] = &[
    ("cl_active", "active"),
    ("cl_waiting", "waiting"),
    ("cl_active_cancel_req", "active_cancel_req"),
    ("cl_waiting_cancel_req", "waiting_cancel_req"),
    ("cl_cancel_req", "cancel_req"),
];

/// SHOW POOLS column → `state` label of the server family.
const SERVER_STATES: &[(&str, &str)] = &[
    ("sv_active", "active"),
    ("sv_idle", "idle"),
    ("sv_used", "used"),
    ("sv_tested", "tested"),
    ("sv_login", "login"),
    ("sv_active_cancel", "active_cancel"),
    ("sv_being_canceled", "being_canceled"),
];

/// SHOW DATABASES column → family.
const DATABASE_COLUMNS: &[(&str, crate::metric::Metric)] = &[
    ("pool_size", POOL_SIZE),
    ("reserve_pool", RESERVE_POOL),
    ("max_connections", MAX_CONNECTIONS),
    ("current_connections", CURRENT_CONNECTIONS),
    ("paused", PAUSED),
    ("disabled", DISABLED),
];

struct Pools {
    dropped: u64,
}

impl Collector for Pools {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let pools = show(&session.client, "POOLS").await?;
            let databases = show(&session.client, "DATABASES").await?;
            let mut clients = CLIENTS.family();
            let mut servers = SERVERS.family();
            let mut max_wait = MAX_WAIT.family();
            let mut mode = MODE.family();
            self.dropped = 0;
            for (i, row) in pools.iter().enumerate() {
                let (Some(database), Some(user)) = (text(row, "database"), text(row, "user"))
                else {
                    continue;
                };
                if i >= MAX_POOLS {
                    self.dropped += 1;
                    continue;
                }
                let pool = [("database", database), ("user", user)];
                for (column, state) in CLIENT_STATES {
                    if let Some(value) = number(row, column) {
                        clients.push(&[pool[0], pool[1], ("state", state)], value);
                    }
                }
                for (column, state) in SERVER_STATES {
                    if let Some(value) = number(row, column) {
                        servers.push(&[pool[0], pool[1], ("state", state)], value);
                    }
                }
                if let Some(seconds) = number(row, "maxwait") {
                    let micros = number(row, "maxwait_us").unwrap_or(0.0);
                    max_wait.push(&pool, seconds + micros / 1e6);
                }
                if let Some(pool_mode) = text(row, "pool_mode") {
                    mode.push(&[pool[0], pool[1], ("pool_mode", pool_mode)], 1.0);
                }
            }
            let mut out = vec![clients, servers, max_wait, mode];
            let mut per_database: Vec<_> = DATABASE_COLUMNS
                .iter()
                .map(|(column, metric)| (*column, metric.family()))
                .collect();
            for (i, row) in databases.iter().enumerate() {
                let Some(database) = text(row, "name") else {
                    continue;
                };
                if i >= MAX_POOLS {
                    self.dropped += 1;
                    continue;
                }
                for (column, family) in &mut per_database {
                    if let Some(value) = number(row, column) {
                        family.push(&[("database", database)], value);
                    }
                }
            }
            out.extend(per_database.into_iter().map(|(_, family)| family));
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}
