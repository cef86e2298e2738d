local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'replication.yml'+: { groups+: [
      {
        name: 'pgkpi-replication',
        rules: [
          {
            alert: 'PostgresReplicationLag',
            expr: |||
              (pg_replication_replay_lag_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:replication_lag_max_seconds)
              or
              (pg_standby_replay_lag_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:replication_lag_max_seconds)
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Replication to {{ if $labels.application_name }}{{ $labels.application_name }}{{ else }}{{ $labels.target }}{{ end }} lags {{ $value | humanizeDuration }}',
              description: "Reads on the standby are {{ $value | humanizeDuration }} stale and a failover would lose that much. Check the standby's I/O and network, and long queries on it.",
            },
          },
          {
            alert: 'PostgresReplicationSlotInactive',
            expr: |||
              pg_replication_slot_active{%(pgkpiSelector)s} == 0
              and on (instance, target, slot_name)
              pg_replication_slot_retained_wal_bytes{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:slot_retained_wal_max_bytes
            ||| % $._config,
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Inactive slot {{ $labels.slot_name }} on {{ $labels.target }} retains WAL',
              description: "No consumer for 30 minutes while the slot keeps WAL on disk; the primary's disk fills until the slot is dropped or its consumer returns.",
            },
          },
          {
            alert: 'PostgresWalArchivingFailing',
            expr: |||
              increase(pg_stat_archiver_failed_total{%(pgkpiSelector)s}[15m]) > 0
            ||| % $._config,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'WAL archiving fails on {{ $labels.target }}',
              description: '{{ $value | humanize }} failed archive attempts in 15 minutes. Backups and point-in-time recovery stop at the last archived file, and pg_wal grows until archiving works again.',
            },
          },
          {
            alert: 'PostgresWalArchiveStale',
            expr: |||
              pg_stat_archiver_since_last_archived_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:archive_age_max_seconds
              and on (instance, target) pg_archive_mode_enabled{%(pgkpiSelector)s} == 1
              and on (instance, target) rate(pg_wal_position_bytes{%(pgkpiSelector)s}[30m]) > 0
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No WAL archived on {{ $labels.target }} for {{ $value | humanizeDuration }}',
              description: 'WAL is being written but nothing was archived for over %s: the backup chain is falling behind.' % text.duration($._config.kpi.archive_age_max_seconds),
            },
          },
        ],
      },
    ] },
  },
}
