// promtool unit tests of alerts/exporter.yml, rendered to alerts/tests/exporter_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'exporter_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../exporter.yml',
      ],
      evaluation_interval: '15s',
      tests: [
        {
          name: 'exporter and target down fire after their for-duration; healthy ones do not',
          interval: '15s',
          input_series: [
            { series: 'up{%s,instance="pgkpi:9188"}' % sel, values: '1 1 0x12' },
            { series: 'up{%s,instance="healthy:9188"}' % sel, values: '1x14' },
            { series: 'pg_up{%s,instance="pgkpi:9188",target="app"}' % sel, values: '1 0x12' },
            { series: 'pg_up{%s,instance="pgkpi:9188",target="other"}' % sel, values: '1x14' },
            // A pooler that is down is PgbouncerTargetDown's, not this alert's.
            { series: 'pg_up{%s,instance="pgkpi:9188",target="pooler"}' % sel, values: '0x14' },
            {
              series: 'pgkpi_target_info{%s,instance="pgkpi:9188",target="pooler",kind="pgbouncer"}' % sel,
              values: '1x14',
            },
          ],
          alert_rule_test: [
            { eval_time: '1m', alertname: 'PgkpiExporterDown', exp_alerts: [] },
            {
              eval_time: '3m',
              alertname: 'PgkpiExporterDown',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'pgkpi:9188' },
                  exp_annotations: {
                    summary: 'pgkpi on pgkpi:9188 cannot be scraped',
                    description: 'Prometheus has failed to scrape pgkpi at pgkpi:9188 for 2 minutes: every PostgreSQL KPI from it is blind.',
                    runbook_url: $._config.runbookURLPattern % 'pgkpiexporterdown',
                  },
                },
              ],
            },
            { eval_time: '30s', alertname: 'PostgresTargetDown', exp_alerts: [] },
            {
              eval_time: '2m',
              alertname: 'PostgresTargetDown',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'pgkpi:9188', target: 'app' },
                  exp_annotations: {
                    summary: 'PostgreSQL target app is unreachable',
                    description: "pgkpi (pgkpi:9188) has had no working session to app for 1 minute; see pgkpi's / page or /readyz for the connection error.",
                    runbook_url: $._config.runbookURLPattern % 'postgrestargetdown',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'a failing collector alerts only while its target is up',
          interval: '1m',
          input_series: [
            {
              series: 'pgkpi_collector_up{%s,instance="i",target="app",collector="wal"}' % sel,
              values: '0x20',
            },
            {
              series: 'pgkpi_collector_up{%s,instance="i",target="down",collector="wal"}' % sel,
              values: '0x20',
            },
            { series: 'pg_up{%s,instance="i",target="app"}' % sel, values: '1x20' },
            { series: 'pg_up{%s,instance="i",target="down"}' % sel, values: '0x20' },
          ],
          alert_rule_test: [
            { eval_time: '5m', alertname: 'PgkpiCollectorFailing', exp_alerts: [] },
            {
              eval_time: '15m',
              alertname: 'PgkpiCollectorFailing',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app', collector: 'wal' },
                  exp_annotations: {
                    summary: 'pgkpi collector wal fails on app',
                    description: "Collector wal has failed for 10 minutes while the target is up; its metrics are stale or missing. pgkpi's / page shows the error.",
                    runbook_url: $._config.runbookURLPattern % 'pgkpicollectorfailing',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'a rejected reload alerts after 5 minutes; a fixed one clears',
          interval: '1m',
          input_series: [
            { series: 'pgkpi_config_last_reload_successful{%s,instance="bad:9188"}' % sel, values: '1 1 0x8' },
            { series: 'pgkpi_config_last_reload_successful{%s,instance="good:9188"}' % sel, values: '1x10' },
            { series: 'pgkpi_config_last_reload_successful{%s,instance="fixed:9188"}' % sel, values: '0x3 1x6' },
          ],
          alert_rule_test: [
            { eval_time: '4m', alertname: 'PgkpiConfigReloadFailed', exp_alerts: [] },
            {
              eval_time: '8m',
              alertname: 'PgkpiConfigReloadFailed',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'bad:9188' },
                  exp_annotations: {
                    summary: 'pgkpi on bad:9188 rejected its new configuration',
                    description: 'The last reload (SIGHUP, POST /-/reload or a change in targets_directory) of pgkpi at bad:9188 failed 5 minutes ago or more; it still runs the previous configuration, so recent target changes are not applied. Its log says why.',
                    runbook_url: $._config.runbookURLPattern % 'pgkpiconfigreloadfailed',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'shards that miss a target alert; a complete set does not',
          interval: '1m',
          input_series: [
            // Three shards of 60 targets; shard 2 stops reporting after 5 minutes.
            { series: 'pgkpi_targets_configured{%s,instance="pgkpi-0"}' % sel, values: '60x20' },
            { series: 'pgkpi_targets_configured{%s,instance="pgkpi-1"}' % sel, values: '60x20' },
            { series: 'pgkpi_targets_configured{%s,instance="pgkpi-2"}' % sel, values: '60x4' },
            { series: 'pgkpi_targets_polled{%s,instance="pgkpi-0"}' % sel, values: '16x20' },
            { series: 'pgkpi_targets_polled{%s,instance="pgkpi-1"}' % sel, values: '22x20' },
            { series: 'pgkpi_targets_polled{%s,instance="pgkpi-2"}' % sel, values: '22x4' },
          ],
          alert_rule_test: [
            { eval_time: '4m', alertname: 'PgkpiShardsIncomplete', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'PgkpiShardsIncomplete',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning' },
                  exp_annotations: {
                    summary: 'pgkpi shards of %s do not cover the targets exactly once' % labels.job,
                    description: 'The exporters of %s poll 38 targets together, not the number in their configuration: a shard is missing or down, two exporters have the same --shard, or their configurations or --total-shards differ.' % labels.job,
                    runbook_url: $._config.runbookURLPattern % 'pgkpishardsincomplete',
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
