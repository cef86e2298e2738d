// Backups: full backups from the `backups` collector ([backups] directory), the restore-test
// marker. WAL archiving has its own alerts in replication.yml (PostgresWalArchivingFailing,
// PostgresWalArchiveStale). Thresholds in kpi.yml.
local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'backups.yml'+: { groups+: [
      {
        name: 'pgkpi-backups',
        rules: [
          {
            alert: 'PostgresBackupMissing',
            expr: |||
              pg_backup_newest_age_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:backup_age_max_seconds
              or pg_backup_files{%(pgkpiSelector)s} == 0
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'No full backup of {{ $labels.target }} within %s' % text.duration($._config.kpi.backup_age_max_seconds),
              description: 'The newest file matching [backups] pattern is older than %s, or none is kept: the daily backup did not run, failed, or writes elsewhere. A restore now would lose more than a day.' % text.duration($._config.kpi.backup_age_max_seconds),
            },
          },
          {
            alert: 'PostgresRestoreTestOld',
            expr: |||
              pg_backup_restore_test_age_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:restore_test_age_max_seconds
            ||| % $._config,
            'for': '1h',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The last restore test of {{ $labels.target }} is {{ $value | humanizeDuration }} old',
              description: 'No restore test has succeeded for more than %s (modification time of [backups] restore_test_marker): backups nobody restored are a hope, not a backup.' % text.duration($._config.kpi.restore_test_age_max_seconds),
            },
          },
        ],
      },
    ] },
  },
}
