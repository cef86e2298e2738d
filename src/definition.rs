//! Collector definitions: "run this SQL, turn these columns into these metrics", as data.
//!
//! Built-in definitions live in `collectors/*.toml` and are embedded in the binary; users add
//! their own files (`collector_paths` in the configuration) in the same format, documented in
//! `docs/collectors.md`. Everything that can be checked without a database is checked at
//! start-up and by `pgkpi check-config`, and every error names the file, the collector and
//! the field.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::Scope;
use crate::duration;
use crate::metric::{is_valid_label_name, is_valid_metric_name, FamilyDesc, MetricType};

/// The built-in definition files, embedded at build time (see build.rs).
const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_collectors.rs"));

/// One collector definition file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Collector name: lowercase letters, digits and `_`; unique across all collectors.
    pub name: String,
    /// One sentence: what the collector reads and why.
    pub description: String,
    /// Link to the PostgreSQL documentation of the view read.
    #[serde(default)]
    pub docs: Option<String>,
    /// Time between runs (overridable in the configuration).
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// Client-side limit on one run; default: the session's statement_timeout + 1s.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Whether the collector runs unless the configuration says otherwise.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// On a server target (`[targets.databases]`): `server` when the query reads views that
    /// cover the whole server (run once), `database` (default) when it reads the connected
    /// database's catalog (run in each database, series labelled `datname`).
    #[serde(default)]
    pub scope: Scope,
    /// Conditions under which the collector applies; otherwise it is skipped, not failed.
    #[serde(default)]
    pub requires: Requires,
    /// Result columns that become labels on every metric.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Cardinality cap: at most this many rows are exported; see `order_by`.
    #[serde(default)]
    pub max_series: Option<usize>,
    /// Numeric column ranking rows when `max_series` cuts (largest kept).
    #[serde(default)]
    pub order_by: Option<String>,
    /// Column holding how many rows the query ranked before cutting them itself (its own
    /// `ORDER BY ... LIMIT`, with `count(*) OVER ()` beneath it): a query over every table of
    /// a big catalogue then returns only the rows it keeps, and the rows it left out still
    /// count as dropped.
    #[serde(default)]
    pub ranked_rows: Option<String>,
    /// SQL variants by server version; the first one whose range holds the server is used.
    #[serde(rename = "query")]
    pub queries: Vec<Query>,
    /// Columns that become metrics.
    #[serde(rename = "metric")]
    pub metrics: Vec<MetricDef>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Lowest server major version (e.g. 14).
    #[serde(default)]
    pub min_version: Option<i32>,
    /// Highest server major version.
    #[serde(default)]
    pub max_version: Option<i32>,
    /// An extension that must be installed in the target database.
    #[serde(default)]
    pub extension: Option<String>,
    /// `primary` or `standby`.
    #[serde(default)]
    pub role: Option<ServerRole>,
    /// `pg_monitor` (member of pg_monitor, or superuser) or `superuser`.
    #[serde(default)]
    pub privilege: Option<Privilege>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    Primary,
    Standby,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    PgMonitor,
    Superuser,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Query {
    #[serde(default)]
    pub min_version: Option<i32>,
    #[serde(default)]
    pub max_version: Option<i32>,
    /// One read-only statement (SELECT, WITH, VALUES or TABLE).
    pub sql: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// Result column holding the value (numeric or boolean; NULL = no sample).
    pub column: String,
    /// Metric name; counters end in `_total`, units are base units.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DefType,
    pub help: String,
    /// Multiplier applied to the value, e.g. 0.001 for milliseconds → seconds.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Base unit the name carries: `seconds`, `bytes`, `ratio`, ... (checked against the name).
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefType {
    Gauge,
    Counter,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

fn yes() -> bool {
    true
}

/// A definition with where it came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub definition: Definition,
    /// `collectors/x.toml (built in)` or the user's path.
    pub origin: String,
}

/// Units that are not base units, and what to do instead.
const NON_BASE_UNITS: &[(&str, &str)] = &[
    ("_ms", "seconds (scale = 0.001)"),
    ("_milliseconds", "seconds (scale = 0.001)"),
    ("_microseconds", "seconds (scale = 0.000001)"),
    ("_minutes", "seconds (scale = 60)"),
    ("_kb", "bytes (scale = 1024)"),
    ("_kilobytes", "bytes (scale = 1024)"),
    ("_mb", "bytes (scale = 1048576)"),
    ("_megabytes", "bytes (scale = 1048576)"),
    ("_percent", "ratio (0..1, scale = 0.01)"),
];

impl Definition {
    /// Parses and validates one file's text.
    pub fn parse(text: &str, origin: &str) -> Result<Definition, String> {
        let definition: Definition = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ", line {}",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            let name = text
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name")
                        .map(str::trim)
                        .and_then(|r| r.strip_prefix('='))
                })
                .map(|n| format!(", collector {}", n.trim()))
                .unwrap_or_default();
            format!(
                "collector definition {origin}{line}{name}: {}",
                e.message().trim()
            )
        })?;
        definition.validate().map_err(|e| {
            format!(
                "collector definition {origin}, collector \"{}\": {e}",
                definition.name
            )
        })?;
        Ok(definition)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self.name.starts_with(|c: char| c.is_ascii_lowercase())
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(
                "name: use lowercase letters, digits and '_', starting with a letter".into(),
            );
        }
        if self.description.trim().is_empty() {
            return Err("description: must not be empty".into());
        }
        if self.interval.is_zero() || self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("interval and timeout must be positive durations like \"15s\"".into());
        }
        if self.queries.is_empty() {
            return Err("no [[query]]: add at least one with sql = \"SELECT ...\"".into());
        }
        for (i, query) in self.queries.iter().enumerate() {
            check_sql(&query.sql).map_err(|e| format!("query[{i}].sql: {e}"))?;
            if let (Some(lo), Some(hi)) = (query.min_version, query.max_version) {
                if lo > hi {
                    return Err(format!(
                        "query[{i}]: min_version {lo} is above max_version {hi}"
                    ));
                }
            }
            for v in [query.min_version, query.max_version].into_iter().flatten() {
                if !(9..=99).contains(&v) {
                    return Err(format!(
                        "query[{i}]: versions are major numbers like 14, not {v}"
                    ));
                }
            }
        }
        let mut labels = BTreeSet::new();
        for label in &self.labels {
            if !is_valid_label_name(label) || label == "target" || label == "le" {
                return Err(format!(
                    "labels: \"{label}\" is not a usable label name (letters, digits, '_'; not target, le or __*)"
                ));
            }
            if !labels.insert(label.as_str()) {
                return Err(format!("labels: \"{label}\" is listed twice"));
            }
        }
        if self.metrics.is_empty() {
            return Err("no [[metric]]: map at least one column to a metric".into());
        }
        let mut names = BTreeSet::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            let at = format!("metric[{i}] ({})", metric.name);
            if !is_valid_metric_name(&metric.name) {
                return Err(format!(
                    "{at}: not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
                ));
            }
            if !names.insert(metric.name.as_str()) {
                return Err(format!("{at}: metric name used twice in this collector"));
            }
            if labels.contains(metric.column.as_str()) {
                return Err(format!(
                    "{at}: column \"{}\" is also listed in labels; a column is either a label or a value",
                    metric.column
                ));
            }
            if metric.help.trim().is_empty() {
                return Err(format!("{at}: help must say what the metric means"));
            }
            match metric.kind {
                DefType::Counter if !metric.name.ends_with("_total") => {
                    return Err(format!(
                        "{at}: counter names end in _total; rename it to {}_total",
                        metric.name
                    ))
                }
                DefType::Gauge if metric.name.ends_with("_total") => {
                    return Err(format!(
                        "{at}: only counters end in _total; make it a counter or rename it"
                    ))
                }
                _ => {}
            }
            let stem = metric.name.trim_end_matches("_total");
            if let Some((suffix, instead)) = NON_BASE_UNITS.iter().find(|(s, _)| stem.ends_with(s))
            {
                return Err(format!(
                    "{at}: \"{suffix}\" is not a base unit; use {instead}"
                ));
            }
            if let Some(unit) = &metric.unit {
                if !stem.ends_with(&format!("_{unit}")) {
                    return Err(format!(
                        "{at}: unit is {unit} but the name does not end in _{unit}"
                    ));
                }
            }
            if metric.scale.is_some_and(|s| !s.is_finite() || s == 0.0) {
                return Err(format!("{at}: scale must be a finite, non-zero number"));
            }
        }
        if let Some(column) = &self.order_by {
            if !self.metrics.iter().any(|m| &m.column == column) {
                return Err(format!(
                    "order_by: \"{column}\" is not the column of any metric"
                ));
            }
        }
        if self.order_by.is_some() && self.max_series.is_none() {
            return Err("order_by is set but max_series is not; order_by only ranks rows when max_series cuts".into());
        }
        if self.max_series == Some(0) {
            return Err("max_series must be at least 1".into());
        }
        if self.ranked_rows.is_some() && self.max_series.is_none() {
            return Err("ranked_rows is set but max_series is not; ranked_rows counts the rows a query cut to its own LIMIT, which should be max_series".into());
        }
        Ok(())
    }

    /// The query for a server major version, if any variant applies.
    pub fn query_for(&self, major: i32) -> Option<&Query> {
        self.queries.iter().find(|q| {
            q.min_version.is_none_or(|v| major >= v) && q.max_version.is_none_or(|v| major <= v)
        })
    }

    /// The families this definition emits, for the metric reference.
    pub fn families(&self) -> Vec<FamilyDesc> {
        let mut labels: Vec<&str> = vec!["target"];
        labels.extend(self.labels.iter().map(String::as_str));
        self.metrics
            .iter()
            .map(|m| {
                let kind = match m.kind {
                    DefType::Gauge => MetricType::Gauge,
                    DefType::Counter => MetricType::Counter,
                };
                FamilyDesc::new(&m.name, kind, &labels, &m.help)
            })
            .collect()
    }

    /// Server versions this definition covers, e.g. "13+" or "14–16".
    pub fn versions(&self) -> String {
        let lo =
            self.requires
                .min_version
                .or(self.queries.iter().filter_map(|q| q.min_version).min());
        let hi = self.requires.max_version;
        match (lo, hi) {
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            (Some(lo), None) => format!("{lo}+"),
            (None, Some(hi)) => format!("≤{hi}"),
            (None, None) => "all".into(),
        }
    }
}

/// Only one read-only statement: a collector must never change anything.
fn check_sql(sql: &str) -> Result<(), String> {
    let body = strip_comments(sql);
    let first = body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !["SELECT", "WITH", "VALUES", "TABLE"].contains(&first.as_str()) {
        return Err(format!(
            "must be one read-only statement starting with SELECT, WITH, VALUES or TABLE (starts with \"{first}\")"
        ));
    }
    let trimmed = body.trim().trim_end_matches(';');
    if trimmed.contains(';') && !trimmed.contains('\'') && !trimmed.contains('$') {
        return Err("must be a single statement; remove the ';' between statements".into());
    }
    Ok(())
}

fn strip_comments(sql: &str) -> String {
    sql.lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The built-in definitions, parsed. Panics on an invalid built-in: a test covers them all.
pub fn builtin() -> Vec<Loaded> {
    BUILTIN
        .iter()
        .map(|(file, text)| {
            let origin = format!("collectors/{file} (built in)");
            let definition = Definition::parse(text, &origin).unwrap_or_else(|e| panic!("{e}"));
            Loaded { definition, origin }
        })
        .collect()
}

/// User definitions from files or directories (every `*.toml` in a directory).
pub fn load_user(paths: &[PathBuf]) -> Result<Vec<Loaded>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("collector_paths: {}: cannot list it ({e})", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files.iter().map(|file| load_file(file)).collect()
}

fn load_file(file: &Path) -> Result<Loaded, String> {
    let origin = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!("collector definition {origin}: cannot read it ({e}); check collector_paths in the configuration")
    })?;
    let definition = Definition::parse(&text, &origin)?;
    Ok(Loaded { definition, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "bookings_overdue"
description = "Bookings past their payment deadline."
interval = "30s"
labels = ["status"]
max_series = 10
order_by = "n"
[[query]]
sql = "SELECT status, count(*) AS n FROM core.bookings GROUP BY status"
[[metric]]
column = "n"
name = "app_bookings"
type = "gauge"
help = "Bookings by status."
"#;

    fn error(text: &str) -> String {
        Definition::parse(text, "x.toml").unwrap_err()
    }

    #[test]
    fn parses_a_valid_definition() {
        let d = Definition::parse(GOOD, "x.toml").unwrap();
        assert_eq!(d.name, "bookings_overdue");
        assert_eq!(d.interval, Duration::from_secs(30));
        assert_eq!(d.families()[0].labels, vec!["target", "status"]);
    }

    #[test]
    fn errors_name_file_collector_and_field() {
        let e = error(&GOOD.replace("interval =", "intervall ="));
        assert!(
            e.contains("x.toml, line 4") && e.contains("intervall"),
            "{e}"
        );
        let e = error(&GOOD.replace("type = \"gauge\"", "type = \"counter\""));
        assert!(
            e.contains("collector \"bookings_overdue\"")
                && e.contains("metric[0] (app_bookings)")
                && e.contains("_total"),
            "{e}"
        );
        let e = error(&GOOD.replace("app_bookings", "app-bookings"));
        assert!(e.contains("not a valid Prometheus metric name"), "{e}");
        let e = error(&GOOD.replace("labels = [\"status\"]", "labels = [\"status\", \"n\"]"));
        assert!(e.contains("also listed in labels"), "{e}");
        let e = error(&GOOD.replace("SELECT status", "DELETE FROM x; SELECT status"));
        assert!(e.contains("read-only statement"), "{e}");
        let e = error(&GOOD.replace("order_by = \"n\"", "order_by = \"m\""));
        assert!(e.contains("order_by"), "{e}");
        let e = error(
            &GOOD
                .replace("max_series = 10", "")
                .replace("order_by = \"n\"", "ranked_rows = \"n\""),
        );
        assert!(
            e.contains("ranked_rows is set but max_series is not"),
            "{e}"
        );
        let e = error(&GOOD.replace("app_bookings", "app_wait_ms"));
        assert!(e.contains("base unit"), "{e}");
    }

    #[test]
    fn chooses_the_query_variant_by_version() {
        let text = GOOD.replace(
            "[[query]]\n",
            "[[query]]\nmin_version = 17\nsql = \"SELECT 'new' AS status, 1 AS n\"\n[[query]]\nmax_version = 16\n",
        );
        let d = Definition::parse(&text, "x.toml").unwrap();
        assert!(d.query_for(17).unwrap().sql.contains("new"));
        assert!(d.query_for(15).unwrap().sql.contains("core.bookings"));
    }

    #[test]
    fn every_builtin_definition_is_valid() {
        let all = builtin();
        assert!(
            all.len() >= 8,
            "expected the built-in set, found {}",
            all.len()
        );
    }
}
