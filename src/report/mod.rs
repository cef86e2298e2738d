//! `pgkpi report`: a before/after verdict on a change (a migration, an index, a setting) from
//! the KPIs Prometheus already holds for one target.
//!
//! * `range`: the two time ranges, absolute, relative or around a change.
//! * `prometheus`: the HTTP API client (TLS, basic auth, bearer token).
//! * `kpi`: the KPIs as data (PromQL per step, rows, direction, target rule).
//! * `statistics`: the rank test (Mann-Whitney U) and medians.
//! * `verdict`: one row's comparison and verdict.
//! * `render`: terminal table, Markdown, JSON, HTML.
//!
//! This module asks Prometheus for the KPIs of both ranges and assembles the report; it knows
//! nothing of the exporter's data path (a report reads Prometheus, never a database).

pub mod kpi;
pub mod prometheus;
pub mod range;
pub mod render;
pub mod statistics;
pub mod verdict;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use kpi::{Group, Kpi, Selectors, Unit, KPIS};
use prometheus::{Client, Series};
use range::Range;
use verdict::{Comparison, Significance, Target};

/// Why a report could not be made; each has its own exit code, so a pipeline can tell them
/// apart. (A finished report exits 0, or `EXIT_FAILED_KPI` when a KPI regressed or misses its
/// target.)
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    /// Prometheus answered, with an error (a rejected query, an authentication failure).
    #[error("{0}")]
    Prometheus(String),
    #[error("target {target:?} has no data in the {which} range ({range}): pg_up{{target={target:?}}} has no sample there; check the range and that Prometheus scraped pgkpi then")]
    NoData {
        target: String,
        which: &'static str,
        range: String,
    },
    #[error("target {target:?} is unknown to Prometheus; targets it holds: {known}")]
    UnknownTarget { target: String, known: String },
}

pub const EXIT_FAILED_KPI: u8 = 1;

impl ReportError {
    /// The exit code (documented in the man page and docs/report.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReportError::Usage(_) => 2,
            ReportError::Unreachable(_) | ReportError::Prometheus(_) => 3,
            ReportError::NoData { .. } => 4,
            ReportError::UnknownTarget { .. } => 5,
        }
    }
}

/// What to compare; from the command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub connection: prometheus::Connection,
    pub target: String,
    /// The pgBouncer target in front of the database, for the pool-wait KPI.
    pub pooler: Option<String>,
    /// Only this database's rows (`datname`), when given.
    pub database: Option<String>,
    pub before: Range,
    pub after: Range,
    /// The length of the windows the per-step values are computed over.
    pub step: Duration,
    pub significance: Significance,
    /// Rows whose name (as the outputs show it) matches are reported but do not count for the
    /// exit code (a KPI the change is meant to move, a known-noisy one).
    pub ignore: Option<regex::Regex>,
}

/// One row: a KPI for one combination of its split labels.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: Group,
    pub kpi: &'static str,
    /// The split labels' values (e.g. workload="chat"); empty for a KPI of the whole target.
    pub labels: BTreeMap<String, String>,
    pub unit: Unit,
    pub better: kpi::Better,
    #[serde(flatten)]
    pub comparison: Comparison,
    /// Matched by `--ignore`: shown, not counted for the exit code.
    pub ignored: bool,
    /// The per-step values, for the HTML charts and tools (time, value).
    pub before_values: Vec<(f64, f64)>,
    pub after_values: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub prometheus: String,
    pub before: Range,
    pub after: Range,
    pub step_seconds: f64,
    pub significance: Significance,
    pub method: &'static str,
    pub rows: Vec<Row>,
    /// How long the queries took.
    pub query_seconds: f64,
}

pub const METHOD: &str = "Each KPI is computed by Prometheus once per step, over non-overlapping \
    windows of that step, in each range (a KPI whose series already cover a sliding window, \
    the webhook success ratios, once per that window). Before and after are the medians of those per-step \
    values. A change is significant when the two-sided Mann-Whitney U test (a rank test: normal \
    approximation with tie and continuity correction) of the per-step values gives p below alpha \
    and the medians differ by at least the minimum change (a share of the before median) and by \
    the unit's resolution (0.1 ms, half a percentage point, 0.01/s, 1 KiB/s, one); with fewer per-step values than the minimum in either range the verdict is \"not enough \
    data\". Targets are the pgkpi_kpi:* recording rules Prometheus holds, compared with the after \
    median.";

impl Report {
    /// True when a row regressed or misses its target: the exit code says so.
    pub fn fails(&self) -> bool {
        self.rows
            .iter()
            .any(|row| !row.ignored && row.comparison.fails())
    }
}

/// Progress of the queries, for a terminal.
pub trait Progress {
    fn step(&mut self, done: usize, total: usize, what: &str);
    fn finish(&mut self);
}

/// Asks Prometheus and assembles the report.
pub async fn build(request: &Request, progress: &mut dyn Progress) -> Result<Report, ReportError> {
    let started = Instant::now();
    let client = Client::new(&request.connection)?;
    let selector = |target: &str| format!("target=\"{}\"", kpi::quote(target));
    check_target(&client, &request.target).await?;
    if let Some(pooler) = &request.pooler {
        check_target(&client, pooler).await?;
    }
    for (which, range) in [("before", &request.before), ("after", &request.after)] {
        let up = client
            .query_range(
                &format!("pg_up{{{}}}", selector(&request.target)),
                range,
                request.step,
            )
            .await?;
        if up.iter().all(|s| s.points.is_empty()) {
            return Err(ReportError::NoData {
                target: request.target.clone(),
                which,
                range: range.display(),
            });
        }
    }
    let targets = read_targets(&client, request.after.end).await?;
    let tables = busiest_tables(&client, &selector(&request.target), &request.after).await?;
    let database = match &request.database {
        Some(name) => format!(
            "{},datname=\"{}\"",
            selector(&request.target),
            kpi::quote(name)
        ),
        None => selector(&request.target),
    };
    let selectors = Selectors {
        target: selector(&request.target),
        database,
        pooler: request.pooler.as_deref().map(selector),
        tables,
    };
    let mut rows = Vec::new();
    for (done, kpi) in KPIS.iter().enumerate() {
        progress.step(done, KPIS.len(), kpi.name);
        let step = match kpi.sliding_window {
            Some(gauge) => step_for_window(&client, gauge, &selectors.target, request).await?,
            None => request.step,
        };
        let Some(expr) = selectors.fill(kpi, step) else {
            continue;
        };
        let before = client
            .query_range(&expr, &windows(&request.before, step), step)
            .await?;
        let after = client
            .query_range(&expr, &windows(&request.after, step), step)
            .await?;
        let target = kpi.target.and_then(|(rule, bound)| {
            targets
                .get(rule)
                .map(|&value| Target { rule, bound, value })
        });
        rows.extend(rows_of(kpi, before, after, target, request.significance));
    }
    for row in &mut rows {
        row.ignored = request
            .ignore
            .as_ref()
            .is_some_and(|ignore| ignore.is_match(&render::name(row)));
    }
    progress.finish();
    Ok(Report {
        target: request.target.clone(),
        prometheus: request.connection.url.clone(),
        before: request.before,
        after: request.after,
        step_seconds: request.step.as_secs_f64(),
        significance: request.significance,
        method: METHOD,
        rows,
        query_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The evaluation times of a range whose step windows lie inside it: the first window ends
/// one step after the range starts.
fn windows(range: &Range, step: Duration) -> Range {
    Range {
        start: (range.start + step.as_secs_f64()).min(range.end),
        end: range.end,
    }
}

/// The step of a KPI whose series cover a sliding window: the window (the largest seen at the
/// end of the after range), rounded up to whole seconds, when it is longer than the step.
async fn step_for_window(
    client: &Client,
    gauge: &str,
    target: &str,
    request: &Request,
) -> Result<Duration, ReportError> {
    let window = client
        .query(&format!("max({gauge}{{{target}}})"), request.after.end)
        .await?
        .first()
        .and_then(|s| s.points.first())
        .map(|p| p.1.ceil() as u64)
        .unwrap_or(0);
    Ok(request.step.max(Duration::from_secs(window)))
}

async fn check_target(client: &Client, target: &str) -> Result<(), ReportError> {
    let known = client.label_values("target").await?;
    if known.iter().any(|t| t == target) {
        return Ok(());
    }
    Err(ReportError::UnknownTarget {
        target: target.to_string(),
        known: if known.is_empty() {
            "none (is Prometheus scraping pgkpi?)".into()
        } else {
            known.join(", ")
        },
    })
}

/// The `pgkpi_kpi:*` series at `at`, by name.
async fn read_targets(client: &Client, at: f64) -> Result<BTreeMap<String, f64>, ReportError> {
    // The metric name is dropped from query results; keep it as a label.
    let named = client
        .query(
            &format!(
                "label_replace({}, \"rule\", \"$1\", \"__name__\", \"(.+)\")",
                kpi::TARGETS
            ),
            at,
        )
        .await?;
    Ok(named
        .into_iter()
        .filter_map(|s| Some((s.labels.get("rule")?.clone(), s.points.first()?.1)))
        .collect())
}

/// A regex of the names of the tables written most in the after range.
async fn busiest_tables(
    client: &Client,
    selector: &str,
    after: &Range,
) -> Result<String, ReportError> {
    let expr = kpi::BUSIEST_TABLES
        .replace("{s}", selector)
        .replace("{range}", &format!("{}s", after.seconds().round().max(1.0)));
    let tables: Vec<String> = client
        .query(&expr, after.end)
        .await?
        .into_iter()
        .filter_map(|s| s.labels.get("relname").map(|r| kpi::regex_literal(r)))
        .collect();
    // A regex matching nothing when no table was written: the rows are then simply absent.
    Ok(if tables.is_empty() {
        "$^".into()
    } else {
        tables.join("|")
    })
}

/// The rows of one KPI: a row per label combination seen in either range.
fn rows_of(
    kpi: &Kpi,
    before: Vec<Series>,
    after: Vec<Series>,
    target: Option<Target>,
    significance: Significance,
) -> Vec<Row> {
    type Key = BTreeMap<String, String>;
    type Points = Vec<(f64, f64)>;
    let key = |series: &Series| -> Key {
        kpi.by
            .iter()
            .filter_map(|label| Some((label.to_string(), series.labels.get(*label)?.clone())))
            .collect()
    };
    let mut sides: BTreeMap<Key, (Points, Points)> = BTreeMap::new();
    for series in &before {
        sides
            .entry(key(series))
            .or_default()
            .0
            .extend(&series.points);
    }
    for series in &after {
        sides
            .entry(key(series))
            .or_default()
            .1
            .extend(&series.points);
    }
    // A KPI without any series is listed once, as missing on both sides.
    if sides.is_empty() {
        sides.insert(Key::new(), (Vec::new(), Vec::new()));
    }
    sides
        .into_iter()
        .map(|(labels, (before_values, after_values))| {
            let values = |points: &[(f64, f64)]| points.iter().map(|p| p.1).collect::<Vec<_>>();
            // The statements no workload rule matched: which statements those are changes with
            // the schema (a migration's new statements land there), so a difference is a
            // change of content, not of speed.
            let better = if labels.get("workload").is_some_and(|w| w == "other") {
                kpi::Better::Neither
            } else {
                kpi.better
            };
            Row {
                group: kpi.group,
                kpi: kpi.name,
                labels,
                unit: kpi.unit,
                better,
                comparison: verdict::compare(
                    &values(&before_values),
                    &values(&after_values),
                    better,
                    target,
                    significance,
                    kpi.unit.resolution(),
                ),
                before_values,
                after_values,
                ignored: false,
            }
        })
        .collect()
}
