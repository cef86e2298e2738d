//! The `[statements]` configuration section and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// Default histogram bucket bounds, seconds: 16 per decade from 1 ms to 1 s (neighbours at
/// most 1.16 apart, so histogram_quantile's linear interpolation inside a bucket is at most
/// ~16 % off, usually a few %), 1-2-5 steps outside. 55 bounds: 58 series per (database,
/// workload) with +Inf, _sum and _count.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.00115, 0.00133, 0.00154, 0.00178, 0.00205, 0.00237, 0.00274,
    0.00316, 0.00365, 0.00422, 0.00487, 0.00562, 0.00649, 0.0075, 0.00866, 0.01, 0.0115, 0.0133,
    0.0154, 0.0178, 0.0205, 0.0237, 0.0274, 0.0316, 0.0365, 0.0422, 0.0487, 0.0562, 0.0649, 0.075,
    0.0866, 0.1, 0.115, 0.133, 0.154, 0.178, 0.205, 0.237, 0.274, 0.316, 0.365, 0.422, 0.487,
    0.562, 0.649, 0.75, 0.866, 1.0, 2.0, 5.0, 10.0,
];

/// How interval calls are placed in the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// Log-normal matched to the interval's mean and variance, clipped to [min, max].
    #[default]
    Lognormal,
    /// Beta on [min, max] matched to the interval's mean and variance: uses the bounds, so a
    /// mix of fast and slow executions near min and max keeps its two modes. Falls back to the
    /// log-normal when the bounds say little (variance far below its maximum for the range).
    Beta,
    /// Every call at the interval mean (what a counter-only exporter can do).
    Mean,
}

/// Most workload rules accepted (each distinct name is a label value of every histogram).
pub const MAX_WORKLOAD_RULES: usize = 64;
/// Most distinct workload names (plus `other`).
pub const MAX_WORKLOADS: usize = 20;
/// Most histogram buckets.
pub const MAX_BUCKETS: usize = 64;
/// The workload of statements no rule matches.
pub const DEFAULT_WORKLOAD: &str = "other";
/// The built-in workload of pgkpi's own statements.
pub const PGKPI_WORKLOAD: &str = "pgkpi";

/// `[statements]`: latency histograms per workload and top statements from pg_stat_statements.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatementsConfig {
    /// How many statements get per-statement counters each poll (the ones with the most
    /// execution time in the interval); the others are counted in
    /// `pg_stat_statements_top_omitted`.
    pub top_n: usize,
    /// Upper bounds of the latency histogram buckets, seconds, increasing. Empty means the
    /// default: 16 bounds per decade from 0.001 (1 ms) to 1, 1-2-5 steps from 0.0001 to 10
    /// outside.
    pub buckets: Vec<f64>,
    /// How each interval's calls are spread over the buckets: `lognormal` (moment-matched to the
    /// interval's mean and variance, clipped to the statement's min/max), `beta` (a Beta
    /// distribution on [min, max] with that mean and variance: keeps a fast/slow mix apart, but
    /// follows an old outlier max) or `mean` (every call at the interval mean; the baseline).
    /// See docs/statements.md.
    pub estimator: Estimator,
    /// Executions slower than this are counted in `pg_statement_slow_calls_total` (estimated
    /// from the same distribution as the histogram). The default is the seed documents' target
    /// for a database query, 20 ms.
    #[serde(with = "duration")]
    pub slow_threshold: Duration,
    /// Rules naming workloads, tried in order; the first match wins, unmatched statements are
    /// `other`.
    pub workloads: Vec<WorkloadRule>,
    /// Opt-in: export the (normalized, truncated) text of the top statements in
    /// `pg_stat_statements_query_info`. Off by default: query text can reveal schema and
    /// literals of utility statements.
    pub query_text: bool,
    /// Longest query text exported by `query_text`, characters.
    pub query_text_max_length: usize,
    /// Most statements whose classification (and text, with `query_text`) is cached.
    pub cache_size: usize,
    /// How long a cached classification is trusted before the text is read again.
    #[serde(with = "duration")]
    pub text_refresh: Duration,
    /// `[statements.log]`: measured latency from the server log's sampled durations.
    pub log: LogSourceConfig,
}

/// How pgkpi reaches the server log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogAccess {
    /// No log source: the histogram is the estimate from pg_stat_statements.
    #[default]
    Off,
    /// Files in a local directory (pgkpi beside the server, or a sidecar sharing the log
    /// volume).
    Path,
    /// Over the monitoring connection with pg_read_binary_file: needs a grant that also lets
    /// the role read any other file the server can read.
    PgReadBinaryFile,
}

/// `[statements.log]`: latency distributions from the durations the server logs (a random
/// sample through `log_min_duration_sample` / `log_statement_sample_rate`, and every statement
/// over `log_min_duration_statement`). See docs/statements.md.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSourceConfig {
    /// `off`, `path` or `pg_read_binary_file`.
    pub access: LogAccess,
    /// With `path`: where the server's log directory is visible to pgkpi. Unset: the server's
    /// `log_directory` (made absolute with `data_directory`, which needs pg_read_all_settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<std::path::PathBuf>,
    /// The window of the exact quantile gauges (`pg_statement_latency_window_seconds`).
    #[serde(with = "duration")]
    pub window: Duration,
    /// Fewest samples in an interval for a (database, workload) histogram to take its shape
    /// from the log; with fewer, the estimate is used for that interval.
    pub min_samples: usize,
}

impl Default for LogSourceConfig {
    fn default() -> Self {
        LogSourceConfig {
            access: LogAccess::Off,
            directory: None,
            window: Duration::from_secs(300),
            min_samples: 20,
        }
    }
}

impl Default for StatementsConfig {
    fn default() -> Self {
        StatementsConfig {
            top_n: 50,
            buckets: Vec::new(),
            estimator: Estimator::Lognormal,
            slow_threshold: Duration::from_millis(20),
            workloads: Vec::new(),
            query_text: false,
            query_text_max_length: 200,
            cache_size: 20_000,
            text_refresh: Duration::from_secs(3600),
            log: LogSourceConfig::default(),
        }
    }
}

/// `[[statements.workloads]]`: statements matching `query` (a regex on the normalized query
/// text) or listed in `queryids` belong to workload `name`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadRule {
    /// Label value, e.g. `chat`.
    pub name: String,
    /// Regular expression (Rust `regex` syntax) searched in the normalized query text, e.g.
    /// `chat\.messages|chat\.conversations`; `(?i)` makes it case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Explicit pg_stat_statements queryids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queryids: Vec<i64>,
}

impl StatementsConfig {
    /// The bucket bounds in effect, seconds.
    pub fn bucket_bounds(&self) -> Vec<f64> {
        if self.buckets.is_empty() {
            DEFAULT_BUCKETS.to_vec()
        } else {
            self.buckets.clone()
        }
    }

    /// Checks what serde cannot; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.top_n > 1000 {
            return Err(format!(
                "statements.top_n = {} is too many series per poll; use at most 1000 (default 50)",
                self.top_n
            ));
        }
        if self.buckets.len() > MAX_BUCKETS {
            return Err(format!(
                "statements.buckets has {} bounds; use at most {MAX_BUCKETS}",
                self.buckets.len()
            ));
        }
        if self.buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            || self.buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(
                "statements.buckets must be positive, finite and strictly increasing seconds, \
                 e.g. [0.001, 0.005, 0.02, 0.1, 1] (+Inf is added)"
                    .into(),
            );
        }
        if self.slow_threshold.is_zero() {
            return Err(
                "statements.slow_threshold must be a positive duration like \"20ms\"".into(),
            );
        }
        if self.query_text_max_length == 0 || self.cache_size == 0 {
            return Err(
                "statements.query_text_max_length and statements.cache_size must be positive"
                    .into(),
            );
        }
        if self.text_refresh < Duration::from_secs(60) {
            return Err(
                "statements.text_refresh must be at least \"1m\" (reading query texts costs as \
                 much as SELECT * FROM pg_stat_statements)"
                    .into(),
            );
        }
        if self.log.window < Duration::from_secs(10) || self.log.window > Duration::from_secs(3600)
        {
            return Err(
                "statements.log.window must be between \"10s\" and \"1h\" (default \"5m\")".into(),
            );
        }
        if self.log.min_samples == 0 {
            return Err("statements.log.min_samples must be at least 1 (default 20)".into());
        }
        if self.workloads.len() > MAX_WORKLOAD_RULES {
            return Err(format!(
                "statements.workloads has {} rules; use at most {MAX_WORKLOAD_RULES}",
                self.workloads.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.workloads.iter().enumerate() {
            let where_ = format!("statements.workloads[{i}] (name \"{}\")", rule.name);
            if rule.name.is_empty()
                || rule.name.len() > 64
                || !rule
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(format!(
                    "{where_}: name must be 1 to 64 letters, digits, '_', '.' or '-'"
                ));
            }
            if rule.query.is_none() && rule.queryids.is_empty() {
                return Err(format!(
                    "{where_}: give `query` (a regex on the query text) or `queryids` (a list)"
                ));
            }
            if let Some(pattern) = &rule.query {
                regex::Regex::new(pattern).map_err(|e| {
                    format!(
                        "{where_}: query is not a valid regular expression: {e}; fix the \
                         pattern (Rust regex syntax, e.g. 'chat\\.(messages|conversations)')"
                    )
                })?;
            }
            names.insert(rule.name.as_str());
        }
        names.remove(DEFAULT_WORKLOAD);
        names.remove(PGKPI_WORKLOAD);
        if names.len() > MAX_WORKLOADS {
            return Err(format!(
                "statements.workloads names {} workloads; use at most {MAX_WORKLOADS} \
                 (each is a label value of every latency histogram)",
                names.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_are_fine_between_1ms_and_1s() {
        let fine: Vec<f64> = DEFAULT_BUCKETS
            .iter()
            .copied()
            .filter(|b| (0.001..=1.0).contains(b))
            .collect();
        assert_eq!(fine.len(), 49);
        for pair in fine.windows(2) {
            assert!(pair[1] / pair[0] < 1.16, "{pair:?}");
        }
        assert!(DEFAULT_BUCKETS.len() <= MAX_BUCKETS);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = StatementsConfig::default();
        assert!(c.validate().is_ok());
        c.workloads.push(WorkloadRule {
            name: "chat".into(),
            query: Some("chat\\.(messages".into()),
            queryids: vec![],
        });
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("statements.workloads[0]") && err.contains("regular"),
            "{err}"
        );
        c.workloads[0].query = Some("chat\\.messages".into());
        assert!(c.validate().is_ok());
        c.buckets = vec![0.1, 0.05];
        assert!(c.validate().unwrap_err().contains("statements.buckets"));
        c.buckets = vec![];
        c.workloads.push(WorkloadRule {
            name: "bad name".into(),
            query: None,
            queryids: vec![1],
        });
        assert!(c.validate().unwrap_err().contains("workloads[1]"));
    }
}
