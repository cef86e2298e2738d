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
//!
//! `settings.rs` resolves the configuration into a [`Shape`], `sql.rs` builds its statements,
//! `plan.rs` reads their plans; this file runs them and fills the families.

pub mod plan;
pub mod settings;
pub mod sql;

use std::time::Duration;

use tokio_postgres::{Client, Row};

use self::plan::{estimate_rows, seq_scan_plan};
use self::settings::Shape;
use self::sql::{Count, Part};
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{describe_all, Family, FamilyDesc, Sample};
use crate::target::describe_with;

/// Label value for kinds beyond the cap.
pub const OTHER_KINDS: &str = "(other)";
/// Upper bounds of the retry-count histogram buckets.
const RETRY_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0];
/// The states of the pending rows, in the column order of the kinds statement.
const KIND_STATES: [Count; 3] = [Count::Ready, Count::Scheduled, Count::Leased];

pub fn spec() -> Spec {
    Spec {
        name: "queues",
        description: "Application queue tables ([[queues]]): depth by state, lag, leases, retries, processed.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Database,
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

crate::metric::metrics! {
    UP = gauge("app_queue_up", &["target", "queue"], "1 when the queue's table was read, 0 when it is missing or a query failed (see the logs).");
    DEPTH = gauge("app_queue_depth", &["target", "queue", "state"], "Rows by state: ready (due now), scheduled (waiting for a time), leased (held by a worker), dead, done (when kept).");
    DEPTH_ESTIMATED = gauge("app_queue_depth_estimated", &["target", "queue", "state"], "1 when app_queue_depth of this state is the planner's estimate (counting would read the whole table; see exact_count_limit), 0 when exact.");
    LAG = gauge("app_queue_lag_seconds", &["target", "queue"], "Age of the oldest ready, due row: now minus its available-at (or created-at) time; 0 when none waits.");
    OLDEST_LEASE = gauge("app_queue_oldest_lease_seconds", &["target", "queue"], "Age of the oldest lease held by a worker; 0 when none.");
    EXPIRED_LEASES = gauge("app_queue_expired_leases", &["target", "queue"], "Leases held past their timeout: the worker died or hangs; reclaiming them ends this.");
    LEASE_TIMEOUT = gauge("app_queue_lease_timeout_seconds", &["target", "queue"], "The lease timeout used for app_queue_expired_leases, when it is a fixed duration.");
    RETRIES = histogram("app_queue_retries", &["target", "queue", "le"], "Retry counter (failed attempts or reads so far) of the pending rows (ready, scheduled, leased).");
    INSERTED = counter("app_queue_inserted_total", &["target", "queue"], "Rows ever inserted into the queue table (pg_stat_user_tables.n_tup_ins, partitions summed).");
    PROCESSED = counter("app_queue_processed_total", &["target", "queue"], "Rows that left the pending set (done, dead or deleted): inserted minus pending. Not exported for queues with a row filter. Drain time: app_queue_depth{state=\"ready\"} / rate(app_queue_processed_total[5m]).");
    KIND_DEPTH = gauge("app_queue_kind_depth", &["target", "queue", "kind", "state"], "Pending rows per kind (sub-queue) and state (ready, scheduled, leased); at most max_kinds kinds, the rest in kind=\"(other)\".");
    KIND_LAG = gauge("app_queue_kind_lag_seconds", &["target", "queue", "kind"], "Age of the oldest ready, due row per kind.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        UP,
        DEPTH,
        DEPTH_ESTIMATED,
        LAG,
        OLDEST_LEASE,
        EXPIRED_LEASES,
        LEASE_TIMEOUT,
        RETRIES,
        INSERTED,
        PROCESSED,
        KIND_DEPTH,
        KIND_LAG,
    ])
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
        Out {
            up: UP.family(),
            depth: DEPTH.family(),
            estimated: DEPTH_ESTIMATED.family(),
            lag: LAG.family(),
            oldest_lease: OLDEST_LEASE.family(),
            expired: EXPIRED_LEASES.family(),
            lease_timeout: LEASE_TIMEOUT.family(),
            retries: RETRIES.family(),
            inserted: INSERTED.family(),
            processed: PROCESSED.family(),
            kind_depth: KIND_DEPTH.family(),
            kind_lag: KIND_LAG.family(),
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
    for (part, sql) in shape.statements() {
        if big {
            if let Some(plan) = seq_scan_plan(client, &sql).await? {
                // Counting would read the table: estimate the count, skip the breakdowns.
                match part {
                    Part::Count(count) => {
                        let estimate = estimate_rows(&plan)?.round();
                        record_count(out, q, count, estimate, None, true, &mut pending);
                    }
                    Part::Retries | Part::Kinds => {
                        tracing::debug!(queue = q, part = %part, "skipped: it would scan the table");
                    }
                }
                continue;
            }
        }
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .map_err(|e| table_error(part.name(), &e))?;
        match part {
            Part::Retries => record_retries(out, q, &rows),
            Part::Kinds => *dropped += record_kinds(out, q, shape.max_kinds, &rows),
            Part::Count(count) => {
                let row = rows
                    .first()
                    .ok_or_else(|| CollectError::failed(format!("{part}: no row")))?;
                let second = if row.len() > 1 {
                    row.get::<_, Option<f64>>(1)
                } else {
                    None
                };
                record_count(out, q, count, row.get(0), second, false, &mut pending);
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
    count: Count,
    value: f64,
    age: Option<f64>,
    estimated: bool,
    pending: &mut f64,
) {
    let flag = if estimated { 1.0 } else { 0.0 };
    if count == Count::Expired {
        out.expired.push(&[("queue", q)], value);
        return;
    }
    let state = count.label();
    out.depth.push(&[("queue", q), ("state", state)], value);
    out.estimated.push(&[("queue", q), ("state", state)], flag);
    if count.is_pending() {
        *pending += value;
    }
    match count {
        Count::Ready if !estimated => out.lag.push(&[("queue", q)], age.unwrap_or(0.0).max(0.0)),
        Count::Leased if !estimated => out
            .oldest_lease
            .push(&[("queue", q)], age.unwrap_or(0.0).max(0.0)),
        _ => {}
    }
}

/// The retries statement's (retry count, rows) pairs as the retries histogram.
fn record_retries(out: &mut Out, q: &str, rows: &[Row]) {
    let mut counts: Vec<(f64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
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

/// The kinds statement's rows as depth and lag per kind, the largest `max_kinds` kinds on
/// their own and the rest summed into `kind="(other)"`; returns how many kinds were summed.
fn record_kinds(out: &mut Out, q: &str, max_kinds: usize, rows: &[Row]) -> u64 {
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
    let mut dropped = 0;
    let mut other: Option<([f64; 3], Option<f64>)> = None;
    if kinds.len() > max_kinds {
        dropped = (kinds.len() - max_kinds) as u64;
        for (_, counts, lag) in kinds.split_off(max_kinds) {
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
        for (state, value) in KIND_STATES.iter().zip(counts) {
            out.kind_depth.push(
                &[("queue", q), ("kind", &kind), ("state", state.label())],
                value,
            );
        }
        out.kind_lag.push(
            &[("queue", q), ("kind", &kind)],
            lag.unwrap_or(0.0).max(0.0),
        );
    }
    dropped
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}
