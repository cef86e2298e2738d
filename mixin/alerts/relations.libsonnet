{
  ruleFiles+:: {
    'relations.yml'+: { groups+: [
      {
        name: 'pgkpi-relations',
        rules: [
          {
            alert: 'PostgresPartitionCoverageLow',
            expr: |||
              pg_partitioned_table_coverage_seconds{%(pgkpiSelector)s, strategy="range"}
              < on () group_left () pgkpi_kpi:partition_coverage_min_seconds
            ||| % $._config,
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.schemaname }}.{{ $labels.relname }} on {{ $labels.target }} has partitions for only {{ $value | humanizeDuration }} ahead',
              description: "When the newest partition's upper bound passes, new rows land in the DEFAULT partition (or fail without one). Run the partition maintenance job (core.create_future_partitions).",
            },
          },
          {
            alert: 'PostgresDefaultPartitionRows',
            expr: |||
              pg_partitioned_table_default_rows{%(pgkpiSelector)s} > 0
            ||| % $._config,
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $value }} rows in the DEFAULT partition of {{ $labels.schemaname }}.{{ $labels.relname }} on {{ $labels.target }}',
              description: "Rows outside every partition's range pile up in DEFAULT: retention by dropping partitions misses them and creating the matching partition later must move them.",
            },
          },
          {
            alert: 'PostgresInvalidIndex',
            expr: |||
              pg_index_invalid_indexes{%(pgkpiSelector)s} > 0
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Invalid indexes on {{ $labels.target }}: {{ $value }}',
              description: 'An index left invalid (typically a failed CREATE INDEX CONCURRENTLY) is maintained on every write but never used by queries. pg_index_invalid lists them.',
            },
          },
        ],
      },
    ] },
  },
}
