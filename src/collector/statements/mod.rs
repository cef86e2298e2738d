//! `statements`: latency histograms per workload, top statements and totals from
//! pg_stat_statements, at a low and constant cost per poll.
//!
//! Each poll reads `pg_stat_statements(false)` — counters only, no query text, so the server
//! does not read its query-text file — and keeps the counters per entry (userid, dbid, queryid,
//! toplevel) until the next poll. The difference is the interval's activity:
//! * the latency histogram `pg_statement_latency_seconds{datname,workload}` spreads each
//!   statement's interval calls over buckets by a distribution matched to the interval's mean
//!   and variance (see [`estimate`] and docs/statements.md);
//! * per-statement counters for the top N statements by execution time in the interval;
//! * totals per database and the extension's health (fill level, deallocations, last reset).
//!
//! Query text is read only for statements not seen before (and refreshed rarely), only when a
//! workload rule needs it or `query_text` is on; only the resulting workload (and, opt-in, the
//! truncated text) is cached.
//!
//! Resets and evictions never produce negative or inflated deltas: an entry whose counters went
//! down, whose `stats_since` (pg_stat_statements 1.11, PostgreSQL 17) changed, or that appeared
//! since the last poll, started inside the interval and counts as a whole; a full reset
//! (`pg_stat_statements_info.stats_reset`, 1.9+) makes every entry fresh; after a server
//! restart that kept the statistics (or a switch to another server) the poll is a new baseline.
//! Exported counters are the collector's own running totals, so they only ever go up.
//!
//! Versions: the SQL follows the installed extension version (1.8 = PostgreSQL 13 minimum;
//! `toplevel` and `pg_stat_statements_info` from 1.9 = 14; `temp_blk_*_time` from 1.10 = 15;
//! `shared_blk_*_time`, `stats_since` from 1.11 = 17), which is what defines the columns even
//! when the server was upgraded without `ALTER EXTENSION ... UPDATE`.

pub mod estimate;
pub mod settings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use self::settings::{StatementsConfig, WorkloadRule, DEFAULT_WORKLOAD};
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{Family, FamilyDesc, MetricType, Sample};
use crate::views::Views;
use estimate::{Cumulative, Moments, Shape};

pub fn spec() -> Spec {
    Spec {
        name: "statements",
        description: "Latency histograms per workload, top statements and totals from \
                      pg_stat_statements (1.8+), computed from deltas between polls.",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families,
        build: |ctx: &BuildContext| {
            Box::new(Statements::new(
                ctx.statements,
                ctx.target,
                ctx.views.clone(),
            ))
        },
    }
}

/// Help of the histogram: the method and its limits, since the values are estimates.
const LATENCY_HELP: &str = "Execution time of top-level statements, by database and workload \
    (statements.workloads rules). Estimated: pg_stat_statements keeps only counters, so each \
    poll interval's calls of a statement are spread over the buckets by a distribution matched to \
    the interval's mean and variance (from the deltas of total time and of \
    calls*(stddev^2+mean^2)): a log-normal clipped to the statement's min/max by default \
    (statements.estimator); calls go to the interval mean when the variance is unusable. _sum and \
    _count are exact. Limits: two moments per statement and interval; a multi-modal statement is \
    smoothed (its p95 can be off by a bucket); see docs/statements.md.";

/// Per-statement counters: name, help, value, and whether it needs `track_planning`.
type CounterDesc = (&'static str, &'static str, fn(&Counters) -> f64, bool);

const STATEMENT_COUNTERS: &[CounterDesc] = &[
    (
        "pg_stat_statements_calls_total",
        "Executions of the statement (top statements of the interval only).",
        |c| c.calls,
        false,
    ),
    (
        "pg_stat_statements_exec_seconds_total",
        "Time spent executing the statement.",
        |c| c.exec_ms / 1000.0,
        false,
    ),
    (
        "pg_stat_statements_plan_seconds_total",
        "Time spent planning the statement (only with pg_stat_statements.track_planning = on).",
        |c| c.plan_ms / 1000.0,
        true,
    ),
    (
        "pg_stat_statements_rows_total",
        "Rows retrieved or affected by the statement.",
        |c| c.rows,
        false,
    ),
    (
        "pg_stat_statements_shared_blks_hit_total",
        "Shared buffer hits of the statement.",
        |c| c.shared_blks_hit,
        false,
    ),
    (
        "pg_stat_statements_shared_blks_read_total",
        "Shared blocks the statement read from the OS.",
        |c| c.shared_blks_read,
        false,
    ),
    (
        "pg_stat_statements_temp_blks_read_total",
        "Temporary blocks the statement read.",
        |c| c.temp_blks_read,
        false,
    ),
    (
        "pg_stat_statements_temp_blks_written_total",
        "Temporary blocks the statement wrote.",
        |c| c.temp_blks_written,
        false,
    ),
    (
        "pg_stat_statements_wal_bytes_total",
        "WAL the statement generated, bytes.",
        |c| c.wal_bytes,
        false,
    ),
];

/// Totals per database over all top-level statements.
const TOTAL_COUNTERS: &[CounterDesc] = &[
    (
        "pg_stat_statements_all_calls_total",
        "Executions of all top-level statements of the database.",
        |c| c.calls,
        false,
    ),
    (
        "pg_stat_statements_all_exec_seconds_total",
        "Execution time of all top-level statements of the database.",
        |c| c.exec_ms / 1000.0,
        false,
    ),
    (
        "pg_stat_statements_all_rows_total",
        "Rows retrieved or affected by all top-level statements of the database.",
        |c| c.rows,
        false,
    ),
    (
        "pg_stat_statements_all_io_read_seconds_total",
        "Time all top-level statements spent reading blocks (data files and, from PostgreSQL 15, \
         temporary files; needs track_io_timing).",
        |c| c.io_read_ms / 1000.0,
        false,
    ),
    (
        "pg_stat_statements_all_io_write_seconds_total",
        "Time all top-level statements spent writing blocks (needs track_io_timing).",
        |c| c.io_write_ms / 1000.0,
        false,
    ),
];

const STATEMENT_LABELS: &[&str] = &["target", "datname", "user", "queryid"];

fn families() -> Vec<FamilyDesc> {
    let mut out = Vec::new();
    for (name, help, _, _) in STATEMENT_COUNTERS {
        out.push(FamilyDesc::new(
            name,
            MetricType::Counter,
            STATEMENT_LABELS,
            help,
        ));
    }
    for (name, help, _, _) in TOTAL_COUNTERS {
        out.push(FamilyDesc::new(
            name,
            MetricType::Counter,
            &["target", "datname"],
            help,
        ));
    }
    let gauges: &[(&str, &str)] = &[
        (
            "pg_stat_statements_top_omitted",
            "Statements active in the last interval that were not exported per statement \
             (beyond statements.top_n).",
        ),
        (
            "pg_stat_statements_entries",
            "Entries in pg_stat_statements (all databases).",
        ),
        (
            "pg_stat_statements_max",
            "pg_stat_statements.max: entries kept before the least used are evicted.",
        ),
        (
            "pg_stat_statements_fill_ratio",
            "pg_stat_statements_entries / pg_stat_statements_max; near 1, entries are evicted and \
             statistics lost (raise pg_stat_statements.max).",
        ),
        (
            "pg_stat_statements_hidden_entries",
            "Entries whose queryid this role may not see (grant pg_read_all_stats); left out of \
             every other metric.",
        ),
        (
            "pg_stat_statements_last_reset_timestamp_seconds",
            "Unix time of the last full reset (pg_stat_statements_info.stats_reset, PostgreSQL 14+).",
        ),
        (
            "pg_statement_slow_threshold_seconds",
            "statements.slow_threshold: the latency pg_statement_slow_calls_total counts above.",
        ),
        (
            "pgkpi_statements_cached_statements",
            "Statements whose workload (and, with query_text, text) the collector caches.",
        ),
    ];
    for (name, help) in gauges {
        out.push(FamilyDesc::new(name, MetricType::Gauge, &["target"], help));
    }
    out.push(FamilyDesc::new(
        "pg_stat_statements_dealloc_total",
        MetricType::Counter,
        &["target"],
        "Entries evicted because pg_stat_statements.max was reached (pg_stat_statements_info.\
         dealloc, PostgreSQL 14+; kept monotonic across resets).",
    ));
    out.push(FamilyDesc::new(
        "pgkpi_statements_text_fetches_total",
        MetricType::Counter,
        &["target"],
        "Times the collector read query texts (only for statements not seen before).",
    ));
    out.push(FamilyDesc::new(
        "pg_stat_statements_query_info",
        MetricType::Gauge,
        &["target", "datname", "user", "queryid", "query"],
        "Always 1: normalized, truncated text of a top statement. Only with \
         statements.query_text = true.",
    ));
    out.push(FamilyDesc::new(
        "pg_statement_latency_seconds",
        MetricType::Histogram,
        &["target", "datname", "workload"],
        LATENCY_HELP,
    ));
    out.push(FamilyDesc::new(
        "pg_statement_slow_calls_total",
        MetricType::Counter,
        &["target", "datname", "workload"],
        "Top-level executions slower than statements.slow_threshold, estimated from the same \
         distribution as pg_statement_latency_seconds (exact when the threshold is outside a \
         statement's min..max).",
    ));
    out
}

/// One pg_stat_statements entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EntryKey {
    userid: u32,
    dbid: u32,
    queryid: i64,
    toplevel: bool,
}

/// One statement as exported: entries differing only in `toplevel` are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct StatementKey {
    userid: u32,
    dbid: u32,
    queryid: i64,
}

/// The additive counters of an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    calls: f64,
    exec_ms: f64,
    plan_ms: f64,
    rows: f64,
    shared_blks_hit: f64,
    shared_blks_read: f64,
    temp_blks_read: f64,
    temp_blks_written: f64,
    wal_bytes: f64,
    io_read_ms: f64,
    io_write_ms: f64,
}

impl Counters {
    fn fields(&self) -> [f64; 11] {
        [
            self.calls,
            self.exec_ms,
            self.plan_ms,
            self.rows,
            self.shared_blks_hit,
            self.shared_blks_read,
            self.temp_blks_read,
            self.temp_blks_written,
            self.wal_bytes,
            self.io_read_ms,
            self.io_write_ms,
        ]
    }

    fn from_fields(f: [f64; 11]) -> Counters {
        Counters {
            calls: f[0],
            exec_ms: f[1],
            plan_ms: f[2],
            rows: f[3],
            shared_blks_hit: f[4],
            shared_blks_read: f[5],
            temp_blks_read: f[6],
            temp_blks_written: f[7],
            wal_bytes: f[8],
            io_read_ms: f[9],
            io_write_ms: f[10],
        }
    }

    fn zip(&self, other: &Counters, op: impl Fn(f64, f64) -> f64) -> Counters {
        let (a, b) = (self.fields(), other.fields());
        Counters::from_fields(std::array::from_fn(|i| op(a[i], b[i])))
    }

    /// True when any counter is below `prev`: the entry was reset or evicted and re-created.
    fn went_down(&self, prev: &Counters) -> bool {
        self.fields()
            .iter()
            .zip(prev.fields())
            .any(|(now, before)| *now < before)
    }

    fn add(&mut self, other: &Counters) {
        *self = self.zip(other, |a, b| a + b);
    }
}

/// One entry as read in one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    counters: Counters,
    timing: Cumulative,
    /// `stats_since` (1.11+): when the entry's statistics started.
    stats_since: Option<f64>,
    /// `minmax_stats_since` (1.11+): when min/max were last reset.
    minmax_since: Option<f64>,
}

/// What the next poll subtracts from.
struct Previous {
    entries: HashMap<EntryKey, Entry>,
    stats_reset: Option<f64>,
    dealloc: Option<f64>,
    server_start: f64,
}

/// How a poll relates to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing to subtract from (first poll, or counters of unknown origin): only remember.
    Baseline,
    /// Every entry started after the previous poll (a full reset, or a restart that reset).
    AllFresh,
    /// Normal: per-entry deltas.
    Delta,
}

/// A latency histogram's running state.
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, the last one +Inf.
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
    slow: f64,
}

/// One interval's contribution to a histogram, before rounding.
#[derive(Debug, Clone, Default)]
struct Interval {
    /// Expected calls per bucket (non-cumulative).
    fractions: Vec<f64>,
    calls: u64,
    sum_seconds: f64,
    slow: f64,
}

/// A statement's cached classification.
struct Cached {
    workload: usize,
    /// Truncated text, only with `query_text`.
    text: Option<String>,
    fetched: Instant,
}

/// Compiled workload rules.
struct Rules {
    /// Workload names; the last is `other`.
    names: Vec<String>,
    rules: Vec<(usize, Option<Regex>, HashSet<i64>)>,
    needs_text: bool,
}

impl Rules {
    fn new(config: &[WorkloadRule]) -> Rules {
        let mut names: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        for rule in config {
            let index = match names.iter().position(|n| *n == rule.name) {
                Some(i) => i,
                None => {
                    names.push(rule.name.clone());
                    names.len() - 1
                }
            };
            // Validated in Config::validate; a bad pattern here matches nothing.
            let regex = rule.query.as_deref().and_then(|p| Regex::new(p).ok());
            rules.push((index, regex, rule.queryids.iter().copied().collect()));
        }
        let other = match names.iter().position(|n| n == DEFAULT_WORKLOAD) {
            Some(i) => i,
            None => {
                names.push(DEFAULT_WORKLOAD.to_string());
                names.len() - 1
            }
        };
        // Keep `other` last so that the index of the default is stable.
        if other != names.len() - 1 {
            let last = names.len() - 1;
            names.swap(other, last);
            for rule in &mut rules {
                if rule.0 == other {
                    rule.0 = last;
                } else if rule.0 == last {
                    rule.0 = other;
                }
            }
        }
        let needs_text = rules.iter().any(|r| r.1.is_some());
        Rules {
            names,
            rules,
            needs_text,
        }
    }

    fn default_index(&self) -> usize {
        self.names.len() - 1
    }

    /// First matching rule; `text` is None when it is not known.
    fn classify(&self, queryid: i64, text: Option<&str>) -> usize {
        for (index, regex, ids) in &self.rules {
            if ids.contains(&queryid) {
                return *index;
            }
            if let (Some(regex), Some(text)) = (regex, text) {
                if regex.is_match(text) {
                    return *index;
                }
            }
        }
        self.default_index()
    }
}

struct Statements {
    config: StatementsConfig,
    /// Target name, for the `/debug/statements` view.
    target: String,
    views: Arc<Views>,
    rules: Rules,
    /// Bucket upper bounds in ms (the unit of pg_stat_statements), +Inf excluded.
    bounds_ms: Vec<f64>,
    /// Bucket upper bounds as exported (`le` label values).
    bounds_le: Vec<String>,
    previous: Option<Previous>,
    /// (dbid, queryid) → workload, bounded by `cache_size`; when full, statements gone from
    /// pg_stat_statements are dropped.
    cache: HashMap<(u32, i64), Cached>,
    databases: HashMap<u32, String>,
    roles: HashMap<u32, String>,
    /// Running totals per statement (exported for the top ones); one per entry of
    /// pg_stat_statements, dropped when the entry goes.
    running: HashMap<StatementKey, Counters>,
    totals: BTreeMap<u32, Counters>,
    histograms: BTreeMap<(u32, usize), Histogram>,
    dealloc: f64,
    text_fetches: u64,
    /// Set after a failed text read: no new attempt before then.
    texts_retry_at: Option<Instant>,
}

/// Wait after a failed query-text read.
const TEXT_RETRY: Duration = Duration::from_secs(300);

/// The extension as installed in the target's database.
struct Extension {
    database: String,
    schema: String,
    version: (u32, u32),
    max: Option<f64>,
    track_planning: bool,
}

impl Statements {
    fn new(config: &StatementsConfig, target: &str, views: Arc<Views>) -> Statements {
        let bounds = config.bucket_bounds();
        Statements {
            target: target.to_string(),
            views,
            rules: Rules::new(&config.workloads),
            bounds_ms: bounds.iter().map(|b| b * 1000.0).collect(),
            bounds_le: bounds.iter().map(|b| format_le(*b)).collect(),
            config: config.clone(),
            previous: None,
            cache: HashMap::new(),
            databases: HashMap::new(),
            roles: HashMap::new(),
            running: HashMap::new(),
            totals: BTreeMap::new(),
            histograms: BTreeMap::new(),
            dealloc: 0.0,
            text_fetches: 0,
            texts_retry_at: None,
        }
    }
}

impl Collector for Statements {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(self.poll(session))
    }
}

/// `le` label value: the shortest decimal that reads back as the bound ("0.005", "10").
fn format_le(bound: f64) -> String {
    format!("{bound}")
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const EXTENSION_SQL: &str = "SELECT /* pgkpi statements: extension */ current_database()::text, \
       (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'pg_stat_statements'), \
       (SELECT e.extversion::text FROM pg_extension e WHERE e.extname = 'pg_stat_statements'), \
       current_setting('pg_stat_statements.max', true), \
       current_setting('pg_stat_statements.track_planning', true)";

/// The counters query for an extension version. The marker comment lets tests and the
/// benchmark find the exporter's own statements in pg_stat_statements.
fn entries_sql(schema: &str, version: (u32, u32)) -> String {
    let toplevel = if version >= (1, 9) {
        "toplevel"
    } else {
        "true"
    };
    let (io_read, io_write) = if version >= (1, 11) {
        (
            "shared_blk_read_time + local_blk_read_time + temp_blk_read_time",
            "shared_blk_write_time + local_blk_write_time + temp_blk_write_time",
        )
    } else if version >= (1, 10) {
        (
            "blk_read_time + temp_blk_read_time",
            "blk_write_time + temp_blk_write_time",
        )
    } else {
        ("blk_read_time", "blk_write_time")
    };
    let since = if version >= (1, 11) {
        "extract(epoch FROM stats_since)::float8, extract(epoch FROM minmax_stats_since)::float8"
    } else {
        "NULL::float8, NULL::float8"
    };
    format!(
        "SELECT /* pgkpi statements: poll */ userid, dbid, queryid, {toplevel}, calls, \
         total_exec_time, min_exec_time, max_exec_time, mean_exec_time, stddev_exec_time, \
         rows, shared_blks_hit, shared_blks_read, temp_blks_read, temp_blks_written, \
         wal_bytes::float8, total_plan_time, ({io_read})::float8, ({io_write})::float8, {since} \
         FROM {}.pg_stat_statements(false)",
        quote_ident(schema)
    )
}

fn text_sql(schema: &str) -> String {
    format!(
        "SELECT /* pgkpi statements: text */ dbid, queryid, query \
         FROM {}.pg_stat_statements(true) WHERE queryid = ANY($1)",
        quote_ident(schema)
    )
}

/// Reads one row of [`entries_sql`]; None for an entry whose queryid is hidden.
fn read_entry(row: &Row) -> Result<Option<(EntryKey, Entry)>, tokio_postgres::Error> {
    let Some(queryid) = row.try_get::<_, Option<i64>>(2)? else {
        return Ok(None);
    };
    let f = |i: usize| -> Result<f64, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<f64>>(i)?.unwrap_or(0.0))
    };
    let n = |i: usize| -> Result<f64, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<i64>>(i)?.unwrap_or(0) as f64)
    };
    let key = EntryKey {
        userid: row.try_get(0)?,
        dbid: row.try_get(1)?,
        queryid,
        toplevel: row.try_get::<_, Option<bool>>(3)?.unwrap_or(true),
    };
    let calls = n(4)?;
    let entry = Entry {
        counters: Counters {
            calls,
            exec_ms: f(5)?,
            rows: n(10)?,
            shared_blks_hit: n(11)?,
            shared_blks_read: n(12)?,
            temp_blks_read: n(13)?,
            temp_blks_written: n(14)?,
            wal_bytes: f(15)?,
            plan_ms: f(16)?,
            io_read_ms: f(17)?,
            io_write_ms: f(18)?,
        },
        timing: Cumulative {
            calls,
            total: f(5)?,
            min: f(6)?,
            max: f(7)?,
            mean: f(8)?,
            stddev: f(9)?,
        },
        stats_since: row.try_get(19)?,
        minmax_since: row.try_get(20)?,
    };
    Ok(Some((key, entry)))
}

/// Maps a failure to a skip when the library is not preloaded.
fn query_error(error: tokio_postgres::Error, database: &str) -> CollectError {
    if error.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) {
        return CollectError::skipped(
            SkipReason::NotPreloaded,
            format!(
                "pg_stat_statements is installed in database \"{database}\" but not loaded; add \
                 pg_stat_statements to shared_preload_libraries in postgresql.conf and restart \
                 the server"
            ),
        );
    }
    CollectError::from(error)
}

/// Truncates to `max` characters and folds whitespace runs, for a label value.
fn shorten(text: &str, max: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &folded[..cut]),
        None => folded,
    }
}

impl Statements {
    async fn extension(&self, session: &Session) -> Result<Extension, CollectError> {
        let row = session.client.query_one(EXTENSION_SQL, &[]).await?;
        let database: String = row.get(0);
        let (Some(schema), Some(version)) = (
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
        ) else {
            return Err(CollectError::skipped(
                SkipReason::ExtensionMissing,
                format!(
                    "pg_stat_statements is not installed in database \"{database}\"; run CREATE \
                     EXTENSION pg_stat_statements there (with shared_preload_libraries = \
                     'pg_stat_statements' in postgresql.conf)"
                ),
            ));
        };
        let version_text = version;
        let version = parse_version(&version_text);
        if version < (1, 8) {
            return Err(CollectError::skipped(
                SkipReason::Version,
                format!(
                    "pg_stat_statements {version_text} in database \"{database}\" is older than \
                     1.8 (PostgreSQL 13); run ALTER EXTENSION pg_stat_statements UPDATE"
                ),
            ));
        }
        Ok(Extension {
            database,
            schema,
            version,
            max: row
                .get::<_, Option<String>>(3)
                .and_then(|v| v.parse::<f64>().ok()),
            track_planning: row.get::<_, Option<String>>(4).as_deref() == Some("on"),
        })
    }

    /// Refreshes the dbid → datname and userid → rolname maps when an id is unknown.
    async fn resolve_names(
        &mut self,
        session: &Session,
        entries: &HashMap<EntryKey, Entry>,
    ) -> Result<(), CollectError> {
        // The maps only grow with databases and roles that exist(ed); the cap guards against a
        // cluster that churns through roles.
        const CAP: usize = 100_000;
        let unknown_db = entries
            .keys()
            .any(|k| !self.databases.contains_key(&k.dbid));
        if unknown_db {
            if self.databases.len() > CAP {
                self.databases.clear();
            }
            for row in session
                .client
                .query(
                    "SELECT /* pgkpi statements: names */ oid, datname::text FROM pg_database",
                    &[],
                )
                .await?
            {
                self.databases.insert(row.get(0), row.get(1));
            }
            for key in entries.keys() {
                // A dropped database keeps its oid as the label value instead of a re-query.
                self.databases
                    .entry(key.dbid)
                    .or_insert_with(|| key.dbid.to_string());
            }
        }
        let unknown_role = entries.keys().any(|k| !self.roles.contains_key(&k.userid));
        if unknown_role {
            if self.roles.len() > CAP {
                self.roles.clear();
            }
            for row in session
                .client
                .query(
                    "SELECT /* pgkpi statements: names */ oid, rolname::text FROM pg_roles",
                    &[],
                )
                .await?
            {
                self.roles.insert(row.get(0), row.get(1));
            }
            for key in entries.keys() {
                self.roles
                    .entry(key.userid)
                    .or_insert_with(|| key.userid.to_string());
            }
        }
        Ok(())
    }

    /// Reads the text of the statements in `wanted` that are not cached (or cached too long
    /// ago), classifies and caches them. One query for all of them.
    async fn fetch_texts(
        &mut self,
        session: &Session,
        ext: &Extension,
        wanted: &HashSet<(u32, i64)>,
    ) -> Result<(), CollectError> {
        if !self.rules.needs_text && !self.config.query_text {
            return Ok(());
        }
        let refresh = self.config.text_refresh;
        let room = self.config.cache_size.saturating_sub(self.cache.len());
        let mut missing: Vec<(u32, i64)> = Vec::new();
        let mut fresh_slots = room;
        for key in wanted {
            match self.cache.get(key) {
                Some(c) if c.fetched.elapsed() < refresh => {}
                Some(_) => missing.push(*key),
                // Beyond the cache's capacity a statement stays unclassified (`other` unless
                // listed by queryid) rather than being re-read every poll.
                None if fresh_slots > 0 => {
                    fresh_slots -= 1;
                    missing.push(*key);
                }
                None => {}
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = missing
            .iter()
            .map(|(_, q)| *q)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = session
            .client
            .query(&text_sql(&ext.schema), &[&ids])
            .await
            .map_err(|e| query_error(e, &ext.database))?;
        self.text_fetches += 1;
        let missing: HashSet<(u32, i64)> = missing.into_iter().collect();
        let now = Instant::now();
        // A cached statement whose entry went meanwhile keeps its workload until the next
        // refresh instead of being asked for again every poll.
        for key in &missing {
            if let Some(cached) = self.cache.get_mut(key) {
                cached.fetched = now;
            }
        }
        for row in rows {
            let key: (u32, i64) = (row.get(0), row.get(1));
            if !missing.contains(&key) {
                continue;
            }
            let text: Option<String> = row.get(2);
            let workload = self.rules.classify(key.1, text.as_deref());
            let text = text
                .filter(|_| self.config.query_text)
                .map(|t| shorten(&t, self.config.query_text_max_length));
            self.cache.insert(
                key,
                Cached {
                    workload,
                    text,
                    fetched: now,
                },
            );
        }
        Ok(())
    }

    fn workload(&self, dbid: u32, queryid: i64) -> usize {
        match self.cache.get(&(dbid, queryid)) {
            Some(c) => c.workload,
            None => self.rules.classify(queryid, None),
        }
    }

    fn datname(&self, dbid: u32) -> String {
        self.databases
            .get(&dbid)
            .cloned()
            .unwrap_or_else(|| dbid.to_string())
    }

    fn rolname(&self, userid: u32) -> String {
        self.roles
            .get(&userid)
            .cloned()
            .unwrap_or_else(|| userid.to_string())
    }

    async fn poll(&mut self, session: &Session) -> Result<Vec<Family>, CollectError> {
        let ext = self.extension(session).await?;
        let schema = quote_ident(&ext.schema);
        let (dealloc, stats_reset) = if ext.version >= (1, 9) {
            let row = session
                .client
                .query_one(
                    &format!(
                        "SELECT /* pgkpi statements: info */ dealloc, \
                         extract(epoch FROM stats_reset)::float8 \
                         FROM {schema}.pg_stat_statements_info"
                    ),
                    &[],
                )
                .await
                .map_err(|e| query_error(e, &ext.database))?;
            (
                row.get::<_, Option<i64>>(0).map(|v| v as f64),
                row.get::<_, Option<f64>>(1),
            )
        } else {
            (None, None)
        };
        let rows = session
            .client
            .query(&entries_sql(&ext.schema, ext.version), &[])
            .await
            .map_err(|e| query_error(e, &ext.database))?;
        let total_rows = rows.len();
        let mut entries: HashMap<EntryKey, Entry> = HashMap::with_capacity(total_rows);
        for row in &rows {
            if let Some((key, entry)) = read_entry(row)? {
                entries.insert(key, entry);
            }
        }
        drop(rows);
        let hidden = total_rows - entries.len();
        self.resolve_names(session, &entries).await?;

        let server_start = session.server.start_time_seconds;
        let mode = match &self.previous {
            None => Mode::Baseline,
            Some(p) if p.server_start != server_start => {
                // Another server process. Its statistics either started at its start (crash,
                // or pg_stat_statements.save = off): all fresh; or were loaded from the file
                // (or belong to another server after a failover): of unknown age, so start over.
                if stats_reset.is_some_and(|r| r >= server_start - 1.0) {
                    Mode::AllFresh
                } else {
                    Mode::Baseline
                }
            }
            Some(p) if stats_reset != p.stats_reset => Mode::AllFresh,
            Some(_) => Mode::Delta,
        };
        let previous = self.previous.take();

        // Deltas per entry, summed per statement; interval moments per top-level entry.
        let mut raw: HashMap<StatementKey, Counters> = HashMap::with_capacity(entries.len());
        let mut deltas: HashMap<StatementKey, Counters> = HashMap::new();
        let mut total_deltas: BTreeMap<u32, Counters> = BTreeMap::new();
        let mut raw_totals: BTreeMap<u32, Counters> = BTreeMap::new();
        let mut active: Vec<(EntryKey, Counters, Moments)> = Vec::new();
        for (key, entry) in &entries {
            let skey = StatementKey {
                userid: key.userid,
                dbid: key.dbid,
                queryid: key.queryid,
            };
            raw.entry(skey).or_default().add(&entry.counters);
            if key.toplevel {
                raw_totals.entry(key.dbid).or_default().add(&entry.counters);
            }
            let fresh = || (entry.counters, Moments::fresh(&entry.timing));
            let (delta, moments) = match mode {
                Mode::Baseline => continue,
                Mode::AllFresh => fresh(),
                Mode::Delta => match previous.as_ref().and_then(|p| p.entries.get(key)) {
                    None => fresh(),
                    Some(p)
                        if p.stats_since != entry.stats_since
                            || entry.counters.went_down(&p.counters) =>
                    {
                        fresh()
                    }
                    Some(p) => (
                        entry.counters.zip(&p.counters, |a, b| a - b),
                        Moments::between(
                            &p.timing,
                            &entry.timing,
                            p.minmax_since == entry.minmax_since,
                        ),
                    ),
                },
            };
            if delta.calls <= 0.0 && delta.exec_ms <= 0.0 && delta.plan_ms <= 0.0 {
                continue;
            }
            deltas.entry(skey).or_default().add(&delta);
            if key.toplevel {
                total_deltas.entry(key.dbid).or_default().add(&delta);
            }
            if key.toplevel && delta.calls > 0.0 {
                active.push((*key, delta, moments));
            }
        }

        // Running totals: seeded with the raw values the first time a statement is seen in a
        // baseline, advanced by deltas afterwards.
        if mode == Mode::Baseline {
            for (key, counters) in &raw {
                self.running.entry(*key).or_insert(*counters);
            }
            for (dbid, counters) in &raw_totals {
                self.totals.entry(*dbid).or_insert(*counters);
            }
        } else {
            for (key, delta) in &deltas {
                self.running.entry(*key).or_default().add(delta);
            }
        }
        self.running.retain(|k, _| raw.contains_key(k));

        // Classification needs the text of active top-level statements not seen before.
        let wanted: HashSet<(u32, i64)> =
            active.iter().map(|(k, _, _)| (k.dbid, k.queryid)).collect();
        let mut top: Vec<(StatementKey, f64)> =
            deltas.iter().map(|(k, d)| (*k, d.exec_ms)).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let omitted = top.len().saturating_sub(self.config.top_n);
        top.truncate(self.config.top_n);
        let mut wanted = wanted;
        if self.config.query_text {
            wanted.extend(top.iter().map(|(k, _)| (k.dbid, k.queryid)));
        }
        // A statement's workload does not change, so it is kept after its entry is evicted:
        // under eviction churn the same statements come back, and reading texts is the costly
        // part. Only a full cache drops the statements gone from pg_stat_statements.
        if self.cache.len() >= self.config.cache_size {
            let present: HashSet<(u32, i64)> =
                entries.keys().map(|k| (k.dbid, k.queryid)).collect();
            self.cache.retain(|k, _| present.contains(k));
        }
        // A failed text read (e.g. statement_timeout on a huge query-text file) costs only the
        // classification: those statements count as `other` until a retry some minutes later.
        let texts_allowed = self.texts_retry_at.is_none_or(|at| Instant::now() >= at);
        if texts_allowed {
            if let Err(error) = self.fetch_texts(session, &ext, &wanted).await {
                tracing::warn!(
                    target = %self.target,
                    collector = "statements",
                    error = %error,
                    "cannot read query texts; unclassified statements count as other"
                );
                self.texts_retry_at = Some(Instant::now() + TEXT_RETRY);
            } else {
                self.texts_retry_at = None;
            }
        }

        // Histograms and slow calls per (database, workload).
        let threshold_ms = self.config.slow_threshold.as_secs_f64() * 1000.0;
        let mut interval: BTreeMap<(u32, usize), Interval> = BTreeMap::new();
        for (key, delta, moments) in &active {
            let workload = self.workload(key.dbid, key.queryid);
            let shape = Shape::fit(moments, self.config.estimator);
            let acc = interval
                .entry((key.dbid, workload))
                .or_insert_with(|| Interval {
                    fractions: vec![0.0; self.bounds_ms.len() + 1],
                    ..Interval::default()
                });
            estimate::spread(&shape, delta.calls, &self.bounds_ms, &mut acc.fractions);
            acc.calls += delta.calls as u64;
            acc.sum_seconds += delta.exec_ms / 1000.0;
            acc.slow += delta.calls * (1.0 - shape.cdf(threshold_ms));
        }
        for (key, acc) in interval {
            let rounded = estimate::round_counts(&acc.fractions, acc.calls);
            let h = self.histograms.entry(key).or_insert_with(|| Histogram {
                counts: vec![0; acc.fractions.len()],
                ..Histogram::default()
            });
            for (total, add) in h.counts.iter_mut().zip(rounded) {
                *total += add;
            }
            h.count += acc.calls;
            h.sum_seconds += acc.sum_seconds;
            h.slow += acc.slow;
        }

        for (dbid, delta) in &total_deltas {
            self.totals.entry(*dbid).or_default().add(delta);
        }

        match (dealloc, previous.as_ref()) {
            (Some(now), None) => self.dealloc = now,
            (Some(now), Some(p)) if mode != Mode::Baseline => {
                // dealloc restarts at 0 on a full reset.
                let before = p.dealloc.unwrap_or(0.0);
                self.dealloc += if now >= before { now - before } else { now };
            }
            _ => {}
        }

        self.publish_view(mode, &top, &deltas, omitted, total_rows);

        self.previous = Some(Previous {
            entries,
            stats_reset,
            dealloc,
            server_start,
        });

        Ok(self.families_out(&ext, &top, omitted, hidden, total_rows, stats_reset))
    }
}

impl Statements {
    /// `/debug/statements`: the last interval's top statements, for the person who was paged.
    fn publish_view(
        &self,
        mode: Mode,
        top: &[(StatementKey, f64)],
        deltas: &HashMap<StatementKey, Counters>,
        omitted: usize,
        entries: usize,
    ) {
        let statements: Vec<serde_json::Value> = top
            .iter()
            .filter_map(|(key, _)| {
                let d = deltas.get(key)?;
                let cached = self.cache.get(&(key.dbid, key.queryid));
                Some(serde_json::json!({
                    "datname": self.datname(key.dbid),
                    "user": self.rolname(key.userid),
                    "queryid": key.queryid.to_string(),
                    "workload": self.rules.names[self.workload(key.dbid, key.queryid)],
                    "calls": d.calls,
                    "exec_ms": d.exec_ms,
                    "mean_ms": if d.calls > 0.0 { d.exec_ms / d.calls } else { 0.0 },
                    "rows": d.rows,
                    "shared_blks_read": d.shared_blks_read,
                    "query": cached.and_then(|c| c.text.as_deref()),
                }))
            })
            .collect();
        self.views.publish(
            "statements",
            &self.target,
            serde_json::json!({
                "poll": match mode {
                    Mode::Baseline => "baseline (no deltas: first poll or new server)",
                    Mode::AllFresh => "after a full reset (every entry counted whole)",
                    Mode::Delta => "deltas",
                },
                "entries": entries,
                "top_omitted": omitted,
                "top": statements,
            }),
        );
    }

    fn families_out(
        &self,
        ext: &Extension,
        top: &[(StatementKey, f64)],
        omitted: usize,
        hidden: usize,
        entries: usize,
        stats_reset: Option<f64>,
    ) -> Vec<Family> {
        let mut out = Vec::new();

        // Top statements.
        let labelled: Vec<([String; 3], &Counters, StatementKey)> = top
            .iter()
            .filter_map(|(key, _)| {
                let counters = self.running.get(key)?;
                let labels = [
                    self.datname(key.dbid),
                    self.rolname(key.userid),
                    key.queryid.to_string(),
                ];
                Some((labels, counters, *key))
            })
            .collect();
        for (name, help, value, planning) in STATEMENT_COUNTERS {
            if *planning && !ext.track_planning {
                continue;
            }
            let mut family = Family::counter(*name, *help);
            for ([datname, user, queryid], counters, _) in &labelled {
                family.push(
                    &[("datname", datname), ("user", user), ("queryid", queryid)],
                    value(counters),
                );
            }
            out.push(family);
        }
        if self.config.query_text {
            let mut family = Family::gauge(
                "pg_stat_statements_query_info",
                "Always 1: normalized, truncated text of a top statement.",
            );
            for ([datname, user, queryid], _, key) in &labelled {
                if let Some(text) = self
                    .cache
                    .get(&(key.dbid, key.queryid))
                    .and_then(|c| c.text.as_deref())
                {
                    family.push(
                        &[
                            ("datname", datname),
                            ("user", user),
                            ("queryid", queryid),
                            ("query", text),
                        ],
                        1.0,
                    );
                }
            }
            out.push(family);
        }

        // Totals per database; two oids may carry one name (a database dropped and created
        // again while its entries remain), so they are merged by name.
        let mut by_name: BTreeMap<String, Counters> = BTreeMap::new();
        for (dbid, counters) in &self.totals {
            by_name
                .entry(self.datname(*dbid))
                .or_default()
                .add(counters);
        }
        for (name, help, value, _) in TOTAL_COUNTERS {
            let mut family = Family::counter(*name, *help);
            for (datname, counters) in &by_name {
                family.push(&[("datname", datname)], value(counters));
            }
            out.push(family);
        }

        // Latency histograms and slow calls.
        let mut merged: BTreeMap<(String, &str), Histogram> = BTreeMap::new();
        for ((dbid, workload), h) in &self.histograms {
            let m = merged
                .entry((self.datname(*dbid), self.rules.names[*workload].as_str()))
                .or_insert_with(|| Histogram {
                    counts: vec![0; h.counts.len()],
                    ..Histogram::default()
                });
            for (total, add) in m.counts.iter_mut().zip(&h.counts) {
                *total += add;
            }
            m.count += h.count;
            m.sum_seconds += h.sum_seconds;
            m.slow += h.slow;
        }
        let mut latency = Family::new(
            "pg_statement_latency_seconds",
            LATENCY_HELP,
            MetricType::Histogram,
        );
        let mut slow = Family::counter(
            "pg_statement_slow_calls_total",
            "Top-level executions slower than statements.slow_threshold (estimated).",
        );
        for ((datname, workload), h) in &merged {
            let base = vec![
                ("datname".to_string(), datname.clone()),
                ("workload".to_string(), workload.to_string()),
            ];
            let mut cumulative = 0u64;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let le = self
                    .bounds_le
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "+Inf".to_string());
                let mut labels = base.clone();
                labels.push(("le".to_string(), le));
                latency.samples.push(Sample {
                    suffix: "_bucket",
                    labels,
                    value: cumulative as f64,
                });
            }
            latency.samples.push(Sample {
                suffix: "_sum",
                labels: base.clone(),
                value: h.sum_seconds,
            });
            latency.samples.push(Sample {
                suffix: "_count",
                labels: base,
                value: h.count as f64,
            });
            slow.push(&[("datname", datname), ("workload", workload)], h.slow);
        }
        out.push(latency);
        out.push(slow);

        // Health of the extension.
        let gauge = |name: &str, help: &str, value: f64| Family::gauge(name, help).with(&[], value);
        out.push(gauge(
            "pg_stat_statements_top_omitted",
            "Statements active in the last interval not exported per statement.",
            omitted as f64,
        ));
        out.push(gauge(
            "pg_stat_statements_entries",
            "Entries in pg_stat_statements (all databases).",
            entries as f64,
        ));
        if let Some(max) = ext.max {
            out.push(gauge(
                "pg_stat_statements_max",
                "pg_stat_statements.max.",
                max,
            ));
            if max > 0.0 {
                out.push(gauge(
                    "pg_stat_statements_fill_ratio",
                    "pg_stat_statements_entries / pg_stat_statements_max.",
                    entries as f64 / max,
                ));
            }
        }
        out.push(gauge(
            "pg_stat_statements_hidden_entries",
            "Entries whose queryid this role may not see.",
            hidden as f64,
        ));
        if let Some(reset) = stats_reset {
            out.push(gauge(
                "pg_stat_statements_last_reset_timestamp_seconds",
                "Unix time of the last full reset.",
                reset,
            ));
        }
        out.push(gauge(
            "pg_statement_slow_threshold_seconds",
            "statements.slow_threshold.",
            self.config.slow_threshold.as_secs_f64(),
        ));
        out.push(gauge(
            "pgkpi_statements_cached_statements",
            "Statements whose workload the collector caches.",
            self.cache.len() as f64,
        ));
        if ext.version >= (1, 9) {
            out.push(
                Family::counter(
                    "pg_stat_statements_dealloc_total",
                    "Entries evicted because pg_stat_statements.max was reached.",
                )
                .with(&[], self.dealloc),
            );
        }
        out.push(
            Family::counter(
                "pgkpi_statements_text_fetches_total",
                "Times the collector read query texts.",
            )
            .with(&[], self.text_fetches as f64),
        );
        // One HELP per family name: take it from the static description.
        let helps: HashMap<String, String> =
            families().into_iter().map(|d| (d.name, d.help)).collect();
        for family in &mut out {
            if let Some(help) = helps.get(&family.name) {
                family.help = help.clone();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_first_match_wins_and_other_is_last() {
        let rules = Rules::new(&[
            WorkloadRule {
                name: "pinned".into(),
                query: None,
                queryids: vec![42],
            },
            WorkloadRule {
                name: "chat".into(),
                query: Some(r"chat\.messages|chat\.conversations".into()),
                queryids: vec![],
            },
            WorkloadRule {
                name: "notifications".into(),
                query: Some(r"notification_(queue|deliveries)".into()),
                queryids: vec![],
            },
        ]);
        let name = |i: usize| rules.names[i].as_str();
        assert_eq!(name(rules.classify(42, Some("SELECT 1"))), "pinned");
        assert_eq!(
            name(rules.classify(1, Some("SELECT * FROM chat.messages WHERE id = $1"))),
            "chat"
        );
        assert_eq!(
            name(rules.classify(1, Some("UPDATE core.notification_queue SET x = $1"))),
            "notifications"
        );
        assert_eq!(name(rules.classify(1, Some("SELECT 1"))), "other");
        assert_eq!(name(rules.classify(1, None)), "other");
        assert!(rules.needs_text);
        assert!(!Rules::new(&[]).needs_text);
    }

    #[test]
    fn explicit_other_rule_keeps_other_last() {
        let rules = Rules::new(&[
            WorkloadRule {
                name: "other".into(),
                query: Some("^SET ".into()),
                queryids: vec![],
            },
            WorkloadRule {
                name: "chat".into(),
                query: Some("chat".into()),
                queryids: vec![],
            },
        ]);
        assert_eq!(rules.names, vec!["chat".to_string(), "other".to_string()]);
        assert_eq!(rules.classify(1, Some("SET x = 1")), 1);
        assert_eq!(rules.classify(1, Some("SELECT chat")), 0);
    }

    #[test]
    fn counters_detect_resets() {
        let before = Counters {
            calls: 10.0,
            rows: 100.0,
            ..Counters::default()
        };
        let grew = Counters {
            calls: 12.0,
            rows: 120.0,
            ..Counters::default()
        };
        let reinserted = Counters {
            calls: 15.0,
            rows: 3.0,
            ..Counters::default()
        };
        assert!(!grew.went_down(&before));
        assert!(reinserted.went_down(&before));
        assert_eq!(grew.zip(&before, |a, b| a - b).calls, 2.0);
    }

    #[test]
    fn sql_follows_the_extension_version() {
        assert!(entries_sql("public", (1, 8)).contains("blk_read_time)"));
        assert!(!entries_sql("public", (1, 8)).contains("toplevel"));
        assert!(entries_sql("public", (1, 10)).contains("temp_blk_read_time"));
        let v17 = entries_sql("my \"schema\"", (1, 11));
        assert!(v17.contains("shared_blk_read_time") && v17.contains("stats_since"));
        assert!(v17.contains("\"my \"\"schema\"\"\".pg_stat_statements(false)"));
        assert_eq!(parse_version("1.10"), (1, 10));
        assert_eq!(format_le(0.0001), "0.0001");
        assert_eq!(format_le(10.0), "10");
        assert_eq!(shorten("SELECT  a,\n  b FROM t", 10), "SELECT a, …");
    }
}
