// promtool unit tests of alerts/relations.yml, rendered to alerts/tests/relations_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'relations_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../relations.yml',
      ],
      evaluation_interval: '5m',
      tests: [
        {
          name: 'partitions running out, rows in DEFAULT, invalid indexes',
          interval: '5m',
          input_series: [
            // 5 days of coverage left and falling: below the 7-day target.
            {
              series: 'pg_partitioned_table_coverage_seconds{%s,instance="i",target="app",schemaname="core",relname="analytics_events",parent="",strategy="range"}' % sel,
              values: '432000-300x20',
            },
            // 40 days ahead: fine.
            {
              series: 'pg_partitioned_table_coverage_seconds{%s,instance="i",target="app",schemaname="core",relname="listing_views",parent="",strategy="range"}' % sel,
              values: '3456000-300x20',
            },
            {
              series: 'pg_partitioned_table_default_rows{%s,instance="i",target="app",schemaname="core",relname="analytics_events",parent="",strategy="range"}' % sel,
              values: '0 0 25x20',
            },
            {
              series: 'pg_partitioned_table_default_rows{%s,instance="i",target="app",schemaname="core",relname="listing_views",parent="",strategy="range"}' % sel,
              values: '0x20',
            },
            {
              series: 'pg_index_invalid_indexes{%s,instance="i",target="app"}' % sel,
              values: '0 1x20',
            },
            {
              series: 'pg_index_invalid_indexes{%s,instance="i",target="clean"}' % sel,
              values: '0x20',
            },
          ],
          alert_rule_test: [
            { eval_time: '20m', alertname: 'PostgresPartitionCoverageLow', exp_alerts: [] },
            {
              eval_time: '40m',
              alertname: 'PostgresPartitionCoverageLow',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    schemaname: 'core',
                    relname: 'analytics_events',
                    strategy: 'range',
                  },
                  exp_annotations: {
                    summary: 'core.analytics_events on app has partitions for only 4d 23h 20m 0s ahead',
                    description: "When the newest partition's upper bound passes, new rows land in the DEFAULT partition (or fail without one). Run the partition maintenance job (core.create_future_partitions).",
                    runbook_url: $._config.runbookURLPattern % 'postgrespartitioncoveragelow',
                  },
                },
              ],
            },
            { eval_time: '20m', alertname: 'PostgresDefaultPartitionRows', exp_alerts: [] },
            {
              eval_time: '45m',
              alertname: 'PostgresDefaultPartitionRows',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    schemaname: 'core',
                    relname: 'analytics_events',
                    strategy: 'range',
                  },
                  exp_annotations: {
                    summary: '25 rows in the DEFAULT partition of core.analytics_events on app',
                    description: "Rows outside every partition's range pile up in DEFAULT: retention by dropping partitions misses them and creating the matching partition later must move them.",
                    runbook_url: $._config.runbookURLPattern % 'postgresdefaultpartitionrows',
                  },
                },
              ],
            },
            { eval_time: '10m', alertname: 'PostgresInvalidIndex', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'PostgresInvalidIndex',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'Invalid indexes on app: 1',
                    description: 'An index left invalid (typically a failed CREATE INDEX CONCURRENTLY) is maintained on every write but never used by queries. pg_index_invalid lists them.',
                    runbook_url: $._config.runbookURLPattern % 'postgresinvalidindex',
                  },
                },
              ],
            },
          ],
        },
      ],
    },
  },
}
