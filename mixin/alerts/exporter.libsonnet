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
          {
            alert: 'PgkpiConfigReloadFailed',
            expr: 'pgkpi_config_last_reload_successful{%(pgkpiSelector)s} == 0' % $._config,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'pgkpi on {{ $labels.instance }} rejected its new configuration',
              description: 'The last reload (SIGHUP, POST /-/reload or a change in targets_directory) of pgkpi at {{ $labels.instance }} failed 5 minutes ago or more; it still runs the previous configuration, so recent target changes are not applied. Its log says why.',
            },
          },
          {
            // Per set of exporters sharing the selector's labels (a job): together they poll
            // each configured target exactly once.
            alert: 'PgkpiShardsIncomplete',
            local set = std.join(', ', std.objectFields($._config.selectorLabels)),
            expr: |||
              sum by (%(set)s) (pgkpi_targets_polled{%(sel)s})
              != max by (%(set)s) (pgkpi_targets_configured{%(sel)s})
            ||| % { set: set, sel: $._config.pgkpiSelector },
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'pgkpi shards of {{ $labels.job }} do not cover the targets exactly once',
              description: 'The exporters of {{ $labels.job }} poll {{ $value }} targets together, not the number in their configuration: a shard is missing or down, two exporters have the same --shard, or their configurations or --total-shards differ.',
            },
          },
        ],
      },
    ] },
  },
}
