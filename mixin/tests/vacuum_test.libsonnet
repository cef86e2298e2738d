// promtool unit tests of alerts/vacuum.yml, rendered to alerts/tests/vacuum_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'vacuum_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../vacuum.yml',
      ],
      evaluation_interval: '5m',
      tests: [
        {
          name: 'wraparound, saturated autovacuum and a table vacuum does not keep up with',
          interval: '5m',
          input_series: [
            {
              series: 'pg_database_xid_wraparound_ratio{%s,instance="i",target="app",datname="app"}' % sel,
              values: '0.4 0.6x20',
            },
            {
              series: 'pg_database_mxid_wraparound_ratio{%s,instance="i",target="app",datname="app"}' % sel,
              values: '0.1x20',
            },
            {
              series: 'pg_database_xid_wraparound_ratio{%s,instance="i",target="app",datname="young"}' % sel,
              values: '0.01x20',
            },
            {
              series: 'pg_database_mxid_wraparound_ratio{%s,instance="i",target="app",datname="young"}' % sel,
              values: '0.01x20',
            },
            {
              series: 'pg_autovacuum_workers_running{%s,instance="i",target="app"}' % sel,
              values: '3x20',
            },
            {
              series: 'pg_autovacuum_workers_max{%s,instance="i",target="app"}' % sel,
              values: '3x20',
            },
            { series: 'pg_autovacuum_enabled{%s,instance="i",target="app"}' % sel, values: '1x20' },
            {
              series: 'pg_table_dead_rows_ratio{%s,instance="i",target="app",schemaname="chat",relname="messages"}' % sel,
              values: '0.35x20',
            },
            {
              series: 'pg_table_dead_rows{%s,instance="i",target="app",schemaname="chat",relname="messages"}' % sel,
              values: '500000x20',
            },
            // Mostly dead but tiny: not worth a ticket.
            {
              series: 'pg_table_dead_rows_ratio{%s,instance="i",target="app",schemaname="core",relname="tiny"}' % sel,
              values: '0.9x20',
            },
            {
              series: 'pg_table_dead_rows{%s,instance="i",target="app",schemaname="core",relname="tiny"}' % sel,
              values: '90x20',
            },
          ],
          alert_rule_test: [
            { eval_time: '5m', alertname: 'PostgresTxidWraparound', exp_alerts: [] },
            {
              eval_time: '15m',
              alertname: 'PostgresTxidWraparound',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app', datname: 'app' },
                  exp_annotations: {
                    summary: 'app on app used 60% of its transaction IDs',
                    description: 'At 100% the server refuses writes to prevent wraparound. Find what blocks freezing (long transactions, prepared transactions, stale replication slots) and VACUUM (FREEZE) the oldest tables.',
                    runbook_url: $._config.runbookURLPattern % 'postgrestxidwraparound',
                  },
                },
              ],
            },
            { eval_time: '30m', alertname: 'PostgresAutovacuumSaturated', exp_alerts: [] },
            {
              eval_time: '70m',
              alertname: 'PostgresAutovacuumSaturated',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'All autovacuum workers on app busy for an hour',
                    description: 'Every autovacuum worker has been busy for an hour: vacuum is not keeping up. Raise autovacuum_max_workers or the cost limit, or tune the busiest tables.',
                    runbook_url: $._config.runbookURLPattern % 'postgresautovacuumsaturated',
                  },
                },
              ],
            },
            { eval_time: '30m', alertname: 'PostgresDeadRowsHigh', exp_alerts: [] },
            {
              eval_time: '70m',
              alertname: 'PostgresDeadRowsHigh',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    schemaname: 'chat',
                    relname: 'messages',
                  },
                  exp_annotations: {
                    summary: 'chat.messages on app is 35% dead rows',
                    description: 'Autovacuum is not keeping up with this table for an hour: scans read dead rows and the table bloats. Check pg_table_since_last_vacuum_seconds and long transactions.',
                    runbook_url: $._config.runbookURLPattern % 'postgresdeadrowshigh',
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
