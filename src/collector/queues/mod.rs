//! `queues`: depth, lag, leases, retries and throughput of the application's own queue tables.
//!
//! Each `[[queues]]` entry of the configuration names a table and says how its rows are told
//! apart (SQL predicates for ready, scheduled, leased, dead and done rows) and which columns
//! hold the times, the lease and the retry counter. Presets fill these in for the migrations'
//! `core.notification_queue` and for pgmq, River and Oban (see docs/queues.md for their
//! sources). The SQL is built once, at start-up, from quoted identifiers and the predicates
//! (trusted like definition files: they come from the operator's config file, are checked for
//! `;`, comments and unbalanced parentheses, and run in the read-only session).
//!
//! Cheap by construction: every count is a separate statement so that each one can use its
//! own partial index; on a table larger than `exact_count_limit` rows, a count whose plan
//! would read the table sequentially (typically `done` or `dead` on a queue that keeps its
//! history) is replaced by the planner's estimate and flagged in `app_queue_depth_estimated`.
//! The processed counter needs no scan at all: every row ever inserted
//! (`pg_stat_user_tables.n_tup_ins`) is either still pending or has left the queue (done,
//! dead or deleted), so `processed = n_tup_ins - pending`. That holds whether finished rows
//! are kept or deleted.

pub mod settings;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use self::settings::Shape;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{Family, FamilyDesc, MetricType, Sample};
use crate::target::describe_with;

/// Label value for kinds beyond the cap.
pub const OTHER_KINDS: &str = "(other)";
/// Upper bounds of the retry-count histogram buckets.
const RETRY_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0];

impl Shape {
    /// `WHERE` clause for a predicate, with the filter.
    fn wher(&self, predicate: &str) -> String {
        match &self.filter {
            Some(f) => format!("WHERE {f} AND {predicate}"),
            None => format!("WHERE {predicate}"),
        }
    }

    /// Ready and due now.
    fn ready_due(&self) -> String {
        match &self.available_at {
            Some(at) => format!("({} AND {at} <= {})", self.ready, self.now),
            None => self.ready.clone(),
        }
    }

    /// Waiting for a time.
    fn scheduled_pred(&self) -> Option<String> {
        match (&self.scheduled, &self.available_at) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(at)) => Some(format!("({} AND {at} > {})", self.ready, self.now)),
            _ => None,
        }
    }

    /// Every row not finished: ready, scheduled or leased.
    fn pending(&self) -> String {
        let mut parts = vec![self.ready.clone()];
        parts.extend(self.scheduled.clone());
        parts.extend(self.leased.clone());
        format!("({})", parts.join(" OR "))
    }

    /// Seconds from `column`'s oldest value to now, 0 when no row.
    fn age(&self, column: &str) -> String {
        format!(
            "coalesce(extract(epoch FROM {} - min({column})), 0)::float8",
            self.now
        )
    }

    /// The statements one poll runs, by purpose; public so the benchmark and tests can
    /// EXPLAIN exactly what the collector runs.
    pub fn statements(&self) -> Vec<(String, String)> {
        let t = &self.table;
        let mut out = Vec::new();
        let age_col = self.available_at.as_ref().or(self.created_at.as_ref());
        let ready_due = self.ready_due();
        out.push((
            "ready".to_string(),
            match age_col {
                Some(c) => format!(
                    "SELECT count(*)::float8, {} FROM {t} {}",
                    self.age(c),
                    self.wher(&ready_due)
                ),
                None => format!(
                    "SELECT count(*)::float8, NULL::float8 FROM {t} {}",
                    self.wher(&ready_due)
                ),
            },
        ));
        if let Some(s) = self.scheduled_pred() {
            out.push(("scheduled".into(), count_sql(t, &self.wher(&s))));
        }
        if let Some(l) = &self.leased {
            out.push((
                "leased".into(),
                match &self.locked_at {
                    Some(at) => format!(
                        "SELECT count(*)::float8, {} FROM {t} {}",
                        self.age(at),
                        self.wher(l)
                    ),
                    None => format!(
                        "SELECT count(*)::float8, NULL::float8 FROM {t} {}",
                        self.wher(l)
                    ),
                },
            ));
        }
        if let Some(e) = &self.expired {
            out.push(("expired".into(), count_sql(t, &self.wher(e))));
        }
        if let Some(d) = &self.dead {
            out.push(("dead".into(), count_sql(t, &self.wher(d))));
        }
        if let Some(d) = &self.done {
            out.push(("done".into(), count_sql(t, &self.wher(d))));
        }
        if let Some(r) = &self.retry {
            out.push((
                "retries".into(),
                format!(
                    "SELECT least(greatest({r}, 0), 1000)::float8, count(*)::float8 FROM {t} {} GROUP BY 1",
                    self.wher(&self.pending())
                ),
            ));
        }
        if let Some(k) = &self.kind {
            let scheduled = self.scheduled_pred().unwrap_or_else(|| "false".into());
            let leased = self.leased.clone().unwrap_or_else(|| "false".into());
            let lag = match age_col {
                Some(c) => format!(
                    "extract(epoch FROM {} - min({c}) FILTER (WHERE {ready_due}))::float8",
                    self.now
                ),
                None => "NULL::float8".into(),
            };
            out.push((
                "kinds".into(),
                format!(
                    "SELECT {k}::text, count(*) FILTER (WHERE {ready_due})::float8, \
                     count(*) FILTER (WHERE {scheduled})::float8, \
                     count(*) FILTER (WHERE {leased})::float8, {lag} \
                     FROM {t} {} GROUP BY 1",
                    self.wher(&self.pending())
                ),
            ));
        }
        out
    }
}

fn count_sql(table: &str, wher: &str) -> String {
    format!("SELECT count(*)::float8 FROM {table} {wher}")
}

pub fn spec() -> Spec {
    Spec {
        name: "queues",
        description: "Application queue tables ([[queues]]): depth by state, lag, leases, retries, processed.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families,
        build: |ctx: &BuildContext| {
            Box::new(Queues {
                queues: ctx
                    .queues
                    .iter()
                    // validate() ran at start-up, so every entry resolves.
                    .filter_map(|q| Shape::resolve(q).ok())
                    .map(|shape| QueueState {
                        shape,
                        processed: None,
                        problem: None,
                    })
                    .collect(),
                dropped: 0,
            })
        },
    }
}

fn families() -> Vec<FamilyDesc> {
    use MetricType::{Counter, Gauge, Histogram};
    vec![
        FamilyDesc::new("app_queue_up", Gauge, &["target", "queue"], "1 when the queue's table was read, 0 when it is missing or a query failed (see the logs)."),
        FamilyDesc::new("app_queue_depth", Gauge, &["target", "queue", "state"], "Rows by state: ready (due now), scheduled (waiting for a time), leased (held by a worker), dead, done (when kept)."),
        FamilyDesc::new("app_queue_depth_estimated", Gauge, &["target", "queue", "state"], "1 when app_queue_depth of this state is the planner's estimate (counting would read the whole table; see exact_count_limit), 0 when exact."),
        FamilyDesc::new("app_queue_lag_seconds", Gauge, &["target", "queue"], "Age of the oldest ready, due row: now minus its available-at (or created-at) time; 0 when none waits."),
        FamilyDesc::new("app_queue_oldest_lease_seconds", Gauge, &["target", "queue"], "Age of the oldest lease held by a worker; 0 when none."),
        FamilyDesc::new("app_queue_expired_leases", Gauge, &["target", "queue"], "Leases held past their timeout: the worker died or hangs; reclaiming them ends this."),
        FamilyDesc::new("app_queue_lease_timeout_seconds", Gauge, &["target", "queue"], "The lease timeout used for app_queue_expired_leases, when it is a fixed duration."),
        FamilyDesc::new("app_queue_retries", Histogram, &["target", "queue", "le"], "Retry counter (failed attempts or reads so far) of the pending rows (ready, scheduled, leased)."),
        FamilyDesc::new("app_queue_inserted_total", Counter, &["target", "queue"], "Rows ever inserted into the queue table (pg_stat_user_tables.n_tup_ins, partitions summed)."),
        FamilyDesc::new("app_queue_processed_total", Counter, &["target", "queue"], "Rows that left the pending set (done, dead or deleted): inserted minus pending. Not exported for queues with a row filter. Drain time: app_queue_depth{state=\"ready\"} / rate(app_queue_processed_total[5m])."),
        FamilyDesc::new("app_queue_kind_depth", Gauge, &["target", "queue", "kind", "state"], "Pending rows per kind (sub-queue) and state (ready, scheduled, leased); at most max_kinds kinds, the rest in kind=\"(other)\"."),
        FamilyDesc::new("app_queue_kind_lag_seconds", Gauge, &["target", "queue", "kind"], "Age of the oldest ready, due row per kind."),
    ]
}

struct QueueState {
    shape: Shape,
    /// (last n_tup_ins, last exported processed value): keeps the counter monotonic while
    /// the statistics (flushed up to a second late) trail the live counts.
    processed: Option<(f64, f64)>,
    /// The problem last logged, to log changes only.
    problem: Option<String>,
}

struct Queues {
    queues: Vec<QueueState>,
    /// Kind series summed into `(other)` in the last run.
    dropped: u64,
}

/// Output families of one run, filled queue by queue.
struct Out {
    up: Family,
    depth: Family,
    estimated: Family,
    lag: Family,
    oldest_lease: Family,
    expired: Family,
    lease_timeout: Family,
    retries: Family,
    inserted: Family,
    processed: Family,
    kind_depth: Family,
    kind_lag: Family,
}

impl Out {
    fn new() -> Out {
        let mut by_name: BTreeMap<String, Family> = families()
            .into_iter()
            .map(|d| (d.name.clone(), Family::new(d.name, d.help, d.kind)))
            .collect();
        let mut take = |n: &str| by_name.remove(n).expect("declared family");
        Out {
            up: take("app_queue_up"),
            depth: take("app_queue_depth"),
            estimated: take("app_queue_depth_estimated"),
            lag: take("app_queue_lag_seconds"),
            oldest_lease: take("app_queue_oldest_lease_seconds"),
            expired: take("app_queue_expired_leases"),
            lease_timeout: take("app_queue_lease_timeout_seconds"),
            retries: take("app_queue_retries"),
            inserted: take("app_queue_inserted_total"),
            processed: take("app_queue_processed_total"),
            kind_depth: take("app_queue_kind_depth"),
            kind_lag: take("app_queue_kind_lag_seconds"),
        }
    }

    fn into_vec(self) -> Vec<Family> {
        vec![
            self.up,
            self.depth,
            self.estimated,
            self.lag,
            self.oldest_lease,
            self.expired,
            self.lease_timeout,
            self.retries,
            self.inserted,
            self.processed,
            self.kind_depth,
            self.kind_lag,
        ]
    }
}

impl Collector for Queues {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let mut out = Out::new();
            let mut missing = Vec::new();
            let mut failed = Vec::new();
            let mut dropped = 0;
            let total = self.queues.len();
            for queue in &mut self.queues {
                let name = queue.shape.name.clone();
                let problem = match poll(&session.client, queue, &mut out, &mut dropped).await {
                    Ok(true) => None,
                    Ok(false) => {
                        let message = format!(
                            "queue \"{name}\": table {} does not exist (or is not visible to the monitoring role); create it or fix [[queues]] table",
                            queue.shape.table
                        );
                        missing.push(message.clone());
                        Some(message)
                    }
                    Err(error) => {
                        let message = format!("queue \"{name}\": {}", error.message);
                        failed.push(message.clone());
                        Some(message)
                    }
                };
                out.up.push(
                    &[("queue", &name)],
                    if problem.is_none() { 1.0 } else { 0.0 },
                );
                if problem != queue.problem {
                    match &problem {
                        Some(p) => {
                            tracing::warn!(queue = %name, problem = %p, "queue not measured")
                        }
                        None if queue.problem.is_some() => {
                            tracing::info!(queue = %name, "queue measured again")
                        }
                        None => {}
                    }
                    queue.problem = problem;
                }
            }
            self.dropped = dropped;
            if total > 0 && missing.len() == total {
                return Err(CollectError::skipped(
                    SkipReason::MissingTable,
                    missing.join("; "),
                ));
            }
            if total > 0 && missing.len() + failed.len() == total {
                return Err(CollectError::failed(failed.join("; ")));
            }
            Ok(out.into_vec())
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        self.queues
            .iter()
            .any(|q| q.shape.kind.is_some())
            .then_some(self.dropped)
    }
}

/// The one privilege hint for statements on a queue table: pg_monitor does not open it.
const TABLE_GRANT_HINT: &str =
    "grant the monitoring role SELECT on the table (or on the columns the queue uses)";

/// An error of a statement on the queue table, with the hint that fits it.
fn table_error(what: &str, error: &tokio_postgres::Error) -> CollectError {
    CollectError::failed(format!(
        "{what}: {}",
        describe_with(error, TABLE_GRANT_HINT)
    ))
}

/// Reads one queue into `out`. Ok(false) when its table does not exist.
async fn poll(
    client: &Client,
    queue: &mut QueueState,
    out: &mut Out,
    dropped: &mut u64,
) -> Result<bool, CollectError> {
    let shape = &queue.shape;
    let q = shape.name.as_str();
    // One catalog read: does the table exist, how big is it, how many rows were inserted.
    let row = client
        .query_one(
            "WITH r AS (SELECT to_regclass($1) AS oid), \
                  tree AS (SELECT p.relid FROM r, pg_partition_tree(r.oid) p \
                           UNION SELECT r.oid FROM r WHERE r.oid IS NOT NULL) \
             SELECT (SELECT oid FROM r) IS NOT NULL, \
                    coalesce((SELECT sum(greatest(c.reltuples, 0)) FROM pg_class c WHERE c.oid IN (SELECT relid FROM tree)), 0)::float8, \
                    coalesce((SELECT sum(s.n_live_tup) FROM pg_stat_all_tables s WHERE s.relid IN (SELECT relid FROM tree)), 0)::float8, \
                    (SELECT sum(s.n_tup_ins) FROM pg_stat_all_tables s WHERE s.relid IN (SELECT relid FROM tree))::float8",
            &[&shape.regclass],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let rows_estimate: f64 = row.get::<_, f64>(1).max(row.get::<_, f64>(2));
    let inserted: Option<f64> = row.get(3);
    let big = rows_estimate > shape.exact_count_limit as f64;
    let mut pending = 0.0;
    for (what, sql) in shape.statements() {
        if big {
            if let Some(plan) = seq_scan_plan(client, &sql).await? {
                // Counting would read the table: estimate the count, skip the breakdowns.
                if !matches!(what.as_str(), "retries" | "kinds") {
                    let estimate = estimate_rows(&plan)?.round();
                    record_count(out, q, &what, estimate, None, true, &mut pending);
                } else {
                    tracing::debug!(queue = q, part = %what, "skipped: it would scan the table");
                }
                continue;
            }
        }
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .map_err(|e| table_error(&what, &e))?;
        match what.as_str() {
            "retries" => {
                let mut counts: Vec<(f64, f64)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                counts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let total: f64 = counts.iter().map(|c| c.1).sum();
                let sum: f64 = counts.iter().map(|c| c.0 * c.1).sum();
                let labels = |le: &str| {
                    vec![
                        ("queue".to_string(), q.to_string()),
                        ("le".to_string(), le.to_string()),
                    ]
                };
                for bound in RETRY_BUCKETS {
                    let below: f64 = counts.iter().filter(|c| c.0 <= *bound).map(|c| c.1).sum();
                    out.retries.samples.push(Sample {
                        suffix: "_bucket",
                        labels: labels(&bound.to_string()),
                        value: below,
                    });
                }
                out.retries.samples.push(Sample {
                    suffix: "_bucket",
                    labels: labels("+Inf"),
                    value: total,
                });
                let plain = vec![("queue".to_string(), q.to_string())];
                out.retries.samples.push(Sample {
                    suffix: "_sum",
                    labels: plain.clone(),
                    value: sum,
                });
                out.retries.samples.push(Sample {
                    suffix: "_count",
                    labels: plain,
                    value: total,
                });
            }
            "kinds" => {
                let mut kinds: Vec<(String, [f64; 3], Option<f64>)> = rows
                    .iter()
                    .map(|r| {
                        let kind: Option<String> = r.get(0);
                        (
                            kind.unwrap_or_default(),
                            [r.get(1), r.get(2), r.get(3)],
                            r.get(4),
                        )
                    })
                    .collect();
                kinds.sort_by(|a, b| {
                    let total = |k: &[f64; 3]| k.iter().sum::<f64>();
                    total(&b.1)
                        .total_cmp(&total(&a.1))
                        .then_with(|| a.0.cmp(&b.0))
                });
                let mut other: Option<([f64; 3], Option<f64>)> = None;
                if kinds.len() > shape.max_kinds {
                    *dropped += (kinds.len() - shape.max_kinds) as u64;
                    for (_, counts, lag) in kinds.split_off(shape.max_kinds) {
                        let o = other.get_or_insert(([0.0; 3], None));
                        for (sum, count) in o.0.iter_mut().zip(counts) {
                            *sum += count;
                        }
                        o.1 = match (o.1, lag) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
                let rest = other.map(|(c, l)| (OTHER_KINDS.to_string(), c, l));
                for (kind, counts, lag) in kinds.into_iter().chain(rest) {
                    let kind = truncate(&kind, 128);
                    for (state, value) in ["ready", "scheduled", "leased"].iter().zip(counts) {
                        out.kind_depth
                            .push(&[("queue", q), ("kind", &kind), ("state", state)], value);
                    }
                    out.kind_lag.push(
                        &[("queue", q), ("kind", &kind)],
                        lag.unwrap_or(0.0).max(0.0),
                    );
                }
            }
            _ => {
                let row = rows
                    .first()
                    .ok_or_else(|| CollectError::failed(format!("{what}: no row")))?;
                let second = if row.len() > 1 {
                    row.get::<_, Option<f64>>(1)
                } else {
                    None
                };
                record_count(out, q, &what, row.get(0), second, false, &mut pending);
            }
        }
    }
    if let Some(timeout) = shape.lease_timeout.filter(|_| shape.expired.is_some()) {
        out.lease_timeout
            .push(&[("queue", q)], timeout.as_secs_f64());
    }
    if let Some(inserted) = inserted {
        out.inserted.push(&[("queue", q)], inserted);
        if shape.filter.is_none() {
            let raw = (inserted - pending).max(0.0);
            let value = match queue.processed {
                // Statistics reset (or table recreated): start again from the raw value.
                Some((last_inserted, _)) if inserted < last_inserted => raw,
                Some((_, last)) => raw.max(last),
                None => raw,
            };
            queue.processed = Some((inserted, value));
            out.processed.push(&[("queue", q)], value);
        }
    }
    Ok(true)
}

/// Puts one count (and its companion age) into the output families.
fn record_count(
    out: &mut Out,
    q: &str,
    what: &str,
    value: f64,
    age: Option<f64>,
    estimated: bool,
    pending: &mut f64,
) {
    let flag = if estimated { 1.0 } else { 0.0 };
    match what {
        "expired" => out.expired.push(&[("queue", q)], value),
        state => {
            out.depth.push(&[("queue", q), ("state", state)], value);
            out.estimated.push(&[("queue", q), ("state", state)], flag);
            if matches!(state, "ready" | "scheduled" | "leased") {
                *pending += value;
            }
            match state {
                "ready" if !estimated => out.lag.push(&[("queue", q)], age.unwrap_or(0.0).max(0.0)),
                "leased" if !estimated => out
                    .oldest_lease
                    .push(&[("queue", q)], age.unwrap_or(0.0).max(0.0)),
                _ => {}
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

/// The JSON plan of `sql` when it reads a table sequentially, else None.
async fn seq_scan_plan(
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
fn estimate_rows(plan: &serde_json::Value) -> Result<f64, CollectError> {
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
    use super::settings::QueueConfig;
    use super::*;

    fn q(toml_text: &str) -> QueueConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn notification_queue_preset_uses_the_partial_indexes_predicates() {
        let shape = Shape::resolve(&q("name = \"n\"\npreset = \"notification_queue\"")).unwrap();
        assert_eq!(shape.table, "\"core\".\"notification_queue\"");
        let sql: BTreeMap<String, String> = shape.statements().into_iter().collect();
        assert!(
            sql["ready"].contains("(status = 'ready') AND \"available_at\" <= now()"),
            "{}",
            sql["ready"]
        );
        assert!(
            sql["expired"].contains("\"lease_expires_at\" <= now()"),
            "{}",
            sql["expired"]
        );
        assert!(sql["scheduled"].contains("\"available_at\" > now()"));
        assert!(sql.contains_key("kinds") && sql.contains_key("retries"));
    }

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
