// promtool unit tests of alerts/volume.yml, rendered to alerts/tests/volume_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'volume_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../volume.yml',
      ],
      evaluation_interval: '5m',
      tests: [
        {
          name: 'a file system losing 1 GiB an hour with 20 GiB left fills within 24 h; a steady one does not',
          interval: '5m',
          input_series: [
            // filling: 40 GiB free, losing 1 GiB an hour (about 89478485 bytes per 5 minutes).
            {
              series: 'pg_data_volume_free_bytes{%s,instance="i",target="app",directory="wal"}' % sel,
              values: '42949672960-89478485x300',
            },
            {
              series: 'pg_data_volume_size_bytes{%s,instance="i",target="app",directory="wal"}' % sel,
              values: '107374182400x300',
            },
            // steady: 50 GiB free, not moving.
            {
              series: 'pg_data_volume_free_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '53687091200x300',
            },
            {
              series: 'pg_data_volume_size_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '107374182400x300',
            },
          ],
          alert_rule_test: [
            // After 6 h: 34 GiB left, 34 h to go.
            { eval_time: '6h', alertname: 'PostgresVolumeFillsSoon', exp_alerts: [] },
            // After 18 h: 22 GiB left, under 24 h to go since 16 h (and for 30 m).
            {
              eval_time: '18h',
              alertname: 'PostgresVolumeFillsSoon',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app', directory: 'wal' },
                  exp_annotations: {
                    summary: 'The wal file system of app fills within 24 hours',
                    description: 'At the growth of the last 6 hours the file system holding the wal directory, already under 40% free, runs out of space within 24 hours; PostgreSQL stops (WAL) or fails writes (data) when it does.',
                    runbook_url: $._config.runbookURLPattern % 'postgresvolumefillssoon',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'a half-empty file system losing space fast waits until it is under 40% free',
          interval: '5m',
          input_series: [
            // 150 of 200 GiB free, losing 10 GiB an hour (894784853 bytes per 5 minutes): 15 h
            // to full from the start, but 40 % free (80 GiB) only after 7 h.
            {
              series: 'pg_data_volume_free_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '161061273600-894784853x150',
            },
            {
              series: 'pg_data_volume_size_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '214748364800x150',
            },
          ],
          alert_rule_test: [
            { eval_time: '5h', alertname: 'PostgresVolumeFillsSoon', exp_alerts: [] },
            {
              eval_time: '9h',
              alertname: 'PostgresVolumeFillsSoon',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app', directory: 'data' },
                  exp_annotations: {
                    summary: 'The data file system of app fills within 24 hours',
                    description: 'At the growth of the last 6 hours the file system holding the data directory, already under 40% free, runs out of space within 24 hours; PostgreSQL stops (WAL) or fails writes (data) when it does.',
                    runbook_url: $._config.runbookURLPattern % 'postgresvolumefillssoon',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'less than 10% free pages after 5 minutes',
          interval: '5m',
          input_series: [
            {
              series: 'pg_data_volume_free_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '20 8x5',
            },
            {
              series: 'pg_data_volume_size_bytes{%s,instance="i",target="app",directory="data"}' % sel,
              values: '100x6',
            },
            {
              series: 'pg_data_volume_free_bytes{%s,instance="i",target="app",directory="wal"}' % sel,
              values: '50x6',
            },
            {
              series: 'pg_data_volume_size_bytes{%s,instance="i",target="app",directory="wal"}' % sel,
              values: '100x6',
            },
          ],
          alert_rule_test: [
            { eval_time: '5m', alertname: 'PostgresVolumeLowFree', exp_alerts: [] },
            {
              eval_time: '15m',
              alertname: 'PostgresVolumeLowFree',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app', directory: 'data' },
                  exp_annotations: {
                    summary: 'The data file system of app has 8% free',
                    description: 'Less than 10% free on the file system holding the data directory.',
                    runbook_url: $._config.runbookURLPattern % 'postgresvolumelowfree',
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
