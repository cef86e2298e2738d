//! The JSON document of `/debug/locks`: the current blocking tree for the person who was just
//! paged. Query text appears only with `[locks] show_query_text = true`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::tree::{describe_session, BlockingTree, SessionRow};

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

    #[test]
    fn debug_view_nests_sessions_below_their_roots() {
        let edges: BTreeMap<i32, Vec<i32>> = [(1, vec![100]), (2, vec![1])].into_iter().collect();
        let tree = BlockingTree::from_edges(&edges);
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
