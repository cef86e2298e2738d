// promtool unit tests of alerts/replication.yml, rendered to alerts/tests/replication_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'replication_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../replication.yml',
      ],
      evaluation_interval: '1m',
      tests: [
        {
          name: 'replication lag seen from the primary and from a standby',
          interval: '1m',
          input_series: [
            {
              series: 'pg_replication_replay_lag_seconds{%s,instance="i",target="primary",application_name="replica1",client_addr="10.0.0.2",state="streaming",sync_state="async"}' % sel,
              values: '1 45x10',
            },
            {
              series: 'pg_replication_replay_lag_seconds{%s,instance="i",target="primary",application_name="replica2",client_addr="10.0.0.3",state="streaming",sync_state="async"}' % sel,
              values: '1x10',
            },
            {
              series: 'pg_standby_replay_lag_seconds{%s,instance="i",target="standby"}' % sel,
              values: '0 120x10',
            },
          ],
          alert_rule_test: [
            { eval_time: '3m', alertname: 'PostgresReplicationLag', exp_alerts: [] },
            {
              eval_time: '8m',
              alertname: 'PostgresReplicationLag',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'primary',
                    application_name: 'replica1',
                    client_addr: '10.0.0.2',
                    state: 'streaming',
                    sync_state: 'async',
                  },
                  exp_annotations: {
                    summary: 'Replication to replica1 lags 45s',
                    description: "Reads on the standby are 45s stale and a failover would lose that much. Check the standby's I/O and network, and long queries on it.",
                    runbook_url: $._config.runbookURLPattern % 'postgresreplicationlag',
                  },
                },
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'standby' },
                  exp_annotations: {
                    summary: 'Replication to standby lags 2m 0s',
                    description: "Reads on the standby are 2m 0s stale and a failover would lose that much. Check the standby's I/O and network, and long queries on it.",
                    runbook_url: $._config.runbookURLPattern % 'postgresreplicationlag',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'an inactive slot retaining more than 1 GiB',
          interval: '5m',
          input_series: [
            {
              series: 'pg_replication_slot_active{%s,instance="i",target="primary",slot_name="old",slot_type="physical",database="",wal_status="extended"}' % sel,
              values: '0x12',
            },
            {
              series: 'pg_replication_slot_retained_wal_bytes{%s,instance="i",target="primary",slot_name="old",slot_type="physical",database="",wal_status="extended"}' % sel,
              values: '2e9x12',
            },
            {
              series: 'pg_replication_slot_active{%s,instance="i",target="primary",slot_name="live",slot_type="physical",database="",wal_status="reserved"}' % sel,
              values: '1x12',
            },
            {
              series: 'pg_replication_slot_retained_wal_bytes{%s,instance="i",target="primary",slot_name="live",slot_type="physical",database="",wal_status="reserved"}' % sel,
              values: '2e9x12',
            },
          ],
          alert_rule_test: [
            { eval_time: '20m', alertname: 'PostgresReplicationSlotInactive', exp_alerts: [] },
            {
              eval_time: '40m',
              alertname: 'PostgresReplicationSlotInactive',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'primary',
                    slot_name: 'old',
                    slot_type: 'physical',
                    wal_status: 'extended',
                  },
                  exp_annotations: {
                    summary: 'Inactive slot old on primary retains WAL',
                    description: "No consumer for 30 minutes while the slot keeps WAL on disk; the primary's disk fills until the slot is dropped or its consumer returns.",
                    runbook_url: $._config.runbookURLPattern % 'postgresreplicationslotinactive',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'archiving failures and a stale archive',
          interval: '5m',
          input_series: [
            {
              series: 'pg_stat_archiver_failed_total{%s,instance="i",target="app"}' % sel,
              values: '0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3',
            },
            {
              series: 'pg_stat_archiver_since_last_archived_seconds{%s,instance="i",target="app"}' % sel,
              values: '0+300x20',
            },
            {
              series: 'pg_archive_mode_enabled{%s,instance="i",target="app"}' % sel,
              values: '1x20',
            },
            {
              series: 'pg_wal_position_bytes{%s,instance="i",target="app"}' % sel,
              values: '0+16000000x20',
            },
            // Archiving off: an old "last archived" means nothing.
            {
              series: 'pg_stat_archiver_since_last_archived_seconds{%s,instance="i",target="noarchive"}' % sel,
              values: '100000x20',
            },
            {
              series: 'pg_archive_mode_enabled{%s,instance="i",target="noarchive"}' % sel,
              values: '0x20',
            },
            {
              series: 'pg_wal_position_bytes{%s,instance="i",target="noarchive"}' % sel,
              values: '0+16000000x20',
            },
          ],
          alert_rule_test: [
            { eval_time: '5m', alertname: 'PostgresWalArchivingFailing', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'PostgresWalArchivingFailing',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'WAL archiving fails on app',
                    description: '3 failed archive attempts in 15 minutes. Backups and point-in-time recovery stop at the last archived file, and pg_wal grows until archiving works again.',
                    runbook_url: $._config.runbookURLPattern % 'postgreswalarchivingfailing',
                  },
                },
              ],
            },
            { eval_time: '50m', alertname: 'PostgresWalArchiveStale', exp_alerts: [] },
            {
              eval_time: '100m',
              alertname: 'PostgresWalArchiveStale',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'No WAL archived on app for 1h 40m 0s',
                    description: 'WAL is being written but nothing was archived for over 1 hour: the backup chain is falling behind.',
                    runbook_url: $._config.runbookURLPattern % 'postgreswalarchivestale',
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
