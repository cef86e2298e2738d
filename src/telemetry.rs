//! The exporter's own metrics: target reachability, collector health, build and process.
//!
//! These live in a `prometheus` crate registry and are encoded at scrape time; that reads only
//! memory (and /proc for process metrics), never the database.

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Handles to every self-metric. Cheap to clone (the vectors are reference counted).
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    pub pg_up: GaugeVec,
    pub target_info: GaugeVec,
    pub connection_attempts: IntCounterVec,
    pub connection_errors: IntCounterVec,
    pub connection_attempts_overdue: GaugeVec,
    pub collector_up: GaugeVec,
    pub collector_stale: GaugeVec,
    pub collector_skipped: GaugeVec,
    pub collector_dropped: GaugeVec,
    pub collector_duration: GaugeVec,
    pub collector_busy: CounterVec,
    pub collector_last_success: GaugeVec,
    pub collector_runs: IntCounterVec,
    pub collector_errors: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_accept_errors: IntCounter,
    pub http_connections_rejected: IntCounterVec,
    pub http_connections_open: IntGauge,
    pub http_connections_limit: IntGauge,
    pub snapshot_bytes: Gauge,
    pub config_reload_successful: Gauge,
    pub config_reload_success_timestamp: Gauge,
    pub shard_info: GaugeVec,
    pub targets_configured: IntGauge,
    pub targets_polled: IntGauge,
    pub databases: IntGaugeVec,
    pub database_up: GaugeVec,
    pub connection_budget: IntGaugeVec,
    pub database_sessions: IntGaugeVec,
    pub database_turn_wait: CounterVec,
    pub discoveries: IntCounterVec,
    pub discovery_errors: IntCounterVec,
    pub probe_targets: IntGauge,
}

/// Registers a metric of the exporter's own; names and labels are constants, so a failure is
/// a bug caught by the first test run.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, GaugeVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let tc = &["target", "collector"];
        let telemetry = Telemetry {
            pg_up: gauge("pg_up", "1 when pgkpi holds a working session to the target, 0 when it cannot connect or the session broke.", &["target"]),
            target_info: gauge("pgkpi_target_info", "Always 1; what the target is (kind: postgres, pgbouncer) as a label, to tell a pooler's pg_up from a database's.", &["target", "kind"]),
            connection_attempts: counter("pgkpi_target_connection_attempts_total", "Connection attempts to the target, successful or not.", &["target"]),
            connection_errors: counter("pgkpi_target_connection_errors_total", "Connection attempts to the target that failed; an attempt that outlives its timeout counts when it does.", &["target"]),
            connection_attempts_overdue: gauge("pgkpi_target_connection_attempts_overdue", "Connection attempts to the target past their timeout that pgkpi still waits on instead of starting another (their backend is on the server, e.g. waiting for a lock); at most one per connection of the target.", &["target"]),
            collector_up: gauge("pgkpi_collector_up", "1 when the collector's last run succeeded, 0 when it failed or the target is down.", tc),
            collector_stale: gauge("pgkpi_collector_stale", "1 while the collector's values shown are from an earlier successful run because later runs failed.", tc),
            collector_skipped: gauge("pgkpi_collector_skipped", "1 when the collector does not run on this target by design (reason: extension_missing, version, permission, standby, primary, ...); see the log line or / for what to do.", &["target", "collector", "reason"]),
            collector_dropped: gauge("pgkpi_collector_dropped_series", "Rows (series) the collector's last run left out because of its cardinality cap (max_series / top N).", tc),
            collector_duration: gauge("pgkpi_collector_last_duration_seconds", "Wall time of the collector's last run, including database time.", tc),
            collector_busy: register(&registry, CounterVec::new(Opts::new("pgkpi_collector_duration_seconds_total", "Wall time of all the collector's runs, their statements' round trips on the session included: rate() is the share of a database session the collector takes, and rate() * 60 its database time per minute (an upper bound)."), tc)),
            collector_last_success: gauge("pgkpi_collector_last_success_timestamp_seconds", "Unix time of the collector's last successful run.", tc),
            collector_runs: counter("pgkpi_collector_runs_total", "Completed runs of the collector, successful or not; counted once the run's outcome is published.", tc),
            collector_errors: counter("pgkpi_collector_errors_total", "Runs of the collector that failed (error, timeout or target down).", tc),
            http_requests: counter("pgkpi_http_requests_total", "HTTP requests served, by path and status code.", &["path", "code"]),
            http_accept_errors: register(&registry, IntCounter::new("pgkpi_http_accept_errors_total", "Failed accepts of HTTP connections (e.g. out of file descriptors); the server backs off and logs at most once per second.")),
            http_connections_rejected: counter("pgkpi_http_connections_rejected_total", "HTTP connections the server's limits refused or closed while no request was in progress, by reason: limit (refused, at web.max_connections with every connection busy), evicted (the longest idle or slowest connection closed to make room for a new one), timeout (TLS handshake or first request's headers not complete within web.header_read_timeout; an idle keep-alive connection closed between requests is not counted).", &["reason"]),
            http_connections_open: register(&registry, IntGauge::new("pgkpi_http_connections_open", "HTTP connections open now.")),
            http_connections_limit: register(&registry, IntGauge::new("pgkpi_http_connections_limit", "Most HTTP connections open at once (web.max_connections, clamped below the open-file limit).")),
            snapshot_bytes: {
                let g = Gauge::new("pgkpi_snapshot_bytes", "Size of the encoded snapshot of database metrics served on the metrics path.").expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            config_reload_successful: {
                let g = Gauge::new("pgkpi_config_last_reload_successful", "1 when the last configuration load (start, SIGHUP, POST /-/reload or a change in targets_directory) succeeded, 0 when it was rejected and the previous configuration keeps running.").expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            config_reload_success_timestamp: {
                let g = Gauge::new("pgkpi_config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration load.").expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            shard_info: gauge("pgkpi_shard_info", "Always 1; this exporter's shard (0-based) and the number of shards (--shard, --total-shards) as labels. count by (total_shards) (pgkpi_shard_info) should equal total_shards.", &["shard", "total_shards"]),
            targets_configured: register(&registry, IntGauge::new("pgkpi_targets_configured", "Targets in the configuration, before sharding.")),
            targets_polled: register(&registry, IntGauge::new("pgkpi_targets_polled", "Targets this exporter polls: those of its shard. Summed over a sharded set it equals pgkpi_targets_configured.")),
            databases: register(&registry, IntGaugeVec::new(Opts::new("pgkpi_databases", "Databases of a server target ([targets.databases]) polled now: discovered, matching the filter, within max_databases."), &["target"])),
            database_up: gauge("pgkpi_database_up", "1 when the last turn of a database of a server target connected, 0 when it could not (the error is logged and on /).", &["target", "datname"]),
            connection_budget: register(&registry, IntGaugeVec::new(Opts::new("pgkpi_target_connections_max", "Most connections pgkpi holds to a server target at once (databases.max_connections), its main and sampler connections included."), &["target"])),
            database_sessions: register(&registry, IntGaugeVec::new(Opts::new("pgkpi_target_database_connections", "Connections to a server target's databases open now for their turns; at most max_connections minus the main and sampler connections."), &["target"])),
            database_turn_wait: register(&registry, CounterVec::new(Opts::new("pgkpi_target_database_turn_wait_seconds_total", "Time the databases of a server target waited for a free connection, summed: its rate is the average number of databases waiting; a high one says the connection budget is too small for the intervals."), &["target"])),
            discoveries: counter("pgkpi_target_database_discoveries_total", "Reads of the list of databases of a server target, successful or not.", &["target"]),
            discovery_errors: counter("pgkpi_target_database_discovery_errors_total", "Reads of the list of databases of a server target that failed; the previous list is kept.", &["target"]),
            probe_targets: register(&registry, IntGauge::new("pgkpi_probe_targets", "Targets polled because /probe named them (served on /probe, not on the metrics path); each is dropped after probe.expire_after without a probe.")),
            registry,
        };
        let build = GaugeVec::new(
            Opts::new(
                "pgkpi_build_info",
                "Always 1; the pgkpi version as a label.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        telemetry
            .registry
            .register(Box::new(build))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        telemetry
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        telemetry
    }

    /// Removes every series of a target that stopped (removed by a reload, or changed and
    /// restarted), so that it disappears from the scrape instead of freezing at its last
    /// values. `reasons` are the skip reasons (label values) a collector may have exported.
    pub fn forget_target(&self, target: &str, kind: &str, collectors: &[String], reasons: &[&str]) {
        let _ = self.pg_up.remove_label_values(&[target]);
        let _ = self.target_info.remove_label_values(&[target, kind]);
        for v in [&self.connection_attempts, &self.connection_errors] {
            let _ = v.remove_label_values(&[target]);
        }
        let _ = self
            .connection_attempts_overdue
            .remove_label_values(&[target]);
        for collector in collectors {
            let labels = [target, collector.as_str()];
            for v in [
                &self.collector_up,
                &self.collector_stale,
                &self.collector_dropped,
                &self.collector_duration,
                &self.collector_last_success,
            ] {
                let _ = v.remove_label_values(&labels);
            }
            let _ = self.collector_busy.remove_label_values(&labels);
            for v in [&self.collector_runs, &self.collector_errors] {
                let _ = v.remove_label_values(&labels);
            }
            for reason in reasons {
                let _ = self
                    .collector_skipped
                    .remove_label_values(&[target, collector, reason]);
            }
        }
    }

    /// Encodes every self-metric in the text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        // Only fails on an empty family, which `gather` never returns.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Name, type, help and label names of every self-metric, for the metric reference.
    pub fn describe() -> Vec<crate::metric::FamilyDesc> {
        let t = Telemetry::new();
        // Touch every labelled metric once so that `gather` returns it with its label names.
        t.pg_up.with_label_values(&["t"]);
        t.target_info.with_label_values(&["t", "k"]);
        t.connection_attempts_overdue.with_label_values(&["t"]);
        for v in [
            &t.collector_up,
            &t.collector_stale,
            &t.collector_duration,
            &t.collector_last_success,
        ] {
            v.with_label_values(&["t", "c"]);
        }
        for v in [&t.collector_runs, &t.collector_errors] {
            v.with_label_values(&["t", "c"]);
        }
        t.collector_busy.with_label_values(&["t", "c"]);
        for v in [&t.connection_attempts, &t.connection_errors] {
            v.with_label_values(&["t"]);
        }
        t.http_requests.with_label_values(&["/", "200"]);
        t.http_connections_rejected.with_label_values(&["limit"]);
        t.collector_skipped.with_label_values(&["t", "c", "r"]);
        t.shard_info.with_label_values(&["0", "1"]);
        for v in [&t.databases, &t.connection_budget, &t.database_sessions] {
            v.with_label_values(&["t"]);
        }
        t.database_up.with_label_values(&["t", "d"]);
        t.database_turn_wait.with_label_values(&["t"]);
        for v in [&t.discoveries, &t.discovery_errors] {
            v.with_label_values(&["t"]);
        }
        t.registry
            .gather()
            .iter()
            .map(|mf| {
                use prometheus::proto::MetricType as T;
                let kind = match mf.get_field_type() {
                    T::COUNTER => crate::metric::MetricType::Counter,
                    T::GAUGE => crate::metric::MetricType::Gauge,
                    T::HISTOGRAM => crate::metric::MetricType::Histogram,
                    _ => crate::metric::MetricType::Untyped,
                };
                let labels: Vec<&str> = mf
                    .get_metric()
                    .first()
                    .map(|m| m.get_label().iter().map(|l| l.name()).collect())
                    .unwrap_or_default();
                crate::metric::FamilyDesc::new(mf.name(), kind, &labels, mf.help())
            })
            .collect()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
