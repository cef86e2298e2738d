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

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{BuildContext, CollectError, CollectFuture, Collector, Session, Spec};
use crate::config::duration;
use crate::metric::{Family, FamilyDesc, MetricType, Sample};

/// Default row count above which a count that would scan the table is estimated instead.
pub const DEFAULT_EXACT_COUNT_LIMIT: u64 = 100_000;
/// Default cap on `kind` label values per queue.
pub const DEFAULT_MAX_KINDS: usize = 20;
/// Label value for kinds beyond the cap.
pub const OTHER_KINDS: &str = "(other)";
/// Upper bounds of the retry-count histogram buckets.
const RETRY_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0];

/// A queue design pgkpi knows; fills in table, predicates and columns.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `core.notification_queue` of migrations 002/004 (status ready/leased/done/dead).
    NotificationQueue,
    /// pgmq: one table `pgmq.q_<queue_name>` per queue; the visibility timeout is the lease.
    Pgmq,
    /// River (Go): `river_job`, states available/scheduled/running/retryable/completed/...
    River,
    /// Oban (Elixir): `oban_jobs`, states available/scheduled/executing/retryable/completed/...
    Oban,
}

impl Preset {
    pub const ALL: &'static [&'static str] = &["notification_queue", "pgmq", "river", "oban"];
}

/// `[[queues]]`: one queue table to measure. With a `preset`, every other key is optional and
/// overrides the preset's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Label value `queue="..."` of every series of this queue; unique.
    pub name: String,
    /// A known queue design: `notification_queue`, `pgmq`, `river` or `oban`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The table, `schema.table` or `table`, exactly as in the catalog (case-sensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// pgmq: the queue (table `pgmq.q_<name>`); River and Oban: only rows of this `queue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// SQL predicate ANDed to every query: the rows of this queue when a table holds several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// SQL predicate: rows waiting to run (due now, or later when `available_at_column` is set
    /// and no `scheduled_predicate` is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_predicate: Option<String>,
    /// SQL predicate: rows waiting for a time (scheduled, retry backoff). Default: ready rows
    /// whose `available_at_column` is in the future.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_predicate: Option<String>,
    /// SQL predicate: rows a worker holds (leased, running, executing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leased_predicate: Option<String>,
    /// SQL predicate: rows given up on (dead, discarded, failed for good).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_predicate: Option<String>,
    /// SQL predicate: finished rows, when the table keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_predicate: Option<String>,
    /// SQL predicate: leases held past their timeout (a dead worker). Default: built from
    /// `lease_timeout` + `locked_at_column`, else from `lease_expires_at_column`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_predicate: Option<String>,
    /// Column: when a ready row becomes runnable (available_at, run_at, scheduled_at, vt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at_column: Option<String>,
    /// Column: when the row was inserted; the lag falls back to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_column: Option<String>,
    /// Column: when the current lease was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_at_column: Option<String>,
    /// Column: when the current lease ends (used when no `lease_timeout` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_column: Option<String>,
    /// A lease older than this (by `locked_at_column`) counts as expired.
    #[serde(
        with = "duration::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub lease_timeout: Option<Duration>,
    /// Column: failed attempts (or deliveries) so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_column: Option<String>,
    /// Column: a sub-queue or job kind; pending depth and lag per value, bounded by `max_kinds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind_column: Option<String>,
    /// Most `kind` values exported (largest backlog first); the rest are summed into
    /// `kind="(other)"`. Default 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_kinds: Option<usize>,
    /// The time columns are `timestamp without time zone` holding UTC (Oban). Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utc_timestamps: Option<bool>,
    /// Above this many rows, a count whose plan would scan the table is estimated by the
    /// planner instead (flagged by `app_queue_depth_estimated`). Default 100000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_count_limit: Option<u64>,
}

/// Checks a list of queues; the messages name `queues[i]` and the key.
pub fn validate(queues: &[QueueConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, queue) in queues.iter().enumerate() {
        let shape =
            Shape::resolve(queue).map_err(|e| format!("queues[{i}] ({}): {e}", queue.name))?;
        if !names.insert(shape.name.clone()) {
            return Err(format!(
                "queues[{i}] ({}): duplicate queue name; each [[queues]] entry needs its own name",
                queue.name
            ));
        }
    }
    Ok(())
}

/// Doubles `"` and wraps in `"`: the identifier is taken literally, like quote_ident does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'...'` with `'` doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.table` or `table` → quoted; names with dots inside need `"` in the config.
pub fn quote_table(table: &str, key: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2
        || parts
            .iter()
            .any(|p| p.trim().is_empty() || p.contains('\0'))
    {
        return Err(format!(
            "{key} \"{table}\" is not a table name; write schema.table, e.g. core.notification_queue"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| quote_ident(p.trim()))
        .collect::<Vec<_>>()
        .join("."))
}

/// A column name from the config, quoted.
pub fn quote_column(column: &str, key: &str) -> Result<String, String> {
    if column.trim().is_empty() || column.contains('\0') {
        return Err(format!("{key} must be a column name"));
    }
    Ok(quote_ident(column.trim()))
}

/// A predicate from the config: one boolean SQL expression, no statement separator, no
/// comment, balanced parentheses outside string literals (so it cannot close the parentheses
/// it is wrapped in).
pub fn check_predicate(sql: &str, key: &str) -> Result<String, String> {
    if sql.trim().is_empty() {
        return Err(format!(
            "{key} is empty; write a boolean SQL expression like status = 'ready'"
        ));
    }
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for c in sql.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                ';' => {
                    return Err(format!(
                        "{key} contains ';'; a predicate is one boolean expression, not statements"
                    ))
                }
                '-' if prev == '-' => {
                    return Err(format!("{key} contains a -- comment; remove it"))
                }
                '*' if prev == '/' => {
                    return Err(format!("{key} contains a /* comment; remove it"))
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("{key} has an unbalanced ')'"));
                    }
                }
                _ => {}
            },
        }
        prev = c;
    }
    if quote.is_some() {
        return Err(format!("{key} has an unterminated quote"));
    }
    if depth != 0 {
        return Err(format!("{key} has an unbalanced '('"));
    }
    Ok(format!("({})", sql.trim()))
}

/// A queue resolved to SQL fragments: quoted identifiers, wrapped predicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    /// Quoted, qualified table.
    pub table: String,
    /// The table as text for `to_regclass`.
    pub regclass: String,
    /// `now()`, or `now()` in UTC without zone for naive timestamp columns.
    pub now: &'static str,
    pub filter: Option<String>,
    pub ready: String,
    pub scheduled: Option<String>,
    pub leased: Option<String>,
    pub expired: Option<String>,
    pub dead: Option<String>,
    pub done: Option<String>,
    pub available_at: Option<String>,
    pub created_at: Option<String>,
    pub locked_at: Option<String>,
    pub retry: Option<String>,
    pub kind: Option<String>,
    pub max_kinds: usize,
    pub lease_timeout: Option<Duration>,
    pub exact_count_limit: u64,
}

/// What a preset contributes; every field may be overridden by the config.
fn preset_defaults(preset: Preset, queue_name: Option<&str>) -> Result<QueueConfig, String> {
    let s = |v: &str| Some(v.to_string());
    let queue_filter = queue_name.map(|q| format!("queue = {}", quote_literal(q)));
    Ok(match preset {
        // Migrations 002/004: claim = status 'ready' AND available_at <= now() (partial index
        // notification_queue_claim_idx); leases carry their own end (lease_expires_at, partial
        // index notification_queue_lease_idx), as reclaim_expired_leases() reads them.
        Preset::NotificationQueue => QueueConfig {
            table: s("core.notification_queue"),
            ready_predicate: s("status = 'ready'"),
            leased_predicate: s("status = 'leased'"),
            dead_predicate: s("status = 'dead'"),
            done_predicate: s("status = 'done'"),
            available_at_column: s("available_at"),
            created_at_column: s("created_at"),
            locked_at_column: s("locked_at"),
            lease_expires_at_column: s("lease_expires_at"),
            retry_column: s("retry_count"),
            kind_column: s("channel"),
            ..Default::default()
        },
        // pgmq: a message is visible when vt <= now(); reading it pushes vt forward (the
        // visibility timeout is the lease) and increments read_ct; delete/archive finishes it.
        // Invisible with read_ct = 0 = sent with a delay. Read but still here after vt passed
        // = the reader did not finish in time (an expired lease, visible again).
        Preset::Pgmq => {
            let queue = queue_name.ok_or(
                "preset pgmq needs queue_name (the name given to pgmq.create; the table is pgmq.q_<queue_name>)",
            )?;
            QueueConfig {
                table: Some(format!("pgmq.q_{}", queue.to_lowercase())),
                ready_predicate: s("read_ct = 0 OR vt <= now()"),
                scheduled_predicate: s("read_ct = 0 AND vt > now()"),
                leased_predicate: s("read_ct > 0 AND vt > now()"),
                expired_predicate: s("read_ct > 0 AND vt <= now()"),
                available_at_column: s("vt"),
                created_at_column: s("enqueued_at"),
                retry_column: s("read_ct"),
                ..Default::default()
            }
        }
        // River: available jobs are fetched by (state, queue, priority, scheduled_at, id);
        // scheduled and retryable ones wait for scheduled_at; the rescuer gives back running
        // jobs older than RescueStuckJobsAfter (default 1h).
        Preset::River => QueueConfig {
            table: s("river_job"),
            filter: queue_filter.clone(),
            ready_predicate: s("state = 'available'"),
            scheduled_predicate: s("state IN ('scheduled', 'retryable')"),
            leased_predicate: s("state = 'running'"),
            dead_predicate: s("state IN ('discarded', 'cancelled')"),
            done_predicate: s("state = 'completed'"),
            available_at_column: s("scheduled_at"),
            created_at_column: s("created_at"),
            locked_at_column: s("attempted_at"),
            lease_timeout: Some(Duration::from_secs(3600)),
            retry_column: s("attempt"),
            kind_column: if queue_name.is_some() {
                s("kind")
            } else {
                s("queue")
            },
            ..Default::default()
        },
        // Oban: the same state machine as River, timestamps are UTC without time zone; the
        // Lifeline plugin rescues executing jobs after rescue_after (default 60 min).
        Preset::Oban => QueueConfig {
            table: s("oban_jobs"),
            filter: queue_filter,
            ready_predicate: s("state = 'available'"),
            scheduled_predicate: s("state IN ('scheduled', 'retryable')"),
            leased_predicate: s("state = 'executing'"),
            dead_predicate: s("state IN ('discarded', 'cancelled')"),
            done_predicate: s("state = 'completed'"),
            available_at_column: s("scheduled_at"),
            created_at_column: s("inserted_at"),
            locked_at_column: s("attempted_at"),
            lease_timeout: Some(Duration::from_secs(3600)),
            retry_column: s("attempt"),
            kind_column: if queue_name.is_some() {
                s("worker")
            } else {
                s("queue")
            },
            utc_timestamps: Some(true),
            ..Default::default()
        },
    })
}

impl Shape {
    /// Merges the preset (if any) with the explicit keys and builds the SQL fragments.
    pub fn resolve(config: &QueueConfig) -> Result<Shape, String> {
        let name = config.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err("name must be 1 to 64 characters; it becomes the queue label".into());
        }
        let base = match config.preset {
            Some(preset) => preset_defaults(preset, config.queue_name.as_deref())?,
            None => {
                if config.queue_name.is_some() {
                    return Err("queue_name needs a preset (pgmq, river or oban); use filter for a custom table".into());
                }
                QueueConfig::default()
            }
        };
        let pick = |own: &Option<String>, preset: &Option<String>| own.clone().or(preset.clone());
        let table = pick(&config.table, &base.table).ok_or(
            "set table (e.g. table = \"core.notification_queue\") or a preset (notification_queue, pgmq, river, oban)",
        )?;
        let quoted_table = quote_table(&table, "table")?;
        let utc = config
            .utc_timestamps
            .or(base.utc_timestamps)
            .unwrap_or(false);
        let now = if utc {
            "(now() AT TIME ZONE 'UTC')"
        } else {
            "now()"
        };
        let predicate = |key: &str, own: &Option<String>, preset: &Option<String>| {
            pick(own, preset)
                .map(|p| check_predicate(&p.replace("now()", now), key))
                .transpose()
        };
        let column = |key: &str, own: &Option<String>, preset: &Option<String>| {
            pick(own, preset).map(|c| quote_column(&c, key)).transpose()
        };
        let ready = predicate(
            "ready_predicate",
            &config.ready_predicate,
            &base.ready_predicate,
        )?
        .ok_or("set ready_predicate (e.g. \"status = 'ready'\") or a preset")?;
        let leased = predicate(
            "leased_predicate",
            &config.leased_predicate,
            &base.leased_predicate,
        )?;
        let locked_at = column(
            "locked_at_column",
            &config.locked_at_column,
            &base.locked_at_column,
        )?;
        let lease_expires = column(
            "lease_expires_at_column",
            &config.lease_expires_at_column,
            &base.lease_expires_at_column,
        )?;
        let lease_timeout = config.lease_timeout.or(base.lease_timeout);
        if lease_timeout.is_some_and(|d| d.is_zero()) {
            return Err("lease_timeout must be positive, e.g. \"5m\"".into());
        }
        let explicit_expired = predicate(
            "expired_predicate",
            &config.expired_predicate,
            &base.expired_predicate,
        )?;
        let expired = match (
            explicit_expired,
            &leased,
            lease_timeout,
            &locked_at,
            &lease_expires,
        ) {
            (Some(e), _, _, _, _) => Some(e),
            (None, Some(l), Some(timeout), Some(at), _) => Some(format!(
                "({l} AND {at} <= {now} - interval '{} seconds')",
                timeout.as_secs_f64()
            )),
            (None, Some(l), _, _, Some(until)) => Some(format!("({l} AND {until} <= {now})")),
            (None, _, Some(_), None, _) => {
                return Err(
                    "lease_timeout needs locked_at_column (when the lease was taken)".into(),
                )
            }
            _ => None,
        };
        let max_kinds = config
            .max_kinds
            .or(base.max_kinds)
            .unwrap_or(DEFAULT_MAX_KINDS);
        if max_kinds == 0 || max_kinds > 200 {
            return Err(format!(
                "max_kinds = {max_kinds}: use 1 to 200 (default {DEFAULT_MAX_KINDS})"
            ));
        }
        let exact_count_limit = config
            .exact_count_limit
            .or(base.exact_count_limit)
            .unwrap_or(DEFAULT_EXACT_COUNT_LIMIT);
        Ok(Shape {
            name: name.to_string(),
            regclass: quoted_table.clone(),
            table: quoted_table,
            now,
            filter: predicate("filter", &config.filter, &base.filter)?,
            ready,
            scheduled: predicate(
                "scheduled_predicate",
                &config.scheduled_predicate,
                &base.scheduled_predicate,
            )?,
            leased,
            expired,
            dead: predicate(
                "dead_predicate",
                &config.dead_predicate,
                &base.dead_predicate,
            )?,
            done: predicate(
                "done_predicate",
                &config.done_predicate,
                &base.done_predicate,
            )?,
            available_at: column(
                "available_at_column",
                &config.available_at_column,
                &base.available_at_column,
            )?,
            created_at: column(
                "created_at_column",
                &config.created_at_column,
                &base.created_at_column,
            )?,
            locked_at,
            retry: column("retry_column", &config.retry_column, &base.retry_column)?,
            kind: column("kind_column", &config.kind_column, &base.kind_column)?,
            max_kinds,
            lease_timeout,
            exact_count_limit,
        })
    }

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
        lane: crate::poller::Lane::Main,
        families,
        build: |ctx: &BuildContext| {
            Box::new(Queues {
                queues: ctx
                    .config
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
                return Err(CollectError::skipped("missing_table", missing.join("; ")));
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
        let rows = client.query(sql.as_str(), &[]).await.map_err(|e| {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                CollectError::failed(format!(
                    "{}; grant the monitoring role SELECT on the table (or on the columns the queue uses)",
                    crate::target::describe(&e)
                ))
            } else {
                CollectError::failed(format!("{what}: {}", crate::target::describe(&e)))
            }
        })?;
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
        .await?;
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
    fn lease_timeout_switches_to_locked_at_and_oban_uses_utc() {
        let shape = Shape::resolve(&q(
            "name = \"n\"\npreset = \"notification_queue\"\nlease_timeout = \"90s\"",
        ))
        .unwrap();
        assert!(shape
            .expired
            .unwrap()
            .contains("\"locked_at\" <= now() - interval '90 seconds'"));
        let oban =
            Shape::resolve(&q("name = \"o\"\npreset = \"oban\"\nqueue_name = \"mail\"")).unwrap();
        assert_eq!(oban.filter.as_deref(), Some("(queue = 'mail')"));
        assert!(oban
            .expired
            .unwrap()
            .contains("(now() AT TIME ZONE 'UTC') - interval '3600 seconds'"));
        let pgmq =
            Shape::resolve(&q("name = \"p\"\npreset = \"pgmq\"\nqueue_name = \"Jobs\"")).unwrap();
        assert_eq!(pgmq.table, "\"pgmq\".\"q_jobs\"");
    }

    #[test]
    fn bad_entries_are_explained() {
        let cases = [
            ("name = \"x\"", "set table"),
            ("name = \"x\"\ntable = \"a.b.c\"\nready_predicate = \"true\"", "is not a table name"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"true; DROP TABLE t\"", "ready_predicate contains ';'"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"a) OR (b\"", "ready_predicate has an unbalanced ')'"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"a -- b\"", "comment"),
            ("name = \"x\"\npreset = \"pgmq\"", "preset pgmq needs queue_name"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"s = 1\"\nleased_predicate = \"s = 2\"\nlease_timeout = \"1m\"", "lease_timeout needs locked_at_column"),
            ("name = \"\"\npreset = \"river\"", "name must be"),
        ];
        for (text, expected) in cases {
            let err = validate(&[q(text)]).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with("queues[0]"), "{err}");
        }
        // Semicolons inside a string literal are data, not a statement separator.
        assert!(check_predicate("note = 'a;b'", "k").is_ok());
        let dup = [
            q("name = \"a\"\npreset = \"river\""),
            q("name = \"a\"\npreset = \"oban\""),
        ];
        assert!(validate(&dup).unwrap_err().contains("duplicate queue name"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            quote_table("Core.Queue", "t").unwrap(),
            "\"Core\".\"Queue\""
        );
        assert_eq!(quote_literal("o'brien"), "'o''brien'");
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
