{
  ruleFiles+:: {
    'exporter.yml'+: { groups+: [
      {
        name: 'pgkpi-exporter',
        rules: [
          {
            alert: 'PgkpiExporterDown',
            expr: |||
              up{%(pgkpiSelector)s} == 0
            ||| % $._config,
            'for': '2m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'pgkpi on {{ $labels.instance }} cannot be scraped',
              description: 'Prometheus has failed to scrape pgkpi at {{ $labels.instance }} for 2 minutes: every PostgreSQL KPI from it is blind.',
            },
          },
          {
            alert: 'PostgresTargetDown',
            expr: |||
              pg_up{%(pgkpiSelector)s} == 0 unless on (instance, target) pgkpi_target_info{%(pgkpiSelector)s, kind="pgbouncer"}
            ||| % $._config,
            'for': '1m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'PostgreSQL target {{ $labels.target }} is unreachable',
              description: "pgkpi ({{ $labels.instance }}) has had no working session to {{ $labels.target }} for 1 minute; see pgkpi's / page or /readyz for the connection error.",
            },
          },
          {
            alert: 'PgkpiCollectorFailing',
            expr: |||
              pgkpi_collector_up{%(pgkpiSelector)s} == 0 and on (instance, target) pg_up{%(pgkpiSelector)s} == 1
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'pgkpi collector {{ $labels.collector }} fails on {{ $labels.target }}',
              description: "Collector {{ $labels.collector }} has failed for 10 minutes while the target is up; its metrics are stale or missing. pgkpi's / page shows the error.",
            },
          },
        ],
      },
    ] },
  },
}
