// Disk space of the data and WAL directories, from the data_volume collector (same host or a
// shared volume). When pgkpi runs elsewhere, the same rules work on node_exporter's
// node_filesystem_avail_bytes / node_filesystem_size_bytes (docs/configuration.md).
// Thresholds in kpi.yml. The fill prediction only counts on a file system already under 40 %
// free, as node-mixin's NodeFilesystemSpaceFillingUp does: a short or bursty history (a few
// minutes after start, a build writing gigabytes next door) extrapolated 24 h ahead would page
// on a half-empty disk.
local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'volume.yml'+: { groups+: [
      {
        name: 'pgkpi-volume',
        rules: [
          {
            alert: 'PostgresVolumeFillsSoon',
            expr: |||
              predict_linear(pg_data_volume_free_bytes{%(pgkpiSelector)s}[6h], scalar(pgkpi_kpi:volume_fill_horizon_seconds)) < 0
              and deriv(pg_data_volume_free_bytes{%(pgkpiSelector)s}[6h]) < 0
              and pg_data_volume_free_bytes{%(pgkpiSelector)s} / pg_data_volume_size_bytes{%(pgkpiSelector)s}
                < on () group_left () pgkpi_kpi:volume_fill_free_ratio_max
            ||| % $._config,
            'for': '30m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'The {{ $labels.directory }} file system of {{ $labels.target }} fills within %s' % text.duration($._config.kpi.volume_fill_horizon_seconds),
              description: 'At the growth of the last 6 hours the file system holding the {{ $labels.directory }} directory, already under %s free, runs out of space within %s; PostgreSQL stops (WAL) or fails writes (data) when it does.' % [text.percent($._config.kpi.volume_fill_free_ratio_max), text.duration($._config.kpi.volume_fill_horizon_seconds)],
            },
          },
          {
            alert: 'PostgresVolumeLowFree',
            expr: |||
              pg_data_volume_free_bytes{%(pgkpiSelector)s} / pg_data_volume_size_bytes{%(pgkpiSelector)s}
              < on () group_left () pgkpi_kpi:volume_free_ratio_min
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'The {{ $labels.directory }} file system of {{ $labels.target }} has {{ $value | humanizePercentage }} free',
              description: 'Less than %s free on the file system holding the {{ $labels.directory }} directory.' % text.percent($._config.kpi.volume_free_ratio_min),
            },
          },
        ],
      },
    ] },
  },
}
