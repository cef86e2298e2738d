//! `locks`: who waits on a lock, who blocks them, and for how long.
//!
//! One run reads, cluster-wide, in two light queries:
//! * the lock inventory of `pg_locks`, counted by database, lock type, mode and granted (the
//!   ungranted rows give the number of waiting sessions and, from `pg_locks.waitstart`
//!   (PostgreSQL 14+), the age of the oldest wait; on 13 the waiting query's `query_start`
//!   stands in, an upper bound of the wait);
//! * the blocking graph: `pg_blocking_pids()` of every session waiting on a lock
//!   (`wait_event_type = 'Lock'`) plus `pg_stat_activity` of the waiters and their blockers,
//!   from which [`BlockingTree`] derives blocked sessions, root blockers (block others, wait
//!   on nothing), the deepest chain and, for the top K roots, how many sessions each holds up;
//!
//! Deadlocks are counted by PostgreSQL in `pg_stat_database.deadlocks`, exported by the
//! `database` collector as `pg_stat_database_deadlocks_total`; lock timeouts are not counted
//! by PostgreSQL at all (see docs/locks.md).
//!
//! pgkpi's own sessions (same `application_name`) are left out as lock holders and waiters.
//! The current tree is also published as the JSON view `/debug/locks` for the person who was
//! just paged; query text appears there only with `[locks] show_query_text = true`.
//!
//! `pg_blocking_pids()` briefly takes every lock-manager partition lock, so it is called only
//! for sessions that wait on a lock, never for the whole of `pg_stat_activity`.
//! Docs: <https://www.postgresql.org/docs/current/view-pg-locks.html>,
//! <https://www.postgresql.org/docs/current/functions-info.html> (`pg_blocking_pids`, 9.6+).
//!
//! Files: `tree` (the blocking graph's statistics, pure logic), `view` (the `/debug/locks`
//! document), `settings` (`[locks]`); the collector and its SQL are here.

pub mod settings;
mod tree;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use self::settings::LocksConfig;
use self::tree::describe_session;
pub use self::tree::{BlockingTree, RootBlocker, SessionRow};
pub use self::view::debug_view;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{describe_all, Family, FamilyDesc};
use crate::views::Views;

/// The label value that stands for databases beyond `max_databases`.
pub const OTHER_DATABASES: &str = "(other)";
/// Longest `application_name` label value.
const MAX_APPLICATION_NAME: usize = 64;

pub fn spec() -> Spec {
    Spec {
        name: "locks",
        description: "Lock inventory, waiting sessions, blocking tree (pg_blocking_pids); publishes /debug/locks.",
        default_interval: Duration::from_secs(5),
        enabled_by_default: true,
        lane: super::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Server,
        families,
        build: |ctx: &BuildContext| {
            Box::new(Locks {
                target: ctx.target.to_string(),
                application_name: ctx.session.application_name.clone(),
                config: ctx.locks.clone(),
                views: ctx.views.clone(),
                dropped_roots: 0,
            })
        },
    }
}

crate::metric::metrics! {
    LOCKS_COUNT = gauge("pg_locks_count", &["target", "datname", "locktype", "mode", "granted"], "Rows of pg_locks (other than pgkpi's) by the holder's database, lock type, mode and whether granted.");
    WAITING_SESSIONS = gauge("pg_lock_waiting_sessions", &["target"], "Sessions waiting to acquire a lock (ungranted pg_locks rows).");
    OLDEST_WAIT = gauge("pg_lock_oldest_wait_seconds", &["target"], "How long the longest current lock wait has lasted (pg_locks.waitstart, 14+; on 13 the waiting query's age, an upper bound); 0 when nothing waits.");
    BLOCKED_SESSIONS = gauge("pg_blocking_blocked_sessions", &["target"], "Sessions that pg_blocking_pids() reports as blocked by at least one other.");
    ROOT_BLOCKERS = gauge("pg_blocking_root_blockers", &["target"], "Sessions that block others and wait on nothing (the heads of the blocking trees).");
    MAX_DEPTH = gauge("pg_blocking_max_depth", &["target"], "Longest chain of waits, in edges: 1 when sessions wait directly on a root blocker.");
    ROOT_BLOCKED_SESSIONS = gauge("pg_blocking_root_blocked_sessions", &["target", "blocker_pid", "scope"], "For the top [locks] top_blockers root blockers: sessions they block directly (scope=\"direct\") or through a chain (scope=\"total\").");
    ROOT_INFO = gauge("pg_blocking_root_info", &["target", "blocker_pid", "datname", "usename", "application_name", "state"], "Always 1, for each top root blocker: what it is (state \"prepared\" for a prepared transaction, blocker_pid \"0\").");
    ROOT_XACT_AGE = gauge("pg_blocking_root_xact_age_seconds", &["target", "blocker_pid"], "Age of each top root blocker's transaction (now() - xact_start).");
    ROOT_STATE_AGE = gauge("pg_blocking_root_state_age_seconds", &["target", "blocker_pid"], "Time each top root blocker has been in its current state (now() - state_change), e.g. idle in transaction.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        LOCKS_COUNT,
        WAITING_SESSIONS,
        OLDEST_WAIT,
        BLOCKED_SESSIONS,
        ROOT_BLOCKERS,
        MAX_DEPTH,
        ROOT_BLOCKED_SESSIONS,
        ROOT_INFO,
        ROOT_XACT_AGE,
        ROOT_STATE_AGE,
    ])
}

struct Locks {
    target: String,
    /// pgkpi's own application_name on this target; its sessions are left out.
    application_name: String,
    config: LocksConfig,
    views: Arc<Views>,
    /// Root blockers of the last run beyond `top_blockers`, which got no series of their own.
    dropped_roots: u64,
}

/// Maps database names onto at most `max` label values: the `max` databases with the largest
/// weight keep their name, the rest become [`OTHER_DATABASES`].
pub fn cap_databases(weights: &BTreeMap<String, f64>, max: usize) -> BTreeMap<String, String> {
    let mut ranked: Vec<(&String, f64)> = weights.iter().map(|(k, v)| (k, *v)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let label = if i < max {
                (*name).clone()
            } else {
                OTHER_DATABASES.to_string()
            };
            ((*name).clone(), label)
        })
        .collect()
}

/// Cuts an application_name label to 64 characters.
pub fn short_application_name(name: &str) -> String {
    name.chars().take(MAX_APPLICATION_NAME).collect()
}

/// `pg_locks` by the holder's database (the lock's own database for prepared transactions),
/// lock type, mode and granted; `{wait_start}` is the start of the wait of ungranted rows.
const INVENTORY_SQL: &str = "\
SELECT coalesce(a.datname, d.datname, '')::text, l.locktype, l.mode, l.granted, count(*)::int8, \
       extract(epoch FROM now() - min(coalesce({wait_start}, now())) FILTER (WHERE NOT l.granted))::float8 \
FROM pg_locks l \
LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
LEFT JOIN pg_database d ON d.oid = l.database \
WHERE l.pid IS DISTINCT FROM pg_backend_pid() AND a.application_name IS DISTINCT FROM $1 \
GROUP BY 1, 2, 3, 4";

/// Waiters with their blockers, and the blockers themselves. The CTE is read twice, so it is
/// materialised: pg_blocking_pids() runs once per waiter.
const TREE_SQL: &str = "\
WITH waiting AS ( \
  SELECT pid, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity \
  WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() \
    AND application_name IS DISTINCT FROM $1 \
) \
SELECT a.pid, coalesce(w.blockers, '{}'::int4[]), coalesce(a.state, ''), \
       coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''), coalesce(a.datname, '')::text, \
       coalesce(a.usename, '')::text, coalesce(a.application_name, ''), coalesce(a.backend_type, ''), \
       extract(epoch FROM now() - a.xact_start)::float8, extract(epoch FROM now() - a.query_start)::float8, \
       extract(epoch FROM now() - a.state_change)::float8, extract(epoch FROM a.query_start)::float8, \
       CASE WHEN $2 THEN left(a.query, 4096) END, extract(epoch FROM now())::float8 \
FROM pg_stat_activity a LEFT JOIN waiting w ON w.pid = a.pid \
WHERE w.pid IS NOT NULL OR a.pid IN (SELECT unnest(blockers) FROM waiting)";

/// A session of [`TREE_SQL`], by column position.
fn session_row(row: &Row) -> SessionRow {
    SessionRow {
        pid: row.get(0),
        blockers: row.get(1),
        state: row.get(2),
        wait_event_type: row.get(3),
        wait_event: row.get(4),
        datname: row.get(5),
        usename: row.get(6),
        application_name: row.get(7),
        backend_type: row.get(8),
        xact_age: row.get(9),
        query_age: row.get(10),
        state_age: row.get(11),
        query_start: row.get(12),
        query: row.get(13),
    }
}

/// The lock inventory of one run, from the rows of [`INVENTORY_SQL`].
struct Inventory {
    /// `pg_locks_count`, with the databases holding the most locks named and the rest summed.
    counts: Family,
    /// Sessions waiting on a lock (ungranted rows).
    waiting: f64,
    /// Age of the oldest wait; 0 when nothing waits.
    oldest_wait: f64,
}

impl Inventory {
    fn read(rows: &[Row], max_databases: usize) -> Inventory {
        let mut weights: BTreeMap<String, f64> = BTreeMap::new();
        for row in rows {
            *weights.entry(row.get::<_, String>(0)).or_default() += row.get::<_, i64>(4) as f64;
        }
        let names = cap_databases(&weights, max_databases);
        let mut counts: BTreeMap<(String, String, String, bool), f64> = BTreeMap::new();
        let mut waiting = 0.0;
        let mut oldest_wait: f64 = 0.0;
        for row in rows {
            let datname: String = row.get(0);
            let granted: bool = row.get(3);
            let count = row.get::<_, i64>(4) as f64;
            let key = (names[&datname].clone(), row.get(1), row.get(2), granted);
            *counts.entry(key).or_default() += count;
            if !granted {
                waiting += count;
                if let Some(age) = row.get::<_, Option<f64>>(5) {
                    oldest_wait = oldest_wait.max(age);
                }
            }
        }
        let mut family = LOCKS_COUNT.family();
        for ((datname, locktype, mode, granted), count) in &counts {
            family.push(
                &[
                    ("datname", datname),
                    ("locktype", locktype),
                    ("mode", mode),
                    ("granted", if *granted { "true" } else { "false" }),
                ],
                *count,
            );
        }
        Inventory {
            counts: family,
            waiting,
            oldest_wait,
        }
    }
}

impl Collector for Locks {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            if session.server.major() < 10 {
                return Err(CollectError::skipped(
                    SkipReason::Version,
                    "the locks collector needs PostgreSQL 10 or later (pg_stat_activity.backend_type)",
                ));
            }
            let client = &session.client;
            super::require_pg_monitor(client).await?;
            let app: &(dyn ToSql + Sync) = &self.application_name;
            // pg_locks.waitstart exists from 14; before, the waiting query's start bounds it.
            let wait_start = if session.server.major() >= 14 {
                "l.waitstart"
            } else {
                "a.query_start"
            };
            let inventory_rows = client
                .query_typed(
                    &INVENTORY_SQL.replace("{wait_start}", wait_start),
                    &[(app, Type::TEXT)],
                )
                .await?;
            let show_query = self.config.show_query_text;
            let tree_rows = client
                .query_typed(TREE_SQL, &[(app, Type::TEXT), (&show_query, Type::BOOL)])
                .await?;
            let now = tree_rows
                .first()
                .map(|r| r.get::<_, f64>(14))
                .unwrap_or_else(crate::status::unix_now);

            let mut out = Vec::new();

            let inventory = Inventory::read(&inventory_rows, self.config.max_databases);
            out.push(inventory.counts);
            out.push(WAITING_SESSIONS.family().with(&[], inventory.waiting));
            out.push(
                OLDEST_WAIT
                    .family()
                    .with(&[], inventory.oldest_wait.max(0.0)),
            );

            // Blocking tree.
            let sessions: BTreeMap<i32, SessionRow> = tree_rows
                .iter()
                .map(|row| {
                    let s = session_row(row);
                    (s.pid, s)
                })
                .collect();
            let edges: BTreeMap<i32, Vec<i32>> = sessions
                .values()
                .map(|s| (s.pid, s.blockers.clone()))
                .collect();
            let tree = BlockingTree::from_edges(&edges);
            out.push(BLOCKED_SESSIONS.family().with(&[], tree.blocked as f64));
            out.push(ROOT_BLOCKERS.family().with(&[], tree.roots.len() as f64));
            out.push(MAX_DEPTH.family().with(&[], tree.max_depth as f64));
            out.extend(self.root_families(&tree, &sessions));
            self.dropped_roots = tree.roots.len().saturating_sub(self.config.top_blockers) as u64;

            self.views.publish(
                "locks",
                &self.target,
                debug_view(
                    &tree,
                    &sessions,
                    now,
                    inventory.waiting,
                    inventory.oldest_wait,
                    self.config.show_query_text,
                ),
            );
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped_roots)
    }
}

impl Locks {
    /// Series of the top K root blockers, labelled by pid (K is small and bounded).
    fn root_families(
        &self,
        tree: &BlockingTree,
        sessions: &BTreeMap<i32, SessionRow>,
    ) -> Vec<Family> {
        let mut blocked = ROOT_BLOCKED_SESSIONS.family();
        let mut info = ROOT_INFO.family();
        let mut xact_age = ROOT_XACT_AGE.family();
        let mut state_age = ROOT_STATE_AGE.family();
        for root in tree.roots.iter().take(self.config.top_blockers) {
            let pid = root.pid.to_string();
            blocked.push(
                &[("blocker_pid", &pid), ("scope", "direct")],
                root.direct as f64,
            );
            blocked.push(
                &[("blocker_pid", &pid), ("scope", "total")],
                root.total as f64,
            );
            let session = describe_session(root.pid, sessions);
            info.push(
                &[
                    ("blocker_pid", &pid),
                    ("datname", &session.datname),
                    ("usename", &session.usename),
                    (
                        "application_name",
                        &short_application_name(&session.application_name),
                    ),
                    ("state", &session.state),
                ],
                1.0,
            );
            if let Some(age) = session.xact_age {
                xact_age.push(&[("blocker_pid", &pid)], age.max(0.0));
            }
            if let Some(age) = session.state_age {
                state_age.push(&[("blocker_pid", &pid)], age.max(0.0));
            }
        }
        vec![blocked, info, xact_age, state_age]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_beyond_the_cap_are_summed_as_other() {
        let weights: BTreeMap<String, f64> = [("a", 1.0), ("b", 5.0), ("c", 3.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let names = cap_databases(&weights, 2);
        assert_eq!(names["b"], "b");
        assert_eq!(names["c"], "c");
        assert_eq!(names["a"], OTHER_DATABASES);
        assert_eq!(short_application_name(&"x".repeat(100)).len(), 64);
    }
}
