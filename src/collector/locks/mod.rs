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

pub mod settings;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::types::{ToSql, Type};

use self::settings::LocksConfig;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{Family, FamilyDesc, MetricType};
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

fn families() -> Vec<FamilyDesc> {
    use MetricType::Gauge;
    vec![
        FamilyDesc::new(
            "pg_locks_count",
            Gauge,
            &["target", "datname", "locktype", "mode", "granted"],
            "Rows of pg_locks (other than pgkpi's) by the holder's database, lock type, mode and whether granted.",
        ),
        FamilyDesc::new(
            "pg_lock_waiting_sessions",
            Gauge,
            &["target"],
            "Sessions waiting to acquire a lock (ungranted pg_locks rows).",
        ),
        FamilyDesc::new(
            "pg_lock_oldest_wait_seconds",
            Gauge,
            &["target"],
            "How long the longest current lock wait has lasted (pg_locks.waitstart, 14+; on 13 the waiting query's age, an upper bound); 0 when nothing waits.",
        ),
        FamilyDesc::new(
            "pg_blocking_blocked_sessions",
            Gauge,
            &["target"],
            "Sessions that pg_blocking_pids() reports as blocked by at least one other.",
        ),
        FamilyDesc::new(
            "pg_blocking_root_blockers",
            Gauge,
            &["target"],
            "Sessions that block others and wait on nothing (the heads of the blocking trees).",
        ),
        FamilyDesc::new(
            "pg_blocking_max_depth",
            Gauge,
            &["target"],
            "Longest chain of waits, in edges: 1 when sessions wait directly on a root blocker.",
        ),
        FamilyDesc::new(
            "pg_blocking_root_blocked_sessions",
            Gauge,
            &["target", "blocker_pid", "scope"],
            "For the top [locks] top_blockers root blockers: sessions they block directly (scope=\"direct\") or through a chain (scope=\"total\").",
        ),
        FamilyDesc::new(
            "pg_blocking_root_info",
            Gauge,
            &["target", "blocker_pid", "datname", "usename", "application_name", "state"],
            "Always 1, for each top root blocker: what it is (state \"prepared\" for a prepared transaction, blocker_pid \"0\").",
        ),
        FamilyDesc::new(
            "pg_blocking_root_xact_age_seconds",
            Gauge,
            &["target", "blocker_pid"],
            "Age of each top root blocker's transaction (now() - xact_start).",
        ),
        FamilyDesc::new(
            "pg_blocking_root_state_age_seconds",
            Gauge,
            &["target", "blocker_pid"],
            "Time each top root blocker has been in its current state (now() - state_change), e.g. idle in transaction.",
        ),
    ]
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

/// One session of the blocking graph, as `pg_stat_activity` showed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRow {
    pub pid: i32,
    /// `pg_blocking_pids()`, empty when the session waits on nothing (or is not a waiter).
    pub blockers: Vec<i32>,
    pub state: String,
    pub wait_event_type: String,
    pub wait_event: String,
    pub datname: String,
    pub usename: String,
    pub application_name: String,
    pub backend_type: String,
    /// Seconds since xact_start, query_start and state_change; None when the column was NULL
    /// (no transaction, no privilege to see the session).
    pub xact_age: Option<f64>,
    pub query_age: Option<f64>,
    pub state_age: Option<f64>,
    /// query_start as a Unix time, for the debug view.
    pub query_start: Option<f64>,
    /// Only with `show_query_text`.
    pub query: Option<String>,
}

/// Statistics of the blocking graph (waiter → blocker edges from `pg_blocking_pids()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockingTree {
    /// Sessions with at least one blocker.
    pub blocked: usize,
    /// Root blockers with their (direct, total) blocked counts, most blocking first.
    pub roots: Vec<RootBlocker>,
    /// Longest chain, in edges.
    pub max_depth: usize,
    /// blocker → the sessions listing it, for the debug view.
    pub children: BTreeMap<i32, Vec<i32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RootBlocker {
    pub pid: i32,
    pub direct: usize,
    pub total: usize,
}

impl BlockingTree {
    /// Builds the statistics from `waiter → blockers`. Waiters with no blocker are ignored;
    /// a cycle (a deadlock not yet detected) is cut where it closes.
    pub fn from_edges(edges: &BTreeMap<i32, Vec<i32>>) -> BlockingTree {
        let edges: BTreeMap<i32, Vec<i32>> = edges
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(w, b)| {
                let mut b = b.clone();
                b.sort_unstable();
                b.dedup();
                (*w, b)
            })
            .collect();
        let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (waiter, blockers) in &edges {
            for blocker in blockers {
                children.entry(*blocker).or_default().push(*waiter);
            }
        }
        let mut roots: Vec<RootBlocker> = children
            .iter()
            .filter(|(pid, _)| !edges.contains_key(pid))
            .map(|(pid, direct)| {
                let mut seen = BTreeSet::new();
                let mut stack = vec![*pid];
                while let Some(node) = stack.pop() {
                    for child in children.get(&node).into_iter().flatten() {
                        if *child != *pid && seen.insert(*child) {
                            stack.push(*child);
                        }
                    }
                }
                RootBlocker {
                    pid: *pid,
                    direct: direct.len(),
                    total: seen.len(),
                }
            })
            .collect();
        roots.sort_by(|a, b| {
            (b.total, b.direct)
                .cmp(&(a.total, a.direct))
                .then(a.pid.cmp(&b.pid))
        });
        let mut depth: HashMap<i32, usize> = HashMap::new();
        let mut max_depth = 0;
        for waiter in edges.keys() {
            let mut on_path = BTreeSet::new();
            max_depth = max_depth.max(depth_of(*waiter, &edges, &mut depth, &mut on_path));
        }
        BlockingTree {
            blocked: edges.len(),
            roots,
            max_depth,
            children,
        }
    }
}

/// Longest chain from `pid` to a session that waits on nothing (memoised; cycles cut).
fn depth_of(
    pid: i32,
    edges: &BTreeMap<i32, Vec<i32>>,
    memo: &mut HashMap<i32, usize>,
    on_path: &mut BTreeSet<i32>,
) -> usize {
    if let Some(d) = memo.get(&pid) {
        return *d;
    }
    let Some(blockers) = edges.get(&pid) else {
        return 0;
    };
    if !on_path.insert(pid) {
        return 0;
    }
    let mut deepest = 0;
    for blocker in blockers {
        deepest = deepest.max(1 + depth_of(*blocker, edges, memo, on_path));
    }
    on_path.remove(&pid);
    memo.insert(pid, deepest);
    deepest
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
            let app: &(dyn ToSql + Sync) = &self.application_name;
            // pg_locks.waitstart exists from 14; before, the waiting query's start bounds it.
            let wait_start = if session.server.major() >= 14 {
                "l.waitstart"
            } else {
                "a.query_start"
            };
            let inventory = client
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

            // Inventory, with the databases holding the most locks named and the rest summed.
            let mut weights: BTreeMap<String, f64> = BTreeMap::new();
            for row in &inventory {
                *weights.entry(row.get::<_, String>(0)).or_default() += row.get::<_, i64>(4) as f64;
            }
            let names = cap_databases(&weights, self.config.max_databases);
            let mut counts: BTreeMap<(String, String, String, bool), f64> = BTreeMap::new();
            let mut waiting = 0.0;
            let mut oldest_wait: f64 = 0.0;
            for row in &inventory {
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
            let mut family = Family::gauge("pg_locks_count", help("pg_locks_count"));
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
            out.push(family);
            out.push(gauge("pg_lock_waiting_sessions", waiting));
            out.push(gauge("pg_lock_oldest_wait_seconds", oldest_wait.max(0.0)));

            // Blocking tree.
            let sessions: BTreeMap<i32, SessionRow> = tree_rows
                .iter()
                .map(|row| {
                    let s = SessionRow {
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
                    };
                    (s.pid, s)
                })
                .collect();
            let edges: BTreeMap<i32, Vec<i32>> = sessions
                .values()
                .map(|s| (s.pid, s.blockers.clone()))
                .collect();
            let tree = BlockingTree::from_edges(&edges);
            out.push(gauge("pg_blocking_blocked_sessions", tree.blocked as f64));
            out.push(gauge("pg_blocking_root_blockers", tree.roots.len() as f64));
            out.push(gauge("pg_blocking_max_depth", tree.max_depth as f64));
            out.extend(self.root_families(&tree, &sessions));
            self.dropped_roots = tree.roots.len().saturating_sub(self.config.top_blockers) as u64;

            self.views.publish(
                "locks",
                &self.target,
                debug_view(
                    &tree,
                    &sessions,
                    now,
                    waiting,
                    oldest_wait,
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
        let mut blocked = Family::gauge(
            "pg_blocking_root_blocked_sessions",
            help("pg_blocking_root_blocked_sessions"),
        );
        let mut info = Family::gauge("pg_blocking_root_info", help("pg_blocking_root_info"));
        let mut xact_age = Family::gauge(
            "pg_blocking_root_xact_age_seconds",
            help("pg_blocking_root_xact_age_seconds"),
        );
        let mut state_age = Family::gauge(
            "pg_blocking_root_state_age_seconds",
            help("pg_blocking_root_state_age_seconds"),
        );
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

/// The session behind a pid of the graph; pid 0 is a prepared transaction (no backend), and a
/// blocker that ended between the two reads of the query shows as "gone".
fn describe_session(pid: i32, sessions: &BTreeMap<i32, SessionRow>) -> SessionRow {
    match sessions.get(&pid) {
        Some(s) => s.clone(),
        None => SessionRow {
            pid,
            state: if pid == 0 { "prepared" } else { "gone" }.to_string(),
            ..SessionRow::default()
        },
    }
}

fn help(name: &str) -> String {
    families()
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.help)
        .unwrap_or_default()
}

fn gauge(name: &str, value: f64) -> Family {
    Family::gauge(name, help(name)).with(&[], value)
}

/// The JSON document of `/debug/locks`: totals, the root blockers with their trees nested
/// below them, and every session of the graph.
pub fn debug_view(
    tree: &BlockingTree,
    sessions: &BTreeMap<i32, SessionRow>,
    now: f64,
    waiting: f64,
    oldest_wait: f64,
    show_query_text: bool,
) -> Value {
    let session_json = |pid: i32| -> Value {
        let s = describe_session(pid, sessions);
        let mut v = json!({
            "pid": s.pid,
            "state": s.state,
            "wait_event_type": s.wait_event_type,
            "wait_event": s.wait_event,
            "datname": s.datname,
            "usename": s.usename,
            "application_name": s.application_name,
            "backend_type": s.backend_type,
            "blocked_by": s.blockers,
            "xact_age_seconds": s.xact_age,
            "query_start_unix": s.query_start,
            "query_age_seconds": s.query_age,
            "state_age_seconds": s.state_age,
        });
        if show_query_text {
            v["query"] = json!(s.query);
        }
        v
    };
    // Nodes can sit below several blockers (a DAG); each appears under every one of them, with
    // a path check against cycles and a cap on the document's size.
    fn nest(
        pid: i32,
        tree: &BlockingTree,
        path: &mut Vec<i32>,
        budget: &mut usize,
        session_json: &dyn Fn(i32) -> Value,
    ) -> Value {
        let mut node = session_json(pid);
        path.push(pid);
        let mut blocking = Vec::new();
        for child in tree.children.get(&pid).into_iter().flatten() {
            if path.contains(child) || *budget == 0 {
                continue;
            }
            *budget -= 1;
            blocking.push(nest(*child, tree, path, budget, session_json));
        }
        path.pop();
        node["blocking"] = Value::Array(blocking);
        node
    }
    let mut budget = 1000;
    let roots: Vec<Value> = tree
        .roots
        .iter()
        .map(|root| {
            let mut node = nest(root.pid, tree, &mut Vec::new(), &mut budget, &session_json);
            node["blocks_directly"] = json!(root.direct);
            node["blocks_in_total"] = json!(root.total);
            node
        })
        .collect();
    json!({
        "collected_at_unix": now,
        "waiting_sessions": waiting,
        "oldest_wait_seconds": oldest_wait,
        "blocked_sessions": tree.blocked,
        "root_blockers": tree.roots.len(),
        "max_depth": tree.max_depth,
        "roots": roots,
        "sessions": sessions.keys().map(|pid| session_json(*pid)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[(i32, &[i32])]) -> BTreeMap<i32, Vec<i32>> {
        list.iter().map(|(w, b)| (*w, b.to_vec())).collect()
    }

    #[test]
    fn row_lock_queue_is_a_chain_through_the_tuple_lock() {
        // H holds the row; W1 waits on H's transaction, W2 and W3 queue on W1's tuple lock
        // (W3 also behind W2 in the queue); W4 waits on a row W1 holds.
        let tree = BlockingTree::from_edges(&edges(&[
            (1, &[100]),
            (2, &[1]),
            (3, &[1, 2]),
            (4, &[1]),
            (100, &[]),
        ]));
        assert_eq!(tree.blocked, 4);
        assert_eq!(
            tree.roots,
            vec![RootBlocker {
                pid: 100,
                direct: 1,
                total: 4
            }]
        );
        assert_eq!(tree.max_depth, 3, "3 -> 2 -> 1 -> 100");
    }

    #[test]
    fn several_roots_are_ranked_and_cycles_do_not_hang() {
        let tree = BlockingTree::from_edges(&edges(&[
            (1, &[10]),
            (2, &[20]),
            (3, &[20]),
            (5, &[6]),
            (6, &[5]),
        ]));
        assert_eq!(tree.blocked, 5);
        assert_eq!(
            tree.roots.iter().map(|r| r.pid).collect::<Vec<_>>(),
            vec![20, 10]
        );
        assert_eq!(tree.max_depth, 2, "the cycle is cut where it closes");
        let empty = BlockingTree::from_edges(&BTreeMap::new());
        assert_eq!(
            (empty.blocked, empty.roots.len(), empty.max_depth),
            (0, 0, 0)
        );
    }

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

    #[test]
    fn debug_view_nests_sessions_below_their_roots() {
        let tree = BlockingTree::from_edges(&edges(&[(1, &[100]), (2, &[1])]));
        let mut sessions = BTreeMap::new();
        for (pid, blockers, state) in [
            (100, vec![], "idle in transaction"),
            (1, vec![100], "active"),
            (2, vec![1], "active"),
        ] {
            sessions.insert(
                pid,
                SessionRow {
                    pid,
                    blockers,
                    state: state.into(),
                    xact_age: Some(10.0),
                    query: Some("secret".into()),
                    ..SessionRow::default()
                },
            );
        }
        let view = debug_view(&tree, &sessions, 100.0, 2.0, 4.0, false);
        assert_eq!(view["roots"][0]["pid"], 100);
        assert_eq!(view["roots"][0]["state"], "idle in transaction");
        assert_eq!(view["roots"][0]["xact_age_seconds"], 10.0);
        assert_eq!(view["roots"][0]["blocking"][0]["blocking"][0]["pid"], 2);
        assert!(!view.to_string().contains("secret"));
        let view = debug_view(&tree, &sessions, 100.0, 2.0, 4.0, true);
        assert_eq!(view["sessions"][0]["query"], "secret");
    }
}
