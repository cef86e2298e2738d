// The health dashboard (dashboards/pgkpi-health.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-health.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local panels = [g.row('Activity')]
      + shared.dbPanels
      + [shared.connections, shared.cacheHit, g.row('Connection pooling (pgBouncer)')]
      + shared.poolingPanels
      + [
        g.row('Disk and backups'),
        g.panel(
          'Free space of the data and WAL file systems',
          [
            ['pg_data_volume_free_bytes{%s} / pg_data_volume_size_bytes{%s}' % [T, T], '{{target}} {{directory}}'],
          ],
          'percentunit',
          'Share of each file system left (df\'s Avail over its size), when pgkpi sees the data directory. The red line is PostgresVolumeLowFree\'s threshold.',
          threshold=kpi.volume_free_ratio_min,
        ),
        g.panel(
          'Newest full backup age',
          [['pg_backup_newest_age_seconds{%s}' % T, '{{target}}']],
          's',
          'Age of the newest file in [backups] directory. The red line is PostgresBackupMissing\'s 26 h.',
          threshold=kpi.backup_age_max_seconds,
        ),
        g.row('Replication'),
        g.panel(
          'Replication lag (time)',
          [
            ['pg_replication_replay_lag_seconds{%s}' % T, 'replay {{application_name}}'],
            ['pg_standby_replay_lag_seconds{%s}' % T, 'standby {{target}}'],
          ],
          's',
          'Replay lag of each standby as seen from the primary, and on standbys the age of the last replayed transaction while WAL awaits replay.',
          threshold=kpi.replication_lag_max_seconds,
        ),
        g.panel(
          'Replication lag (bytes) and slots',
          [
            ['pg_replication_replay_lag_bytes{%s}' % T, 'replay {{application_name}}'],
            ['pg_replication_slot_retained_wal_bytes{%s}' % T, 'slot {{slot_name}}'],
          ],
          'bytes',
          'WAL not yet replayed by each standby, and WAL retained by each replication slot (an inactive slot retains it forever).',
          threshold=kpi.slot_retained_wal_max_bytes,
        ),
        g.row('WAL, checkpoints and archiving'),
        g.panel(
          'WAL generated',
          [['rate(pg_wal_position_bytes{%s}[%s])' % [T, RI], '{{target}}']],
          'Bps',
          'WAL bytes written per second (from the WAL position; works on every version).',
        ),
        g.panel(
          'Checkpoints',
          [
            ['rate(pg_checkpoints_timed_total{%s}[%s]) * 3600' % [T, RI], 'timed/h {{target}}'],
            ['rate(pg_checkpoints_requested_total{%s}[%s]) * 3600' % [T, RI], 'requested/h {{target}}'],
          ],
          'short',
          'Checkpoints per hour. Many requested ones mean max_wal_size is too small.',
        ),
        g.panel(
          'WAL archiving',
          [
            ['pg_stat_archiver_since_last_archived_seconds{%s}' % T, 'since last archived {{target}}'],
          ],
          's',
          'Seconds since the last WAL file was archived (absent when archiving never ran). Backups and PITR depend on it.',
          threshold=kpi.archive_age_max_seconds,
        ),
        g.panel(
          'Archive failures',
          [['increase(pg_stat_archiver_failed_total{%s}[%s])' % [T, RI], '{{target}}']],
          'short',
          'Failed archive attempts per interval.',
        ),
        g.row('I/O by backend type (PostgreSQL 16+)'),
        g.panel(
          'Bytes read and written',
          [
            ['sum by (backend_type) (rate(pg_stat_io_read_bytes_total{%s}[%s]))' % [T, RI], 'read {{backend_type}}'],
            ['-sum by (backend_type) (rate(pg_stat_io_write_bytes_total{%s}[%s]))' % [T, RI], 'written {{backend_type}}'],
          ],
          'Bps',
          'pg_stat_io, all objects and contexts: reads above the axis, writes below. Client backends that write are evicting dirty buffers themselves: the background writer or checkpointer is behind, or shared_buffers is too small.',
        ),
        g.panel(
          'Buffer evictions and growth',
          [
            ['sum by (backend_type) (rate(pg_stat_io_evictions_total{%s}[%s]))' % [T, RI], 'evicted/s {{backend_type}}'],
            ['sum by (backend_type) (rate(pg_stat_io_extend_bytes_total{%s}[%s])) / 8192' % [T, RI], 'extended blocks/s {{backend_type}}'],
          ],
          'short',
          'Buffers evicted to make room (a working set larger than shared_buffers), and blocks added to relation files (tables and indexes growing).',
        ),
        g.row('Vacuum and wraparound'),
        g.panel(
          'Dead rows (worst tables)',
          [['topk(10, pg_table_dead_rows{%s})' % T, '{{schemaname}}.{{relname}}']],
          'short',
          'Dead rows awaiting vacuum in the tables with the most of them.',
        ),
        g.panel(
          'Time since last vacuum (worst tables)',
          [['topk(10, pg_table_since_last_vacuum_seconds{%s})' % T, '{{schemaname}}.{{relname}}']],
          's',
          'Seconds since each table was last vacuumed (manual or auto).',
        ),
        g.panel(
          'Autovacuum workers',
          [
            ['pg_autovacuum_workers_running{%s}' % T, 'running {{target}}'],
            ['pg_autovacuum_workers_max{%s}' % T, 'max {{target}}'],
          ],
          'short',
          'Autovacuum workers busy against autovacuum_max_workers; at the maximum for long, vacuum is not keeping up.',
        ),
        g.panel(
          'Transaction ID wraparound',
          [
            ['pg_database_xid_wraparound_ratio{%s}' % TD, 'xid {{datname}}'],
            ['pg_database_mxid_wraparound_ratio{%s}' % TD, 'mxid {{datname}}'],
          ],
          'percentunit',
          'Share of the 2^31 ID space used since the oldest unfrozen row; writes stop at 100%.',
          threshold=kpi.xid_wraparound_ratio_max,
        ),
        g.panel(
          'Sequences closest to exhaustion',
          [['topk(10, pg_sequence_used_ratio{%s})' % T, '{{schemaname}}.{{sequencename}}']],
          'percentunit',
          'Fraction of each sequence\'s usable range consumed, including the owning column\'s type limit (an int4 id fails at 2^31-1).',
        ),
        g.row('Settings'),
        g.panel(
          'Memory settings',
          [
            ['pg_settings_bytes{%s, name=~"shared_buffers|work_mem|maintenance_work_mem|effective_cache_size|max_wal_size"}' % T, '{{name}}'],
          ],
          'bytes',
          'Selected memory settings in bytes.',
          kind='table',
          width=12,
        ),
        g.panel(
          'Settings pending restart',
          [['pg_settings_pending_restart{%s}' % T, '{{target}}']],
          'short',
          'Settings changed in the configuration that wait for a server restart.',
          kind='stat',
          width=12,
        ),
        g.row('The exporter'),
        g.panel(
          'Database time per collector',
          [['sum by (collector) (rate(pgkpi_collector_duration_seconds_total{%s}[%s])) * 60' % [T, RI], '{{collector}}']],
          's',
          "The exporter's own cost on the monitored database: seconds of database time each collector took per minute, summed over the selected targets (rate of pgkpi_collector_duration_seconds_total, the wall time of its runs, round trips included: an upper bound). A collector that stands out is the one to give a longer interval or turn off.",
          width=24,
          stack=true,
        ),
      ];
      g.dashboard(
        'pgkpi-health',
        'pgkpi / Database health',
        'Connections, replication, WAL and archiving, vacuum and wraparound, and the exporter\'s own cost.',
        panels,
        g.variables(),
      ),
  },
}
