// promtool unit tests of alerts/backups.yml, rendered to alerts/tests/backups_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'backups_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../backups.yml',
      ],
      evaluation_interval: '1m',
      tests: [
        {
          name: 'no full backup within 26 hours pages after 10 minutes; a daily one does not',
          interval: '5m',
          input_series: [
            // late: the last backup ages past 26 h (93600 s) at 145 minutes.
            {
              series: 'pg_backup_newest_age_seconds{%s,instance="i",target="late"}' % sel,
              values: '85200+300x40',
            },
            { series: 'pg_backup_files{%s,instance="i",target="late"}' % sel, values: '30x40' },
            // daily: a backup an hour old.
            {
              series: 'pg_backup_newest_age_seconds{%s,instance="i",target="daily"}' % sel,
              values: '3600x40',
            },
            { series: 'pg_backup_files{%s,instance="i",target="daily"}' % sel, values: '30x40' },
            // gone: every backup deleted.
            { series: 'pg_backup_files{%s,instance="i",target="gone"}' % sel, values: '0x40' },
          ],
          alert_rule_test: [
            { eval_time: '5m', alertname: 'PostgresBackupMissing', exp_alerts: [] },
            {
              eval_time: '2h30m',
              alertname: 'PostgresBackupMissing',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'gone' },
                  exp_annotations: {
                    summary: 'No full backup of gone within 26 hours',
                    description: 'The newest full backup ([backups] directory, pgBackRest or WAL-G listing) is older than 26 hours, or none is kept: the daily backup did not run, failed, or writes elsewhere. A restore now would lose more than a day.',
                    runbook_url: $._config.runbookURLPattern % 'postgresbackupmissing',
                  },
                },
              ],
            },
            {
              eval_time: '3h',
              alertname: 'PostgresBackupMissing',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'gone' },
                  exp_annotations: {
                    summary: 'No full backup of gone within 26 hours',
                    description: 'The newest full backup ([backups] directory, pgBackRest or WAL-G listing) is older than 26 hours, or none is kept: the daily backup did not run, failed, or writes elsewhere. A restore now would lose more than a day.',
                    runbook_url: $._config.runbookURLPattern % 'postgresbackupmissing',
                  },
                },
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'late' },
                  exp_annotations: {
                    summary: 'No full backup of late within 26 hours',
                    description: 'The newest full backup ([backups] directory, pgBackRest or WAL-G listing) is older than 26 hours, or none is kept: the daily backup did not run, failed, or writes elsewhere. A restore now would lose more than a day.',
                    runbook_url: $._config.runbookURLPattern % 'postgresbackupmissing',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'a backup listing not rewritten for 26 hours opens a ticket; a daily one does not',
          interval: '5m',
          input_series: [
            // stale: the listing ages past 26 h (93600 s) at 145 minutes.
            {
              series: 'pg_backup_info_age_seconds{%s,instance="i",target="stale"}' % sel,
              values: '85200+300x40',
            },
            // daily: rewritten an hour ago.
            {
              series: 'pg_backup_info_age_seconds{%s,instance="i",target="daily"}' % sel,
              values: '3600x40',
            },
          ],
          alert_rule_test: [
            { eval_time: '2h30m', alertname: 'PostgresBackupListingStale', exp_alerts: [] },
            {
              eval_time: '3h',
              alertname: 'PostgresBackupListingStale',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'stale' },
                  exp_annotations: {
                    summary: 'The backup listing of stale is 1d 2h 40m 0s old',
                    description: 'The file [backups] pgbackrest_info or walg_backup_list was not rewritten for more than 26 hours: the job that refreshes it stopped, so newer backups are not seen.',
                    runbook_url: $._config.runbookURLPattern % 'postgresbackuplistingstale',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'a restore test older than 35 days opens a ticket',
          interval: '5m',
          input_series: [
            // old: 34 days at the start, past 35 days (3024000 s) after 24 hours.
            {
              series: 'pg_backup_restore_test_age_seconds{%s,instance="i",target="old"}' % sel,
              values: '2937600+300x330',
            },
            {
              series: 'pg_backup_restore_test_age_seconds{%s,instance="i",target="fresh"}' % sel,
              values: '86400+300x330',
            },
          ],
          alert_rule_test: [
            { eval_time: '20h', alertname: 'PostgresRestoreTestOld', exp_alerts: [] },
            {
              eval_time: '26h',
              alertname: 'PostgresRestoreTestOld',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'old' },
                  exp_annotations: {
                    summary: 'The last restore test of old is 35d 2h 0m 0s old',
                    description: 'No restore test has succeeded for more than 35 days (modification time of [backups] restore_test_marker): backups nobody restored are a hope, not a backup.',
                    runbook_url: $._config.runbookURLPattern % 'postgresrestoretestold',
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
