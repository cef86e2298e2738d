//! Health of each target and collector, for `/readyz` and the status page.
//!
//! Written by the poller after every connection attempt and collector run; read by the HTTP
//! side. Error texts here are already safe to show: masked endpoints, no query text.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct CollectorStatus {
    #[serde(serialize_with = "as_seconds")]
    pub interval: Duration,
    /// True once the collector has run (or been skipped because the target was down) once.
    pub attempted: bool,
    pub up: bool,
    /// Values served are from an earlier run because the latest failed.
    pub stale: bool,
    pub runs: u64,
    pub errors: u64,
    pub last_duration_seconds: Option<f64>,
    pub last_success_unix: Option<f64>,
    pub last_error: Option<String>,
    /// Why the collector does not run here, when it is skipped by design.
    pub skipped: Option<String>,
}

impl CollectorStatus {
    /// Records a finished run: a success or skip (`Ok`) is up, a failure (`Err` with its
    /// message) is down and counted as an error; either way the run is counted and timed.
    /// `stale` starts false; the poller sets it when a failure leaves older values served.
    pub fn finished_run(&mut self, elapsed_seconds: f64, outcome: Result<(), String>) {
        self.attempted = true;
        self.stale = false;
        self.runs += 1;
        self.last_duration_seconds = Some(elapsed_seconds);
        match outcome {
            Ok(()) => {
                self.up = true;
                self.last_error = None;
            }
            Err(message) => {
                self.up = false;
                self.errors += 1;
                self.last_error = Some(message);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TargetStatus {
    /// `user@host:port/db`, password never included.
    pub endpoint: String,
    /// True once the first connection attempt has finished, successfully or not.
    pub attempted: bool,
    /// True once a connection has succeeded since pgkpi started; an outage later does not
    /// clear it (`up` says what holds now).
    pub connected_once: bool,
    pub up: bool,
    pub server_version: Option<String>,
    pub last_error: Option<String>,
    pub collectors: BTreeMap<String, CollectorStatus>,
}

#[derive(Default)]
pub struct Status {
    targets: Mutex<BTreeMap<String, TargetStatus>>,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Status {
    pub fn new() -> Status {
        Status::default()
    }

    /// Declares a target and its collectors before polling starts.
    pub fn register(&self, target: &str, endpoint: &str, collectors: &[(String, Duration)]) {
        let mut targets = self.targets.lock().expect("status lock");
        let entry = targets.entry(target.to_string()).or_default();
        entry.endpoint = endpoint.to_string();
        for (name, interval) in collectors {
            entry.collectors.insert(
                name.clone(),
                CollectorStatus {
                    interval: *interval,
                    ..Default::default()
                },
            );
        }
    }

    /// Forgets a target that stopped (removed by a reload, or restarted with a new plan).
    pub fn remove(&self, target: &str) {
        self.targets.lock().expect("status lock").remove(target);
    }

    pub fn update_target(&self, target: &str, f: impl FnOnce(&mut TargetStatus)) {
        let mut targets = self.targets.lock().expect("status lock");
        f(targets.entry(target.to_string()).or_default());
    }

    pub fn update_collector(
        &self,
        target: &str,
        collector: &str,
        f: impl FnOnce(&mut CollectorStatus),
    ) {
        let mut targets = self.targets.lock().expect("status lock");
        let t = targets.entry(target.to_string()).or_default();
        f(t.collectors.entry(collector.to_string()).or_default());
    }

    /// A copy of everything, for rendering.
    pub fn view(&self) -> BTreeMap<String, TargetStatus> {
        self.targets.lock().expect("status lock").clone()
    }

    /// Ready once every target finished its first connection attempt and every collector ran
    /// (or was skipped because its target is down) at least once.
    pub fn ready(&self) -> bool {
        self.targets
            .lock()
            .expect("status lock")
            .values()
            .all(|t| t.attempted && t.collectors.values().all(|c| c.attempted))
    }

    /// True once at least one target has connected since pgkpi started. Any rather than
    /// every: what it tells apart is an exporter that can reach nothing (wrong secret, DNS,
    /// network policy) from one that works, without letting one dead database among several
    /// hold the others' metrics back; each target's `connected_once` says which.
    pub fn connected(&self) -> bool {
        self.targets
            .lock()
            .expect("status lock")
            .values()
            .any(|t| t.connected_once)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_once_any_target_and_for_good() {
        let status = Status::new();
        status.register("a", "a", &[("server".into(), Duration::from_secs(1))]);
        status.register("b", "b", &[]);
        assert!(!status.ready() && !status.connected());
        let failed = |t: &mut TargetStatus| {
            t.attempted = true;
            t.up = false;
        };
        status.update_target("a", failed);
        status.update_target("b", failed);
        status.update_collector("a", "server", |c| c.finished_run(0.0, Ok(())));
        assert!(status.ready(), "a failed first attempt counts as a poll");
        assert!(!status.connected(), "but not as a connection");
        status.update_target("b", |t| {
            t.connected_once = true;
            t.up = true;
        });
        assert!(status.connected(), "one target of two is enough");
        status.update_target("b", failed);
        assert!(status.connected(), "a later outage does not undo it");
    }
}
