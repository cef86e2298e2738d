//! Faults on the server side, each asserting the bound it protects: backends within the
//! budget through a lock storm (`storm`), scrapes answered and connections back together after
//! restarts, crashes and a frozen server (`server`), values absent rather than wrong after a
//! lost privilege (`privilege`).
//!
//! The scenarios that lock catalogs, stop, freeze or crash the server run on a cluster of their
//! own; the privilege scenario works in a database of the shared cluster.

mod dsn;
mod privilege;
mod server;
mod storm;

use crate::support::{Cluster, ExporterConfig, Metrics};

/// The login role pgkpi uses in these scenarios, so that its backends can be counted apart.
pub const ROLE: &str = "pgkpi_storm";

/// The postmaster's pid, from the first line of `postmaster.pid`.
pub fn postmaster_pid(cluster: &Cluster) -> u32 {
    let text = std::fs::read_to_string(cluster.dir.join("data/postmaster.pid"))
        .expect("read postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// The pids of the postmaster's children, read from `/proc` (processes that exit meanwhile
/// are left out).
pub fn children_of(postmaster: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may have exited since the listing: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            found.push(pid);
        }
    }
    found
}

/// Backends of `role` on the server, counted from the process titles of the postmaster's
/// children (`postgres: <role> <db> <host>(<port>) <state>`). Unlike `pg_stat_activity`, this
/// needs no catalog access and sees backends still in startup (waiting for a lock before they
/// report in the statistics views) as well as backends whose client has gone.
pub fn backends_of(postmaster: u32, role: &str) -> Vec<String> {
    let prefix = format!("postgres: {role} ");
    children_of(postmaster)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let title = String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .to_string();
            title
                .starts_with(&prefix)
                .then(|| format!("{pid}: {title}"))
        })
        .collect()
}

/// A configuration for `cluster` as `ROLE`: both lanes in use (the activity sampler runs), a
/// short connect_timeout so that several attempts time out during the storm.
pub fn storm_config(cluster: &Cluster) -> String {
    let dsn = cluster
        .dsn("postgres")
        .replace("user=postgres", &format!("user={ROLE}"));
    ExporterConfig::new("storm", &dsn)
        .only_builtin(&["server", "activity_sampler"])
        .session("application_name", "pgkpi-storm")
        .session("connect_timeout", "2s")
        .build()
}

/// Both connections of the target are up: the main one (`pg_up`) and the sampler's.
pub fn both_lanes_up(m: &Metrics) -> bool {
    m.value("pg_up", &[("target", "storm")]) == Some(1.0)
        && m.of(
            "storm",
            "pgkpi_collector_up",
            &[("collector", "activity_sampler")],
        ) == Some(1.0)
}
