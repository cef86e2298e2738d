{
  ruleFiles+:: {
    'vacuum.yml'+: { groups+: [
      {
        name: 'pgkpi-vacuum',
        rules: [
          {
            alert: 'PostgresTxidWraparound',
            expr: |||
              max by (%(aggregationLabels)s, target, datname) ({%(pgkpiSelector)s, __name__=~"pg_database_(xid|mxid)_wraparound_ratio"})
              > on () group_left () pgkpi_kpi:xid_wraparound_ratio_max
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.datname }} on {{ $labels.target }} used {{ $value | humanizePercentage }} of its transaction IDs',
              description: 'At 100% the server refuses writes to prevent wraparound. Find what blocks freezing (long transactions, prepared transactions, stale replication slots) and VACUUM (FREEZE) the oldest tables.',
            },
          },
          {
            alert: 'PostgresAutovacuumSaturated',
            expr: |||
              pg_autovacuum_workers_running{%(pgkpiSelector)s} >= pg_autovacuum_workers_max{%(pgkpiSelector)s} and pg_autovacuum_enabled{%(pgkpiSelector)s} == 1
            ||| % $._config,
            'for': '1h',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'All autovacuum workers on {{ $labels.target }} busy for an hour',
              description: 'Every autovacuum worker has been busy for an hour: vacuum is not keeping up. Raise autovacuum_max_workers or the cost limit, or tune the busiest tables.',
            },
          },
          {
            alert: 'PostgresDeadRowsHigh',
            expr: |||
              pg_table_dead_rows_ratio{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:dead_rows_ratio_max
              and on (instance, target, schemaname, relname) pg_table_dead_rows{%(pgkpiSelector)s} > 10000
            ||| % $._config,
            'for': '1h',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.schemaname }}.{{ $labels.relname }} on {{ $labels.target }} is {{ $value | humanizePercentage }} dead rows',
              description: 'Autovacuum is not keeping up with this table for an hour: scans read dead rows and the table bloats. Check pg_table_since_last_vacuum_seconds and long transactions.',
            },
          },
        ],
      },
    ] },
  },
}
