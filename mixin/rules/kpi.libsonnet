// KPI targets and the recording rules the dashboards and alerts share (alerts/kpi.yml).
//
// Targets live in _config.kpi, once: each becomes a constant series pgkpi_kpi:<key>, and every
// alert compares against it with `on() group_left()`. A team that wants a p95 target of 50 ms
// sets _config.kpi.statement_p95_target_seconds; the dashboards draw the same number as
// their threshold lines.
local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'kpi.yml'+: { groups+: [
      {
        name: 'pgkpi-kpi-targets',
        rules: [
          { record: 'pgkpi_kpi:' + key, expr: 'vector(%s)' % text.number($._config.kpi[key]) }
          for key in std.objectFields($._config.kpi)
        ],
      },
      {
        name: 'pgkpi-kpi-recording',
        rules: [
          // Cache hit ratio per database over 30 minutes; "> -1" drops the NaN of an idle database.
          {
            record: 'target_datname:pg_cache_hit_ratio:rate30m',
            expr: |||
              sum by (%(aggregationLabels)s, target, datname) (rate(pg_stat_database_blks_hit_total{%(pgkpiSelector)s}[30m]))
              /
              (
                sum by (%(aggregationLabels)s, target, datname) (rate(pg_stat_database_blks_hit_total{%(pgkpiSelector)s}[30m]))
                + sum by (%(aggregationLabels)s, target, datname) (rate(pg_stat_database_blks_read_total{%(pgkpiSelector)s}[30m]))
              ) > -1
            ||| % $._config,
          },
          // Statement latency percentiles per workload, from pgkpi's histogram.
          {
            record: 'target_datname_workload:pg_statement_latency_seconds:p95_rate5m',
            expr: |||
              histogram_quantile(0.95,
                sum by (%(aggregationLabels)s, target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{%(pgkpiSelector)s}[5m])))
            ||| % $._config,
          },
          // The p95 the latency alert compares with the target: the exact p95 of the durations
          // the server logged in pgkpi's window when the log source shapes the workload
          // (measured), else the histogram's (estimated from pg_stat_statements, interpolated).
          {
            record: 'target_datname_workload:pg_statement_latency_seconds:p95',
            expr: |||
              max without (quantile) (pg_statement_latency_window_seconds{%(pgkpiSelector)s, quantile="0.95"})
                and on (instance, job, target, datname, workload) (pg_statement_latency_source{%(pgkpiSelector)s, source="log"} == 1)
              or on (instance, job, target, datname, workload)
              target_datname_workload:pg_statement_latency_seconds:p95_rate5m
            ||| % $._config,
          },
          {
            record: 'target_datname_workload:pg_statement_latency_seconds:p99_rate5m',
            expr: |||
              histogram_quantile(0.99,
                sum by (%(aggregationLabels)s, target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{%(pgkpiSelector)s}[5m])))
            ||| % $._config,
          },
          // Statements per second (QPS), to read next to lock-wait seconds per second.
          {
            record: 'target_datname:pg_statement_calls:rate5m',
            expr: |||
              sum by (%(aggregationLabels)s, target, datname) (rate(pg_stat_statements_all_calls_total{%(pgkpiSelector)s}[5m]))
            ||| % $._config,
          },
          {
            record: 'target_datname:pg_lock_wait_seconds:rate5m',
            expr: |||
              sum by (%(aggregationLabels)s, target, datname) (rate(pg_lock_wait_seconds_total{%(pgkpiSelector)s}[5m]))
            ||| % $._config,
          },
          // Seconds to empty the ready backlog at the current processing rate ("tiempo de vaciado").
          {
            record: 'app_queue:drain_seconds',
            expr: |||
              sum without (state) (app_queue_depth{%(pgkpiSelector)s, state="ready"})
              / clamp_min(rate(app_queue_processed_total{%(pgkpiSelector)s}[5m]), 1e-9)
            ||| % $._config,
          },
          // Share of pgBouncer transaction time spent waiting for a server, per database.
          {
            record: 'target_database:pgbouncer_client_wait:ratio_rate5m',
            expr: |||
              rate(pgbouncer_client_wait_seconds_total{%(pgkpiSelector)s}[5m])
              / clamp_min(rate(pgbouncer_transaction_seconds_total{%(pgkpiSelector)s}[5m]), 1e-9)
            ||| % $._config,
          },
          // Server connections of a pool in use over what the pool may open.
          {
            record: 'target_database_user:pgbouncer_pool_servers_active:ratio',
            expr: |||
              max without (state) (pgbouncer_pool_server_connections{%(pgkpiSelector)s, state="active"})
              / on (instance, job, target, database) group_left ()
              clamp_min(pgbouncer_database_pool_size{%(pgkpiSelector)s}, 1)
            ||| % $._config,
          },
          // Usable connection slots in use.
          {
            record: 'target:pg_connections_used:ratio',
            expr: |||
              pg_connections_used{%(pgkpiSelector)s} / clamp_min(pg_connections_max{%(pgkpiSelector)s} - pg_connections_superuser_reserved{%(pgkpiSelector)s}, 1)
            ||| % $._config,
          },
        ],
      },
    ] },
  },
}
