//! `server`: version, recovery state and start time of the server.
//!
//! Reads nothing beyond what the connection already learnt plus `now()`, so it doubles as the
//! liveness probe of the session: when it fails the session is broken.

use std::time::Duration;

use super::{CollectFuture, Collector, Session, Spec};
use crate::metric::{Family, FamilyDesc, MetricType};

pub fn spec() -> Spec {
    Spec {
        name: "server",
        description: "Server version, recovery state and start time; probes the session.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families,
        build: |_| Box::new(Server),
    }
}

fn families() -> Vec<FamilyDesc> {
    vec![
        FamilyDesc::new(
            "pg_server_info",
            MetricType::Gauge,
            &["target", "version"],
            "Always 1; the server version as a label.",
        ),
        FamilyDesc::new(
            "pg_server_version_num",
            MetricType::Gauge,
            &["target"],
            "server_version_num of the server, e.g. 150018.",
        ),
        FamilyDesc::new(
            "pg_in_recovery",
            MetricType::Gauge,
            &["target"],
            "1 when the server is a standby (pg_is_in_recovery()), 0 on a primary.",
        ),
        FamilyDesc::new(
            "pg_postmaster_start_time_seconds",
            MetricType::Gauge,
            &["target"],
            "Unix time the server started (pg_postmaster_start_time()).",
        ),
    ]
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
            let mut out = Vec::new();
            for desc in families() {
                let family = Family::new(desc.name.clone(), desc.help.clone(), desc.kind);
                out.push(match desc.name.as_str() {
                    "pg_server_info" => family.with(&[("version", info.version.as_str())], 1.0),
                    "pg_server_version_num" => family.with(&[], info.version_num as f64),
                    "pg_in_recovery" => family.with(&[], if in_recovery { 1.0 } else { 0.0 }),
                    _ => family.with(&[], info.start_time_seconds),
                });
            }
            Ok(out)
        })
    }
}
