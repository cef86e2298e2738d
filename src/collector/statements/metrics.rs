//! Every family the `statements` collector emits, declared once: name, type, labels and help
//! live here and nowhere else ([`super::output`] makes its families from these constants).

use super::delta::Counters;
use crate::metric::{describe_all, FamilyDesc, Metric};

const STATEMENT_LABELS: &[&str] = &["target", "datname", "user", "queryid"];
const DATABASE_LABELS: &[&str] = &["target", "datname"];
const WORKLOAD_LABELS: &[&str] = &["target", "datname", "workload"];
const TARGET_LABELS: &[&str] = &["target"];
const WINDOW_LABELS: &[&str] = &["target", "datname", "workload", "quantile"];
const SOURCE_LABELS: &[&str] = &["target", "datname", "workload", "source"];
const STATUS_LABELS: &[&str] = &["target", "status"];
const LOST_LABELS: &[&str] = &["target", "reason"];

/// A counter family whose value is one field of [`Counters`].
pub struct CounterMetric {
    pub metric: Metric,
    pub value: fn(&Counters) -> f64,
    /// Emitted only with `pg_stat_statements.track_planning = on`.
    pub needs_track_planning: bool,
}

/// Per-statement counters, exported for the top statements of the interval.
pub const STATEMENT_COUNTERS: &[CounterMetric] = &[
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_calls_total",
            STATEMENT_LABELS,
            "Executions of the statement (top statements of the interval only).",
        ),
        value: |c| c.calls,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_exec_seconds_total",
            STATEMENT_LABELS,
            "Time spent executing the statement.",
        ),
        value: |c| c.exec_ms / 1000.0,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_plan_seconds_total",
            STATEMENT_LABELS,
            "Time spent planning the statement (only with pg_stat_statements.track_planning = \
             on).",
        ),
        value: |c| c.plan_ms / 1000.0,
        needs_track_planning: true,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_rows_total",
            STATEMENT_LABELS,
            "Rows retrieved or affected by the statement.",
        ),
        value: |c| c.rows,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_shared_blks_hit_total",
            STATEMENT_LABELS,
            "Shared buffer hits of the statement.",
        ),
        value: |c| c.shared_blks_hit,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_shared_blks_read_total",
            STATEMENT_LABELS,
            "Shared blocks the statement read from the OS.",
        ),
        value: |c| c.shared_blks_read,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_temp_blks_read_total",
            STATEMENT_LABELS,
            "Temporary blocks the statement read.",
        ),
        value: |c| c.temp_blks_read,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_temp_blks_written_total",
            STATEMENT_LABELS,
            "Temporary blocks the statement wrote.",
        ),
        value: |c| c.temp_blks_written,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_wal_bytes_total",
            STATEMENT_LABELS,
            "WAL the statement generated, bytes.",
        ),
        value: |c| c.wal_bytes,
        needs_track_planning: false,
    },
];

/// Totals per database over all top-level statements.
pub const TOTAL_COUNTERS: &[CounterMetric] = &[
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_all_calls_total",
            DATABASE_LABELS,
            "Executions of all top-level statements of the database.",
        ),
        value: |c| c.calls,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_all_exec_seconds_total",
            DATABASE_LABELS,
            "Execution time of all top-level statements of the database.",
        ),
        value: |c| c.exec_ms / 1000.0,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_all_rows_total",
            DATABASE_LABELS,
            "Rows retrieved or affected by all top-level statements of the database.",
        ),
        value: |c| c.rows,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_all_io_read_seconds_total",
            DATABASE_LABELS,
            "Time all top-level statements spent reading blocks (data files and, from \
             PostgreSQL 15, temporary files; needs track_io_timing).",
        ),
        value: |c| c.io_read_ms / 1000.0,
        needs_track_planning: false,
    },
    CounterMetric {
        metric: Metric::counter(
            "pg_stat_statements_all_io_write_seconds_total",
            DATABASE_LABELS,
            "Time all top-level statements spent writing blocks (needs track_io_timing).",
        ),
        value: |c| c.io_write_ms / 1000.0,
        needs_track_planning: false,
    },
];

crate::metric::metrics! {
    pub WINDOW_QUANTILE = gauge("pg_statement_latency_window_seconds", WINDOW_LABELS, "Quantile (0.5, 0.95, 0.99) of the execution time of the top-level statements of the workload over the last statements.log.window, computed exactly from the weighted durations in the server log. Per target and database only: quantiles cannot be averaged or summed across targets, databases or workloads (use pg_statement_latency_seconds for that).");
    pub WINDOW_SAMPLES = gauge("pg_statement_latency_window_samples", WORKLOAD_LABELS, "Logged durations behind pg_statement_latency_window_seconds (each stands for 1 / log_statement_sample_rate executions, or 1 when over log_min_duration_statement).");
    pub SOURCE = gauge("pg_statement_latency_source", SOURCE_LABELS, "1 for the source that shaped the workload's histogram in the last interval it ran: log (sampled durations from the server log) or estimate (fitted to pg_stat_statements' moments).");
    pub INTERVAL_SAMPLES = gauge("pg_statement_latency_interval_samples", WORKLOAD_LABELS, "Logged durations of the workload in the last interval it ran (below statements.log.min_samples the estimate is used).");
    pub LOG_STATUS = gauge("pg_statement_log_source_status", STATUS_LABELS, "1 for the state of the latency log source: ok, off, settings (a server setting is missing), grant (a privilege is missing), no_logfile, unreadable, weights_changed (the logging settings changed in the interval; its samples are not used). The status page says what to do.");
    pub LOG_SAMPLE_RATE = gauge("pg_statement_log_sample_rate", TARGET_LABELS, "The server's log_statement_sample_rate: the share of executions over log_min_duration_sample that are logged.");
    pub LOG_MIN_DURATION_STATEMENT = gauge("pg_statement_log_min_duration_statement_seconds", TARGET_LABELS, "The server's log_min_duration_statement (every execution this long is logged); -1 when off.");
    pub LOG_MIN_DURATION_SAMPLE = gauge("pg_statement_log_min_duration_sample_seconds", TARGET_LABELS, "The server's log_min_duration_sample (executions this long are sampled at log_statement_sample_rate); -1 when off.");
    pub LOG_RECORDS = counter("pgkpi_statements_log_records_total", TARGET_LABELS, "Server log records read by the latency log source (all messages, not only durations).");
    pub LOG_SAMPLES = counter("pgkpi_statements_log_samples_total", TARGET_LABELS, "Execution durations taken from the server log as latency samples.");
    pub LOG_BYTES = counter("pgkpi_statements_log_bytes_total", TARGET_LABELS, "Bytes of server log read by the latency log source.");
    pub LOG_LOST = counter("pgkpi_statements_log_lost_total", LOST_LABELS, "What the latency log source could not read, by reason: rotation_missed (a rotated file was gone before its rest was read), truncated (a file shrank under the reader), incomplete_record (a record cut by a rotation or longer than 1 MiB), malformed (a record that did not decode), unweighable (a duration no current logging setting explains).");
    pub TOP_OMITTED = gauge("pg_stat_statements_top_omitted", TARGET_LABELS, "Statements active in the last interval that were not exported per statement (beyond statements.top_n).");
    pub ENTRIES = gauge("pg_stat_statements_entries", TARGET_LABELS, "Entries in pg_stat_statements (all databases).");
    pub MAX = gauge("pg_stat_statements_max", TARGET_LABELS, "pg_stat_statements.max: entries kept before the least used are evicted.");
    pub FILL_RATIO = gauge("pg_stat_statements_fill_ratio", TARGET_LABELS, "pg_stat_statements_entries / pg_stat_statements_max; near 1, entries are evicted and statistics lost (raise pg_stat_statements.max).");
    pub HIDDEN_ENTRIES = gauge("pg_stat_statements_hidden_entries", TARGET_LABELS, "Entries whose queryid this role may not see (grant pg_read_all_stats); left out of every other metric.");
    pub LAST_RESET = gauge("pg_stat_statements_last_reset_timestamp_seconds", TARGET_LABELS, "Unix time of the last full reset (pg_stat_statements_info.stats_reset, PostgreSQL 14+).");
    pub SLOW_THRESHOLD = gauge("pg_statement_slow_threshold_seconds", TARGET_LABELS, "statements.slow_threshold: the latency pg_statement_slow_calls_total counts above.");
    pub CACHED_STATEMENTS = gauge("pgkpi_statements_cached_statements", TARGET_LABELS, "Statements whose workload (and, with query_text, text) the collector caches.");
    pub DEALLOC = counter("pg_stat_statements_dealloc_total", TARGET_LABELS, "Entries evicted because pg_stat_statements.max was reached (pg_stat_statements_info.dealloc, PostgreSQL 14+; kept monotonic across resets).");
    pub TEXT_FETCHES = counter("pgkpi_statements_text_fetches_total", TARGET_LABELS, "Times the collector read query texts (only for statements not seen before).");
    pub QUERY_INFO = gauge("pg_stat_statements_query_info", &["target", "datname", "user", "queryid", "query"], "Always 1: normalized, truncated text of a top statement. Only with statements.query_text = true.");
    /// The method and its limits are in the help, since the values are estimates.
    pub LATENCY = histogram("pg_statement_latency_seconds", WORKLOAD_LABELS, "Execution time of top-level statements, by database and workload (statements.workloads rules). Estimated: pg_stat_statements keeps only counters, so each poll interval's calls of a statement are spread over the buckets by a distribution matched to the interval's mean and variance (from the deltas of total time and of calls*(stddev^2+mean^2)): a log-normal clipped to the statement's min/max by default (statements.estimator); calls go to the interval mean when the variance is unusable. _sum and _count are exact. Limits: two moments per statement and interval; a multi-modal statement is smoothed (its p95 can be off by a bucket); see docs/statements.md.");
    pub SLOW_CALLS = counter("pg_statement_slow_calls_total", WORKLOAD_LABELS, "Top-level executions slower than statements.slow_threshold, estimated from the same distribution as pg_statement_latency_seconds (exact when the threshold is outside a statement's min..max).");
}

/// The declarations in the order of the metric reference.
pub fn families() -> Vec<FamilyDesc> {
    let counters = STATEMENT_COUNTERS
        .iter()
        .chain(TOTAL_COUNTERS)
        .map(|c| c.metric);
    let others = [
        TOP_OMITTED,
        ENTRIES,
        MAX,
        FILL_RATIO,
        HIDDEN_ENTRIES,
        LAST_RESET,
        SLOW_THRESHOLD,
        CACHED_STATEMENTS,
        DEALLOC,
        TEXT_FETCHES,
        QUERY_INFO,
        LATENCY,
        SLOW_CALLS,
        WINDOW_QUANTILE,
        WINDOW_SAMPLES,
        SOURCE,
        INTERVAL_SAMPLES,
        LOG_STATUS,
        LOG_SAMPLE_RATE,
        LOG_MIN_DURATION_STATEMENT,
        LOG_MIN_DURATION_SAMPLE,
        LOG_RECORDS,
        LOG_SAMPLES,
        LOG_BYTES,
        LOG_LOST,
    ];
    describe_all(&counters.chain(others).collect::<Vec<_>>())
}
