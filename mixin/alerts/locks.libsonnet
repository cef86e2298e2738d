{
  ruleFiles+:: {
    'locks.yml'+: { groups+: [
      {
        name: 'pgkpi-locks',
        rules: [
          {
            alert: 'PostgresLockWaits',
            expr: |||
              pg_lock_oldest_wait_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:lock_wait_max_seconds
              and on (instance, target) pg_blocking_blocked_sessions{%(pgkpiSelector)s} > 0
            ||| % $._config,
            'for': '15s',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Sessions on {{ $labels.target }} are stuck waiting on locks',
              description: "The oldest lock wait on {{ $labels.target }} is {{ $value | humanizeDuration }}. See pg_blocking_root_info for the root blocker and pgkpi's /debug/locks for the tree.",
            },
          },
          {
            alert: 'PostgresDeadlocks',
            expr: |||
              increase(pg_stat_database_deadlocks_total{%(pgkpiSelector)s}[10m]) > 0
            ||| % $._config,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Deadlocks in {{ $labels.datname }} on {{ $labels.target }}',
              description: '{{ $value | humanize }} deadlocks in the last 10 minutes in {{ $labels.datname }}; each cancelled a transaction. The server log has both statements.',
            },
          },
          {
            alert: 'PostgresLongTransaction',
            expr: |||
              pg_oldest_transaction_age_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:long_transaction_max_seconds
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A transaction on {{ $labels.target }} has been open for {{ $value | humanizeDuration }}',
              description: 'Long transactions hold back vacuum (dead rows pile up) and may hold locks.',
            },
          },
          {
            alert: 'PostgresIdleInTransaction',
            expr: |||
              pg_oldest_idle_in_transaction_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:idle_in_transaction_max_seconds
            ||| % $._config,
            'for': '2m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A session on {{ $labels.target }} is idle in transaction for {{ $value | humanizeDuration }}',
              description: 'An application opened a transaction and stopped talking; it keeps its locks and its snapshot. {{ $value | humanizeDuration }} so far.',
            },
          },
        ],
      },
    ] },
  },
}
