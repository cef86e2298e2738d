// promtool unit tests of alerts/locks.yml, rendered to alerts/tests/locks_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'locks_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../locks.yml',
      ],
      evaluation_interval: '15s',
      tests: [
        {
          name: 'lock waits page once the oldest wait passes the target while sessions are blocked',
          interval: '15s',
          input_series: [
            {
              series: 'pg_lock_oldest_wait_seconds{%s,instance="i",target="app"}' % sel,
              values: '0 15 30 45 60 75 90 105',
            },
            {
              series: 'pg_blocking_blocked_sessions{%s,instance="i",target="app"}' % sel,
              values: '0 3 3 3 3 3 3 3',
            },
            // A short wait that never reaches the target must not page.
            {
              series: 'pg_lock_oldest_wait_seconds{%s,instance="i",target="calm"}' % sel,
              values: '5x7',
            },
            {
              series: 'pg_blocking_blocked_sessions{%s,instance="i",target="calm"}' % sel,
              values: '1x7',
            },
          ],
          alert_rule_test: [
            { eval_time: '30s', alertname: 'PostgresLockWaits', exp_alerts: [] },
            {
              eval_time: '60s',
              alertname: 'PostgresLockWaits',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'Sessions on app are stuck waiting on locks',
                    description: "The oldest lock wait on app is 1m 0s. See pg_blocking_root_info for the root blocker and pgkpi's /debug/locks for the tree.",
                    runbook_url: $._config.runbookURLPattern % 'postgreslockwaits',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'deadlocks, long and idle transactions',
          interval: '1m',
          input_series: [
            {
              series: 'pg_stat_database_deadlocks_total{%s,instance="i",target="app",datname="app"}' % sel,
              values: '0 0 0 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2',
            },
            {
              series: 'pg_stat_database_deadlocks_total{%s,instance="i",target="app",datname="quiet"}' % sel,
              values: '7x20',
            },
            {
              series: 'pg_oldest_transaction_age_seconds{%s,instance="i",target="app"}' % sel,
              values: '0 60 120 180 240 300 360 420 480 540 600 660 720',
            },
            {
              series: 'pg_oldest_idle_in_transaction_seconds{%s,instance="i",target="app"}' % sel,
              values: '0 0 70 130 190 250 310',
            },
          ],
          alert_rule_test: [
            { eval_time: '2m', alertname: 'PostgresDeadlocks', exp_alerts: [] },
            {
              eval_time: '5m',
              alertname: 'PostgresDeadlocks',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app', datname: 'app' },
                  exp_annotations: {
                    summary: 'Deadlocks in app on app',
                    description: '2 deadlocks in the last 10 minutes in app; each cancelled a transaction. The server log has both statements.',
                    runbook_url: $._config.runbookURLPattern % 'postgresdeadlocks',
                  },
                },
              ],
            },
            { eval_time: '8m', alertname: 'PostgresLongTransaction', exp_alerts: [] },
            {
              eval_time: '12m',
              alertname: 'PostgresLongTransaction',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'A transaction on app has been open for 12m 0s',
                    description: 'Long transactions hold back vacuum (dead rows pile up) and may hold locks.',
                    runbook_url: $._config.runbookURLPattern % 'postgreslongtransaction',
                  },
                },
              ],
            },
            { eval_time: '3m', alertname: 'PostgresIdleInTransaction', exp_alerts: [] },
            {
              eval_time: '5m',
              alertname: 'PostgresIdleInTransaction',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'A session on app is idle in transaction for 4m 10s',
                    description: 'An application opened a transaction and stopped talking; it keeps its locks and its snapshot. 4m 10s so far.',
                    runbook_url: $._config.runbookURLPattern % 'postgresidleintransaction',
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
