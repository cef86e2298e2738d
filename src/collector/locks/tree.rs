//! The blocking graph of one run as pure logic: the sessions `pg_stat_activity` showed
//! ([`SessionRow`]) and the statistics derived from the waiter → blocker edges of
//! `pg_blocking_pids()` ([`BlockingTree`]: blocked sessions, root blockers ranked by how many
//! sessions they hold up, the deepest chain).

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// The session behind a pid of the graph; pid 0 is a prepared transaction (no backend), and a
/// blocker that ended between the two reads of the query shows as "gone".
pub fn describe_session(pid: i32, sessions: &BTreeMap<i32, SessionRow>) -> SessionRow {
    match sessions.get(&pid) {
        Some(s) => s.clone(),
        None => SessionRow {
            pid,
            state: if pid == 0 { "prepared" } else { "gone" }.to_string(),
            ..SessionRow::default()
        },
    }
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
}
