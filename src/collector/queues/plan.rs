//! Reading the planner's view of a count: whether its plan would scan the table
//! sequentially, and the row estimate that then stands in for the count. `EXPLAIN` only plans,
//! so asking is cheap whatever the table's size.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::table_error;
use crate::collector::CollectError;

/// The JSON plan of `sql` when it reads a table sequentially, else None.
pub(super) async fn seq_scan_plan(
    client: &Client,
    sql: &str,
) -> Result<Option<serde_json::Value>, CollectError> {
    let plan = explain(client, sql).await?;
    Ok(has_seq_scan(&plan["Plan"]).then_some(plan))
}

/// `EXPLAIN (FORMAT JSON)`: planning only, nothing is read.
pub async fn explain(client: &Client, sql: &str) -> Result<serde_json::Value, CollectError> {
    let messages = client
        .simple_query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
        .await
        .map_err(|e| table_error("EXPLAIN", &e))?;
    let text = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| CollectError::failed("EXPLAIN returned no plan"))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CollectError::failed(format!("EXPLAIN output: {e}")))?;
    Ok(value.get(0).cloned().unwrap_or_default())
}

/// True when a node of the plan is a sequential scan.
pub fn has_seq_scan(node: &serde_json::Value) -> bool {
    node["Node Type"]
        .as_str()
        .is_some_and(|t| t.contains("Seq Scan"))
        || node["Plans"]
            .as_array()
            .is_some_and(|plans| plans.iter().any(has_seq_scan))
}

/// The planner's row estimate for a `SELECT count(*) ... WHERE` statement: the rows the
/// scan under the aggregate expects (per-worker estimates of a parallel plan multiplied back).
pub(super) fn estimate_rows(plan: &serde_json::Value) -> Result<f64, CollectError> {
    fn scan_rows(node: &serde_json::Value) -> Option<f64> {
        let kind = node["Node Type"].as_str().unwrap_or("");
        if kind.contains("Scan") {
            return node["Plan Rows"].as_f64();
        }
        let rows = node["Plans"].as_array()?.iter().find_map(scan_rows)?;
        // A Gather's children report per-process rows; the Gather sees them all.
        let workers = node["Workers Planned"].as_f64();
        Some(match workers {
            Some(w) if kind.starts_with("Gather") => rows * parallel_divisor(w),
            _ => rows,
        })
    }
    scan_rows(&plan["Plan"]).ok_or_else(|| CollectError::failed("EXPLAIN plan without a scan"))
}

/// PostgreSQL's share of a parallel scan per process (get_parallel_divisor): the workers plus
/// the leader's reduced contribution.
fn parallel_divisor(workers: f64) -> f64 {
    let leader = 1.0 - 0.3 * workers;
    workers + leader.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_scans_are_found_anywhere_in_the_plan() {
        let plan: serde_json::Value = serde_json::json!({"Node Type": "Aggregate", "Plans": [
            {"Node Type": "Gather", "Workers Planned": 2, "Plans": [
                {"Node Type": "Aggregate", "Plans": [{"Node Type": "Parallel Seq Scan", "Plan Rows": 100.0}]}]}]});
        assert!(has_seq_scan(&plan));
        let index: serde_json::Value = serde_json::json!({"Node Type": "Aggregate", "Plans": [
            {"Node Type": "Index Only Scan", "Plan Rows": 5.0}]});
        assert!(!has_seq_scan(&index));
        assert!((parallel_divisor(2.0) - 2.4).abs() < 1e-9);
    }
}
