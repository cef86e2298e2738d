local text = import '../lib/text.libsonnet';

// promtool unit tests of alerts/database.yml, rendered to alerts/tests/database_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  // The latency cases scale with the p95 target, so they test the rules rendered with any.
  local T = $._config.kpi.statement_p95_target_seconds,
  local num = text.number,
  // Prometheus' humanizeDuration below one second: 0.04875 -> "48.75ms".
  local ms(seconds) = '%.4gms' % (seconds * 1000),
  ruleTests+:: {
    'database_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../database.yml',
      ],
      evaluation_interval: '1m',
      tests: [
        {
          name: 'connections near the usable maximum page after 5 minutes',
          interval: '1m',
          input_series: [
            {
              series: 'pg_connections_used{%s,instance="i",target="app"}' % sel,
              values: '50 90 90 90 90 90 90 90 90',
            },
            { series: 'pg_connections_used{%s,instance="i",target="calm"}' % sel, values: '50x8' },
            { series: 'pg_connections_max{%s,instance="i",target="app"}' % sel, values: '100x8' },
            { series: 'pg_connections_max{%s,instance="i",target="calm"}' % sel, values: '100x8' },
            {
              series: 'pg_connections_superuser_reserved{%s,instance="i",target="app"}' % sel,
              values: '3x8',
            },
            {
              series: 'pg_connections_superuser_reserved{%s,instance="i",target="calm"}' % sel,
              values: '3x8',
            },
          ],
          alert_rule_test: [
            { eval_time: '3m', alertname: 'PostgresConnectionsNearMax', exp_alerts: [] },
            {
              eval_time: '7m',
              alertname: 'PostgresConnectionsNearMax',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'app uses 92.78% of its connection slots',
                    description: 'New connections will soon be refused (max_connections minus superuser_reserved_connections). Look at pg_stat_activity_sessions by application and state; a pooler (pgBouncer) is the usual fix.',
                    runbook_url: $._config.runbookURLPattern % 'postgresconnectionsnearmax',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'cache hit ratio below target while reading from disk',
          interval: '1m',
          input_series: [
            // 80 hits and 20 reads per second: 80%.
            {
              series: 'pg_stat_database_blks_hit_total{%s,instance="i",target="app",datname="app"}' % sel,
              values: '0+4800x90',
            },
            {
              series: 'pg_stat_database_blks_read_total{%s,instance="i",target="app",datname="app"}' % sel,
              values: '0+1200x90',
            },
            // 99% hits: fine.
            {
              series: 'pg_stat_database_blks_hit_total{%s,instance="i",target="app",datname="good"}' % sel,
              values: '0+5940x90',
            },
            {
              series: 'pg_stat_database_blks_read_total{%s,instance="i",target="app",datname="good"}' % sel,
              values: '0+60x90',
            },
          ],
          alert_rule_test: [
            { eval_time: '40m', alertname: 'PostgresCacheHitRatioLow', exp_alerts: [] },
            {
              eval_time: '70m',
              alertname: 'PostgresCacheHitRatioLow',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app', datname: 'app' },
                  exp_annotations: {
                    summary: 'Cache hit ratio of app on app is 80%',
                    description: 'Below the 90% target for 30 minutes while reading from disk: the working set no longer fits shared_buffers, or queries scan more than they should (check sequential scans).',
                    runbook_url: $._config.runbookURLPattern % 'postgrescachehitratiolow',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'statement p95 above the %s target for one workload only' % ms(T),
          interval: '1m',
          input_series: [
            // chat: all calls between 1.25 and 2.5 times the target (25 and 50 ms for 20 ms)
            // -> p95 = 2.4375 times the target (48.75 ms).
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="%s"}' % [sel, num(T / 2)],
              values: '0x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="%s"}' % [sel, num(T * 1.25)],
              values: '0x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="%s"}' % [sel, num(T * 2.5)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="+Inf"}' % sel,
              values: '0+600x30',
            },
            // notifications: all under half the target.
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="%s"}' % [sel, num(T / 2)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="%s"}' % [sel, num(T * 1.25)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="%s"}' % [sel, num(T * 2.5)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="+Inf"}' % sel,
              values: '0+600x30',
            },
          ],
          alert_rule_test: [
            { eval_time: '8m', alertname: 'PostgresStatementLatencyHigh', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'PostgresStatementLatencyHigh',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    datname: 'app',
                    workload: 'chat',
                  },
                  exp_annotations: {
                    summary: 'p95 statement latency of chat in app is %s' % ms(T * 2.4375),
                    description: "The chat workload's p95 execution time has been above the KPI target for 10 minutes (from the histogram, estimated from pg_stat_statements). Check pg_stat_statements_exec_seconds_total for the statements behind it.",
                    runbook_url: $._config.runbookURLPattern % 'postgresstatementlatencyhigh',
                  },
                },
              ],
            },
          ],
        },
        {
          name: "statement p95 from the log source's window when it shapes the workload",
          interval: '1m',
          input_series: [
            // The histogram says all calls are under half the target, but the log source
            // measured a p95 1.5 times the target (30 ms for 20 ms) and shaped the histogram:
            // the measured value is the one compared with the target.
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="%s"}' % [sel, num(T / 2)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="chat",le="+Inf"}' % sel,
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_window_seconds{%s,instance="i",target="app",datname="app",workload="chat",quantile="0.95"}' % sel,
              values: '%sx30' % num(T * 1.5),
            },
            {
              series: 'pg_statement_latency_source{%s,instance="i",target="app",datname="app",workload="chat",source="log"}' % sel,
              values: '1x30',
            },
            // notifications: the log source did not shape it (too few samples): the histogram's
            // p95 (under half the target) counts, not the stale window gauge.
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="%s"}' % [sel, num(T / 2)],
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="notifications",le="+Inf"}' % sel,
              values: '0+600x30',
            },
            {
              series: 'pg_statement_latency_window_seconds{%s,instance="i",target="app",datname="app",workload="notifications",quantile="0.95"}' % sel,
              values: '0.5x30',
            },
            {
              series: 'pg_statement_latency_source{%s,instance="i",target="app",datname="app",workload="notifications",source="log"}' % sel,
              values: '0x30',
            },
            // pgkpi's own statements are slow here, but they are the exporter's cost: no alert.
            {
              series: 'pg_statement_latency_window_seconds{%s,instance="i",target="app",datname="app",workload="pgkpi",quantile="0.95"}' % sel,
              values: '0.5x30',
            },
            {
              series: 'pg_statement_latency_source{%s,instance="i",target="app",datname="app",workload="pgkpi",source="log"}' % sel,
              values: '1x30',
            },
            {
              series: 'pg_statement_latency_seconds_bucket{%s,instance="i",target="app",datname="app",workload="pgkpi",le="+Inf"}' % sel,
              values: '0+60x30',
            },
          ],
          alert_rule_test: [
            {
              eval_time: '20m',
              alertname: 'PostgresStatementLatencyHigh',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    datname: 'app',
                    workload: 'chat',
                  },
                  exp_annotations: {
                    summary: 'p95 statement latency of chat in app is %s' % ms(T * 1.5),
                    description: "The chat workload's p95 execution time has been above the KPI target for 10 minutes (measured: the exact p95 of the durations the server logged in the last window). Check pg_stat_statements_exec_seconds_total for the statements behind it.",
                    runbook_url: $._config.runbookURLPattern % 'postgresstatementlatencyhigh',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'pg_stat_statements evictions',
          interval: '5m',
          input_series: [
            {
              series: 'pg_stat_statements_dealloc_total{%s,instance="i",target="app"}' % sel,
              values: '0 0 0 4 4 4 4 4',
            },
            {
              series: 'pg_stat_statements_dealloc_total{%s,instance="i",target="calm"}' % sel,
              values: '9x7',
            },
            {
              series: 'pg_stat_statements_fill_ratio{%s,instance="i",target="app"}' % sel,
              values: '1x7',
            },
          ],
          alert_rule_test: [
            { eval_time: '10m', alertname: 'PostgresStatementsDeallocated', exp_alerts: [] },
            {
              eval_time: '30m',
              alertname: 'PostgresStatementsDeallocated',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'pg_stat_statements on app evicts entries',
                    description: '4 entries evicted in the last hour (fill 100%): latency statistics of evicted statements are lost. Raise pg_stat_statements.max.',
                    runbook_url: $._config.runbookURLPattern % 'postgresstatementsdeallocated',
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
