//! `activity_sampler`: active-session sampling, the "average active sessions" view that
//! managed services call performance insights.
//!
//! Every second (by default) one light query groups the active client sessions of
//! `pg_stat_activity` by database, wait-event type and wait event, and the collector adds the
//! counts to cumulative counters kept in `&mut self`:
//! * `pg_active_sessions_sampled_total{datname,wait_event_type,wait_event}`: active sessions
//!   seen, summed over samples; `rate(that) / rate(pg_activity_samples_total)` is the average
//!   number of active sessions. A session that is active and waits on nothing is counted as
//!   `wait_event_type="CPU", wait_event="CPU"` (running, or waiting for a CPU, as far as
//!   PostgreSQL can tell).
//! * `pg_lock_wait_seconds_total{datname}`: sessions waiting on a heavyweight lock × the time
//!   actually elapsed since the previous sample, so `rate()` over it is the average number of
//!   sessions waiting on locks.
//!
//! It runs on the target's second connection ([`Lane::Sampler`](super::Lane)), so a
//! slow collector on the main connection never delays it. pgkpi's own sessions are left out.
//! Wait events are a fixed catalogue of the server; databases are capped by
//! `[locks] max_databases` (the first ones seen keep their name, later ones are counted as
//! `datname="(other)"`), so every label set is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};

use super::locks::OTHER_DATABASES;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{describe_all, Family, FamilyDesc};

pub const NAME: &str = "activity_sampler";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Marks the sampler's query in pg_stat_activity (tells its connection apart from the main one).
pub const SAMPLE_SQL: &str = "/* pgkpi activity_sampler */ \
SELECT coalesce(datname, '')::text, coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'CPU'), \
       count(*)::int8 \
FROM pg_stat_activity \
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
  AND application_name IS DISTINCT FROM $1 \
GROUP BY 1, 2, 3";

pub fn spec() -> Spec {
    Spec {
        name: NAME,
        description: "Samples active sessions by wait event every second on a connection of its own; lock-wait seconds.",
        default_interval: DEFAULT_INTERVAL,
        enabled_by_default: true,
        lane: super::Lane::Sampler,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |ctx: &BuildContext| {
            Box::new(ActivitySampler::new(
                ctx.session.application_name.clone(),
                ctx.locks.max_databases,
                ctx.interval,
            ))
        },
    }
}

crate::metric::metrics! {
    SAMPLES = counter("pg_activity_samples_total", &["target"], "Samples of pg_stat_activity taken by the activity sampler.");
    ACTIVE_SESSIONS = counter("pg_active_sessions_sampled_total", &["target", "datname", "wait_event_type", "wait_event"], "Active client sessions seen, summed over samples; divide its rate by the rate of pg_activity_samples_total for average active sessions. Not waiting = wait_event_type \"CPU\".");
    LOCK_WAIT = counter("pg_lock_wait_seconds_total", &["target", "datname"], "Sessions waiting on a lock (wait_event_type Lock) times the time elapsed between samples; its rate is the average number of sessions waiting on locks.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[SAMPLES, ACTIVE_SESSIONS, LOCK_WAIT])
}

/// Cumulative counters of one target, kept between runs.
pub struct ActivitySampler {
    application_name: String,
    max_databases: usize,
    /// Longest gap a sample may stand for: after an outage the sampler does not pretend that
    /// what it sees now lasted the whole outage.
    max_gap: Duration,
    /// When the previous sample was taken.
    previous: Option<Instant>,
    samples: f64,
    /// (datname, wait_event_type, wait_event) → sessions seen.
    active: BTreeMap<(String, String, String), f64>,
    /// datname → lock-wait seconds; every database seen active has a series (from 0).
    lock_wait: BTreeMap<String, f64>,
    /// Databases that keep their name (at most max_databases).
    named: BTreeSet<String>,
}

impl ActivitySampler {
    pub fn new(application_name: String, max_databases: usize, interval: Duration) -> Self {
        ActivitySampler {
            application_name,
            max_databases,
            max_gap: interval * 2,
            previous: None,
            samples: 0.0,
            active: BTreeMap::new(),
            lock_wait: BTreeMap::new(),
            named: BTreeSet::new(),
        }
    }

    /// Adds one sample taken at `at`: rows of (datname, wait_event_type, wait_event, count).
    pub fn record(&mut self, at: Instant, rows: &[(String, String, String, f64)]) {
        let elapsed = self
            .previous
            .map(|p| at.saturating_duration_since(p).min(self.max_gap))
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        self.previous = Some(at);
        self.samples += 1.0;
        for (datname, wait_event_type, wait_event, count) in rows {
            let datname = self.label_for(datname);
            *self
                .active
                .entry((datname.clone(), wait_event_type.clone(), wait_event.clone()))
                .or_default() += count;
            let waited = if wait_event_type == "Lock" {
                count * elapsed
            } else {
                0.0
            };
            *self.lock_wait.entry(datname).or_default() += waited;
        }
    }

    fn label_for(&mut self, datname: &str) -> String {
        if self.named.contains(datname) {
            return datname.to_string();
        }
        if self.named.len() < self.max_databases {
            self.named.insert(datname.to_string());
            return datname.to_string();
        }
        OTHER_DATABASES.to_string()
    }

    pub fn families(&self) -> Vec<Family> {
        let samples = SAMPLES.family().with(&[], self.samples);
        let mut active = ACTIVE_SESSIONS.family();
        for ((datname, wait_event_type, wait_event), count) in &self.active {
            active.push(
                &[
                    ("datname", datname),
                    ("wait_event_type", wait_event_type),
                    ("wait_event", wait_event),
                ],
                *count,
            );
        }
        let mut lock_wait = LOCK_WAIT.family();
        for (datname, seconds) in &self.lock_wait {
            lock_wait.push(&[("datname", datname)], *seconds);
        }
        vec![samples, active, lock_wait]
    }
}

impl Collector for ActivitySampler {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            if session.server.major() < 10 {
                return Err(CollectError::skipped(
                    SkipReason::Version,
                    "the activity sampler needs PostgreSQL 10 or later (pg_stat_activity.backend_type)",
                ));
            }
            super::require_pg_monitor(&session.client).await?;
            let at = Instant::now();
            let app: &(dyn ToSql + Sync) = &self.application_name;
            // query_typed: one round trip, no prepared statement to keep per connection.
            let rows = session
                .client
                .query_typed(SAMPLE_SQL, &[(app, Type::TEXT)])
                .await?;
            let rows: Vec<(String, String, String, f64)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, i64>(3) as f64))
                .collect();
            self.record(at, &rows);
            Ok(self.families())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(db: &str, kind: &str, event: &str, n: f64) -> (String, String, String, f64) {
        (db.into(), kind.into(), event.into(), n)
    }

    #[test]
    fn lock_wait_uses_the_elapsed_time_capped_after_a_gap() {
        let mut s = ActivitySampler::new("pgkpi".into(), 2, Duration::from_secs(1));
        let t0 = Instant::now();
        s.record(t0, &[row("app", "Lock", "transactionid", 3.0)]);
        assert_eq!(s.lock_wait["app"], 0.0, "the first sample has no interval");
        s.record(
            t0 + Duration::from_millis(1500),
            &[
                row("app", "Lock", "transactionid", 3.0),
                row("app", "CPU", "CPU", 1.0),
            ],
        );
        assert!((s.lock_wait["app"] - 4.5).abs() < 1e-9);
        s.record(
            t0 + Duration::from_secs(60),
            &[row("app", "Lock", "tuple", 1.0)],
        );
        assert!((s.lock_wait["app"] - 6.5).abs() < 1e-9, "gap capped at 2s");
        assert_eq!(s.samples, 3.0);
        assert_eq!(
            s.active[&("app".into(), "Lock".into(), "transactionid".into())],
            6.0
        );
    }

    #[test]
    fn databases_beyond_the_cap_become_other() {
        let mut s = ActivitySampler::new("pgkpi".into(), 1, Duration::from_secs(1));
        let t0 = Instant::now();
        s.record(
            t0,
            &[row("a", "CPU", "CPU", 1.0), row("b", "CPU", "CPU", 2.0)],
        );
        s.record(t0, &[row("b", "CPU", "CPU", 2.0)]);
        assert_eq!(s.active[&("a".into(), "CPU".into(), "CPU".into())], 1.0);
        assert_eq!(
            s.active[&(OTHER_DATABASES.into(), "CPU".into(), "CPU".into())],
            4.0
        );
    }
}
