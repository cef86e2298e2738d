local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'database.yml'+: { groups+: [
      {
        name: 'pgkpi-database',
        rules: [
          {
            alert: 'PostgresConnectionsNearMax',
            expr: |||
              target:pg_connections_used:ratio > on () group_left () pgkpi_kpi:connections_used_ratio_max
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.target }} uses {{ $value | humanizePercentage }} of its connection slots',
              description: 'New connections will soon be refused (max_connections minus superuser_reserved_connections). Look at pg_stat_activity_sessions by application and state; a pooler (pgBouncer) is the usual fix.',
            },
          },
          {
            alert: 'PostgresCacheHitRatioLow',
            expr: |||
              target_datname:pg_cache_hit_ratio:rate30m < on () group_left () pgkpi_kpi:cache_hit_ratio_min
              and on (instance, target, datname)
              sum by (%(aggregationLabels)s, target, datname) (rate(pg_stat_database_blks_read_total{%(pgkpiSelector)s}[30m])) > 10
            ||| % $._config,
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Cache hit ratio of {{ $labels.datname }} on {{ $labels.target }} is {{ $value | humanizePercentage }}',
              description: 'Below the %s target for 30 minutes while reading from disk: the working set no longer fits shared_buffers, or queries scan more than they should (check sequential scans).' % text.percent($._config.kpi.cache_hit_ratio_min),
            },
          },
          {
            alert: 'PostgresStatementLatencyHigh',
            expr: |||
              target_datname_workload:pg_statement_latency_seconds:p95{workload!="pgkpi"}
              > on () group_left () pgkpi_kpi:statement_p95_target_seconds
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'p95 statement latency of {{ $labels.workload }} in {{ $labels.datname }} is {{ $value | humanizeDuration }}',
              description: "The {{ $labels.workload }} workload's p95 execution time has been above the KPI target for 10 minutes ({{ with printf `pg_statement_latency_source{target=\"%s\",datname=\"%s\",workload=\"%s\",source=\"log\"} == 1` $labels.target $labels.datname $labels.workload | query }}measured: the exact p95 of the durations the server logged in the last window{{ else }}from the histogram, estimated from pg_stat_statements{{ end }}). Check pg_stat_statements_exec_seconds_total for the statements behind it.",
            },
          },
          {
            alert: 'PostgresStatementsDeallocated',
            expr: |||
              increase(pg_stat_statements_dealloc_total{%(pgkpiSelector)s}[1h]) > 0
            ||| % $._config,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'pg_stat_statements on {{ $labels.target }} evicts entries',
              description: "{{ $value | humanize }} entries evicted in the last hour (fill {{ with printf \"pg_stat_statements_fill_ratio{target='%s'}\" $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}): latency statistics of evicted statements are lost. Raise pg_stat_statements.max.",
            },
          },
        ],
      },
    ] },
  },
}
