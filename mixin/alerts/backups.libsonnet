// Backups: full backups from the `backups` collector ([backups] directory or a pgBackRest /
// WAL-G listing), the listing's freshness, the restore-test marker. WAL archiving has its own alerts in replication.yml (PostgresWalArchivingFailing,
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
              description: 'The newest full backup ([backups] directory, pgBackRest or WAL-G listing) is older than %s, or none is kept: the daily backup did not run, failed, or writes elsewhere. A restore now would lose more than a day.' % text.duration($._config.kpi.backup_age_max_seconds),
            },
          },
          {
            // The listing is written by the backup job's timer: when it stops, the backup ages
            // keep growing (they come from the backups' own finish times), so
            // PostgresBackupMissing fires too; this one says that the listing, not
            // necessarily the backup, is what stopped.
            alert: 'PostgresBackupListingStale',
            expr: |||
              pg_backup_info_age_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:backup_age_max_seconds
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The backup listing of {{ $labels.target }} is {{ $value | humanizeDuration }} old',
              description: 'The file [backups] pgbackrest_info or walg_backup_list was not rewritten for more than %s: the job that refreshes it stopped, so newer backups are not seen.' % text.duration($._config.kpi.backup_age_max_seconds),
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
