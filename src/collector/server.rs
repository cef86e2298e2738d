//! `server`: version, recovery state and start time of the server.
//!
//! Reads nothing beyond what the connection already learnt plus `now()`, so it doubles as the
//! liveness probe of the session: when it fails the session is broken.

use std::time::Duration;

use super::{CollectFuture, Collector, Session, Spec};
use crate::metric::{describe_all, FamilyDesc};

pub fn spec() -> Spec {
    Spec {
        name: "server",
        description: "Server version, recovery state and start time; probes the session.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |_| Box::new(Server),
    }
}

crate::metric::metrics! {
    INFO = gauge("pg_server_info", &["target", "version"], "Always 1; the server version as a label.");
    VERSION_NUM = gauge("pg_server_version_num", &["target"], "server_version_num of the server, e.g. 150018.");
    IN_RECOVERY = gauge("pg_in_recovery", &["target"], "1 when the server is a standby (pg_is_in_recovery()), 0 on a primary.");
    START_TIME = gauge("pg_postmaster_start_time_seconds", &["target"], "Unix time the server started (pg_postmaster_start_time()).");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[INFO, VERSION_NUM, IN_RECOVERY, START_TIME])
}

struct Server;

impl Collector for Server {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            // Recovery state can change under a live connection (promotion), so ask each time.
            let row = session
                .client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?;
            let in_recovery: bool = row.get(0);
            let info = &session.server;
            let out = vec![
                INFO.family()
                    .with(&[("version", info.version.as_str())], 1.0),
                VERSION_NUM.family().with(&[], info.version_num as f64),
                IN_RECOVERY
                    .family()
                    .with(&[], if in_recovery { 1.0 } else { 0.0 }),
                START_TIME.family().with(&[], info.start_time_seconds),
            ];
            Ok(out)
        })
    }
}
