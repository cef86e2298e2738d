// promtool unit tests of alerts/pooling.yml, rendered to alerts/tests/pooling_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'pooling_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../pooling.yml',
      ],
      evaluation_interval: '15s',
      tests: [
        {
          name: 'a pool at its size with clients waiting is saturated; one with free servers is not',
          interval: '15s',
          input_series: [
            // app: 2 of 2 servers active, 8 clients waiting, the oldest for longer and longer.
            {
              series: 'pgbouncer_pool_server_connections{%s,instance="i",target="pooler",database="app",user="web",state="active"}' % sel,
              values: '0 2x20',
            },
            {
              series: 'pgbouncer_pool_client_connections{%s,instance="i",target="pooler",database="app",user="web",state="waiting"}' % sel,
              values: '0 8x20',
            },
            {
              series: 'pgbouncer_pool_max_wait_seconds{%s,instance="i",target="pooler",database="app",user="web"}' % sel,
              values: '0 0.5+15x20',
            },
            {
              series: 'pgbouncer_database_pool_size{%s,instance="i",target="pooler",database="app"}' % sel,
              values: '2x20',
            },
            // calm: 1 of 5 active and a client waiting (a server is logging in): not saturated,
            // and its wait stays under the 1 s target.
            {
              series: 'pgbouncer_pool_server_connections{%s,instance="i",target="pooler",database="calm",user="web",state="active"}' % sel,
              values: '1x20',
            },
            {
              series: 'pgbouncer_pool_client_connections{%s,instance="i",target="pooler",database="calm",user="web",state="waiting"}' % sel,
              values: '1x20',
            },
            {
              series: 'pgbouncer_pool_max_wait_seconds{%s,instance="i",target="pooler",database="calm",user="web"}' % sel,
              values: '0.2x20',
            },
            {
              series: 'pgbouncer_database_pool_size{%s,instance="i",target="pooler",database="calm"}' % sel,
              values: '5x20',
            },
          ],
          alert_rule_test: [
            { eval_time: '30s', alertname: 'PgbouncerPoolSaturated', exp_alerts: [] },
            {
              eval_time: '1m',
              alertname: 'PgbouncerPoolSaturated',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'critical',
                    instance: 'i',
                    target: 'pooler',
                    database: 'app',
                    user: 'web',
                  },
                  exp_annotations: {
                    summary: 'Pool app/web on pooler is saturated',
                    description: 'Every server connection the pool may open is busy (2) while clients wait for one: the pool size, not PostgreSQL, now limits throughput and adds queueing to every query.',
                    runbook_url: $._config.runbookURLPattern % 'pgbouncerpoolsaturated',
                  },
                },
              ],
            },
            { eval_time: '1m', alertname: 'PgbouncerClientsWaiting', exp_alerts: [] },
            {
              eval_time: '3m',
              alertname: 'PgbouncerClientsWaiting',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'pooler',
                    database: 'app',
                    user: 'web',
                  },
                  exp_annotations: {
                    summary: 'Clients of pool app/web on pooler wait 2m 45s for a server',
                    description: 'The oldest client of the pool has waited longer than the 1 s target for a server connection for 2 minutes: every query through the pool pays that wait on top of its own time.',
                    runbook_url: $._config.runbookURLPattern % 'pgbouncerclientswaiting',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'client connections near max_client_conn after 5 minutes',
          interval: '1m',
          input_series: [
            {
              series: 'pgbouncer_client_connections{%s,instance="i",target="pooler"}' % sel,
              values: '100 90x8',
            },
            {
              series: 'pgbouncer_config_max_client_conn{%s,instance="i",target="pooler"}' % sel,
              values: '100x8',
            },
            {
              series: 'pgbouncer_client_connections{%s,instance="i",target="calm"}' % sel,
              values: '50x8',
            },
            {
              series: 'pgbouncer_config_max_client_conn{%s,instance="i",target="calm"}' % sel,
              values: '100x8',
            },
          ],
          alert_rule_test: [
            { eval_time: '4m', alertname: 'PgbouncerClientConnectionsNearMax', exp_alerts: [] },
            {
              eval_time: '7m',
              alertname: 'PgbouncerClientConnectionsNearMax',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'pooler' },
                  exp_annotations: {
                    summary: 'pgBouncer pooler uses 90% of max_client_conn',
                    description: 'Past max_client_conn pgBouncer refuses new clients outright. Find which application opens so many connections, or raise max_client_conn (and the open-file limit with it).',
                    runbook_url: $._config.runbookURLPattern % 'pgbouncerclientconnectionsnearmax',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'only a pgbouncer target that is down is PgbouncerTargetDown',
          interval: '15s',
          input_series: [
            { series: 'pg_up{%s,instance="i",target="pooler"}' % sel, values: '1 0x8' },
            {
              series: 'pgkpi_target_info{%s,instance="i",target="pooler",kind="pgbouncer"}' % sel,
              values: '1x8',
            },
            { series: 'pg_up{%s,instance="i",target="app"}' % sel, values: '0x8' },
            {
              series: 'pgkpi_target_info{%s,instance="i",target="app",kind="postgres"}' % sel,
              values: '1x8',
            },
          ],
          alert_rule_test: [
            { eval_time: '30s', alertname: 'PgbouncerTargetDown', exp_alerts: [] },
            {
              eval_time: '2m',
              alertname: 'PgbouncerTargetDown',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'pooler' },
                  exp_annotations: {
                    summary: 'pgBouncer target pooler is unreachable',
                    description: "pgkpi (i) has had no session to the pgBouncer admin console pooler for 1 minute: the pooler is down, or refuses the monitoring user (stats_users); pgkpi's / page shows the error.",
                    runbook_url: $._config.runbookURLPattern % 'pgbouncertargetdown',
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
