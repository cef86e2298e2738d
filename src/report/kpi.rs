//! The KPIs a report compares, as data: each is a PromQL expression evaluated every step over
//! non-overlapping windows of that step (so the per-step values are separate measurements, as
//! the rank test needs), the labels that split it into rows, which direction is better, and
//! the recording rule of alerts/kpi.yml that holds its target, read from Prometheus so that the
//! report and the alerts share one threshold.
//!
//! Placeholders in `expr`: `{t}` the target's selector (`target="app"`), `{d}` the same with
//! the database filter when `--database` is given, `{p}` the pgBouncer target's selector, `{w}`
//! the step as a range (`30s`), `{tables}` a regex of the busiest tables' names.

use serde::Serialize;

/// Where a KPI's row is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Statements,
    Locks,
    Queues,
    Webhooks,
    Database,
    Tables,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Statements => "Statements",
            Group::Locks => "Locks and transactions",
            Group::Queues => "Queues",
            Group::Webhooks => "Webhooks",
            Group::Database => "Database",
            Group::Tables => "Busiest tables",
        }
    }
}

/// Which way a change is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
    /// Load, not quality (QPS at a fixed offered load, table growth): a change is reported as
    /// a change, neither improved nor regressed.
    Neither,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Seconds,
    Ratio,
    PerSecond,
    BytesPerSecond,
    Count,
}

impl Unit {
    /// The smallest difference of the medians that counts as a change, whatever the rank test
    /// says: under it a difference is below what the measurement resolves or what anyone acts on.
    pub fn resolution(self) -> f64 {
        match self {
            // 0.1 ms: the spread of a sub-millisecond statement's percentiles between two
            // quiet minutes on the same host.
            Unit::Seconds => 0.000_1,
            // Half a percentage point (a cache hit ratio from 99.9 % to 99.5 % is not news).
            Unit::Ratio => 0.005,
            // Fewer than one event per 100 seconds.
            Unit::PerSecond => 0.01,
            Unit::BytesPerSecond => 1024.0,
            // Medians of counts: a whole one.
            Unit::Count => 1.0,
        }
    }
}

/// A bound from a `pgkpi_kpi:*` recording rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The KPI must stay at or below the rule's value.
    AtMost,
    /// The KPI must stay at or above it.
    AtLeast,
}

/// Which target's series a KPI reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Database,
    /// The pgBouncer target (`--pooler`); skipped without one.
    Pooler,
}

#[derive(Debug, Clone, Copy)]
pub struct Kpi {
    pub group: Group,
    pub name: &'static str,
    pub expr: &'static str,
    /// Labels that make separate rows (e.g. `workload`); the others are aggregated away.
    pub by: &'static [&'static str],
    pub unit: Unit,
    pub better: Better,
    pub target: Option<(&'static str, Bound)>,
    pub source: Source,
    /// A gauge holding the length of the sliding window the KPI's series already cover (the
    /// webhook ratios): consecutive values closer than that share most of their data, so the
    /// KPI is evaluated every window (at least every step) to stay independent per value.
    pub sliding_window: Option<&'static str>,
}

const fn kpi(group: Group, name: &'static str, expr: &'static str) -> Kpi {
    Kpi {
        group,
        name,
        expr,
        by: &[],
        unit: Unit::Seconds,
        better: Better::Lower,
        target: None,
        source: Source::Database,
        sliding_window: None,
    }
}

impl Kpi {
    const fn by(mut self, by: &'static [&'static str]) -> Kpi {
        self.by = by;
        self
    }
    const fn unit(mut self, unit: Unit) -> Kpi {
        self.unit = unit;
        self
    }
    const fn better(mut self, better: Better) -> Kpi {
        self.better = better;
        self
    }
    const fn target(mut self, rule: &'static str, bound: Bound) -> Kpi {
        self.target = Some((rule, bound));
        self
    }
    const fn sliding(mut self, window_gauge: &'static str) -> Kpi {
        self.sliding_window = Some(window_gauge);
        self
    }
    const fn pooler(mut self) -> Kpi {
        self.source = Source::Pooler;
        self
    }
}

/// Statement latency: pgkpi's histogram, shaped by the server's logged durations when the log
/// source is on (else estimated from pg_stat_statements), as a quantile of each step's own
/// observations. pgkpi's own statements (workload "pgkpi") are not the application's.
macro_rules! latency {
    ($q:literal) => {
        concat!(
            "histogram_quantile(",
            $q,
            ", sum by (datname, workload, le) (rate(pg_statement_latency_seconds_bucket{{d},workload!=\"pgkpi\"}[{w}])))"
        )
    };
}

pub const KPIS: &[Kpi] = &[
    kpi(Group::Statements, "latency p50", latency!("0.5")).by(&["datname", "workload"]),
    kpi(Group::Statements, "latency p95", latency!("0.95"))
        .by(&["datname", "workload"])
        .target("pgkpi_kpi:statement_p95_target_seconds", Bound::AtMost),
    kpi(Group::Statements, "latency p99", latency!("0.99")).by(&["datname", "workload"]),
    kpi(
        Group::Statements,
        "statements per second",
        "sum by (datname) (rate(pg_stat_statements_all_calls_total{{d}}[{w}]))",
    )
    .by(&["datname"])
    .unit(Unit::PerSecond)
    .better(Better::Neither),
    kpi(
        Group::Statements,
        "slow calls per second",
        "sum by (datname, workload) (rate(pg_statement_slow_calls_total{{d},workload!=\"pgkpi\"}[{w}]))",
    )
    .by(&["datname", "workload"])
    .unit(Unit::PerSecond),
    kpi(
        Group::Locks,
        "lock-wait seconds per second",
        "sum by (datname) (rate(pg_lock_wait_seconds_total{{d}}[{w}]))",
    )
    .by(&["datname"])
    .unit(Unit::Ratio),
    kpi(
        Group::Locks,
        "longest lock wait",
        "max_over_time(pg_lock_oldest_wait_seconds{{t}}[{w}])",
    )
    .target("pgkpi_kpi:lock_wait_max_seconds", Bound::AtMost),
    kpi(
        Group::Locks,
        "blocked sessions",
        "max_over_time(pg_blocking_blocked_sessions{{t}}[{w}])",
    )
    .unit(Unit::Count),
    kpi(
        Group::Locks,
        "deadlocks",
        "sum by (datname) (increase(pg_stat_database_deadlocks_total{{d}}[{w}]))",
    )
    .by(&["datname"])
    .unit(Unit::Count),
    kpi(
        Group::Locks,
        "oldest transaction",
        "max_over_time(pg_oldest_transaction_age_seconds{{t}}[{w}])",
    )
    .target("pgkpi_kpi:long_transaction_max_seconds", Bound::AtMost),
    kpi(
        Group::Locks,
        "longest idle in transaction",
        "max_over_time(pg_oldest_idle_in_transaction_seconds{{t}}[{w}])",
    )
    .target("pgkpi_kpi:idle_in_transaction_max_seconds", Bound::AtMost),
    kpi(
        Group::Queues,
        "lag",
        "max by (queue) (max_over_time(app_queue_lag_seconds{{t}}[{w}]))",
    )
    .by(&["queue"])
    .target("pgkpi_kpi:queue_lag_max_seconds", Bound::AtMost),
    kpi(
        Group::Queues,
        "drain time",
        "sum by (queue) (avg_over_time(app_queue_depth{{t},state=\"ready\"}[{w}])) \
         / clamp_min(sum by (queue) (rate(app_queue_processed_total{{t}}[{w}])), 1e-9)",
    )
    .by(&["queue"]),
    kpi(
        Group::Queues,
        "processed per second",
        "sum by (queue) (rate(app_queue_processed_total{{t}}[{w}]))",
    )
    .by(&["queue"])
    .unit(Unit::PerSecond)
    .better(Better::Higher),
    kpi(
        Group::Queues,
        "expired leases",
        "max by (queue) (max_over_time(app_queue_expired_leases{{t}}[{w}]))",
    )
    .by(&["queue"])
    .unit(Unit::Count),
    kpi(
        Group::Queues,
        "new dead items per second",
        "sum by (queue) (deriv(app_queue_depth{{t},state=\"dead\"}[{w}]))",
    )
    .by(&["queue"])
    .unit(Unit::PerSecond),
    kpi(
        Group::Webhooks,
        "first-attempt success",
        "avg_over_time(app_webhook_first_attempt_success_ratio{{t}}[{w}])",
    )
    .sliding("app_webhook_window_seconds")
    .unit(Unit::Ratio)
    .better(Better::Higher),
    kpi(
        Group::Webhooks,
        "retry success",
        "avg_over_time(app_webhook_retry_success_ratio{{t}}[{w}])",
    )
    .sliding("app_webhook_window_seconds")
    .unit(Unit::Ratio)
    .better(Better::Higher)
    .target("pgkpi_kpi:webhook_retry_success_min", Bound::AtLeast),
    kpi(
        Group::Database,
        "cache hit ratio",
        "sum by (datname) (rate(pg_stat_database_blks_hit_total{{d}}[{w}])) \
         / (sum by (datname) (rate(pg_stat_database_blks_hit_total{{d}}[{w}])) \
            + sum by (datname) (rate(pg_stat_database_blks_read_total{{d}}[{w}])))",
    )
    .by(&["datname"])
    .unit(Unit::Ratio)
    .better(Better::Higher)
    .target("pgkpi_kpi:cache_hit_ratio_min", Bound::AtLeast),
    kpi(
        Group::Database,
        "connections used",
        "max_over_time(pg_connections_used{{t}}[{w}]) \
         / clamp_min(max_over_time(pg_connections_max{{t}}[{w}]) \
            - max_over_time(pg_connections_superuser_reserved{{t}}[{w}]), 1)",
    )
    .unit(Unit::Ratio)
    // Follows the number of clients, not the change's quality; its target is the gate.
    .better(Better::Neither)
    .target("pgkpi_kpi:connections_used_ratio_max", Bound::AtMost),
    kpi(
        Group::Database,
        "pool wait (pgBouncer)",
        "max by (database) (max_over_time(pgbouncer_pool_max_wait_seconds{{p}}[{w}]))",
    )
    .by(&["database"])
    .target("pgkpi_kpi:pool_wait_max_seconds", Bound::AtMost)
    .pooler(),
    kpi(
        Group::Tables,
        "growth",
        "sum by (schemaname, relname) (deriv(pg_table_size_bytes{{t},relname=~\"{tables}\"}[{w}]))",
    )
    .by(&["schemaname", "relname"])
    .unit(Unit::BytesPerSecond)
    .better(Better::Neither),
    kpi(
        Group::Tables,
        "dead-row ratio",
        "max by (schemaname, relname) (max_over_time(pg_table_dead_rows_ratio{{t},relname=~\"{tables}\"}[{w}]))",
    )
    .by(&["schemaname", "relname"])
    .unit(Unit::Ratio)
    // A level that grows between two autovacuum runs of the table and drops after one: two
    // ranges differ by where they fall in that cycle more than by the change; its target is
    // the gate.
    .better(Better::Neither)
    .target("pgkpi_kpi:dead_rows_ratio_max", Bound::AtMost),
];

/// The busiest tables of the after range: the most rows written (`{s}`: the target's selector,
/// `{range}` the after range's length), as (schemaname, relname).
pub const BUSIEST_TABLES: &str = "topk(5, sum by (schemaname, relname) (\
    increase(pg_table_tup_inserted_total{{s}}[{range}]) \
    + increase(pg_table_tup_updated_total{{s}}[{range}]) \
    + increase(pg_table_tup_deleted_total{{s}}[{range}])))";

/// Every KPI target of the bundled rules (alerts/kpi.yml records them as constant series).
pub const TARGETS: &str = "{__name__=~\"pgkpi_kpi:.+\"}";

/// Fills a KPI's placeholders.
pub struct Selectors {
    pub target: String,
    pub database: String,
    pub pooler: Option<String>,
    pub tables: String,
}

impl Selectors {
    /// The expression with its placeholders filled; `None` for a pooler KPI without a pooler.
    pub fn fill(&self, kpi: &Kpi, step: std::time::Duration) -> Option<String> {
        let pooler = match kpi.source {
            Source::Pooler => Some(self.pooler.as_deref()?),
            Source::Database => None,
        };
        Some(
            kpi.expr
                .replace("{t}", &self.target)
                .replace("{d}", &self.database)
                .replace("{p}", pooler.unwrap_or(""))
                .replace("{w}", &format!("{}s", step.as_secs()))
                .replace("{tables}", &self.tables),
        )
    }
}

/// A label value inside a PromQL double-quoted string.
pub fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A literal inside a PromQL regex (RE2) in a double-quoted string.
pub fn regex_literal(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    quote(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kpi_has_only_known_placeholders_and_unique_names() {
        let selectors = Selectors {
            target: "target=\"a\"".into(),
            database: "target=\"a\"".into(),
            pooler: Some("target=\"p\"".into()),
            tables: "x".into(),
        };
        let mut names = std::collections::BTreeSet::new();
        for kpi in KPIS {
            let expr = selectors
                .fill(kpi, std::time::Duration::from_secs(30))
                .unwrap();
            assert!(!expr.contains("{t}") && !expr.contains("{w}"), "{expr}");
            assert!(!expr.contains("{{"), "{}: {expr}", kpi.name);
            assert!(names.insert((kpi.group, kpi.name)), "{} twice", kpi.name);
            // Every split label survives the expression's aggregation.
            for label in kpi.by {
                assert!(
                    expr.contains(label),
                    "{}: by {label} not in {expr}",
                    kpi.name
                );
            }
        }
        let without_pooler = Selectors {
            pooler: None,
            ..selectors
        };
        assert!(KPIS.iter().any(|k| without_pooler
            .fill(k, std::time::Duration::from_secs(30))
            .is_none()));
    }

    #[test]
    fn targets_are_rules_of_the_bundled_file() {
        let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/alerts/kpi.yml"))
            .unwrap();
        for kpi in KPIS {
            if let Some((rule, _)) = kpi.target {
                assert!(
                    rules.contains(&format!("record: {rule}\n")),
                    "{rule} not in alerts/kpi.yml"
                );
            }
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(regex_literal("a.b\"c"), "a\\\\.b\\\"c");
        assert_eq!(quote("x\"y"), "x\\\"y");
    }
}
