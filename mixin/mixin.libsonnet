// pgkpi's monitoring mixin: alerts, recording rules and Grafana dashboards from one source,
// configured by _config (config.libsonnet). The monitoring-mixins interface:
//   prometheusAlerts   { groups: [...] }  the alerting rules (alerts/<area>.yml)
//   prometheusRules    { groups: [...] }  the KPI constants and recording rules (alerts/kpi.yml)
//   grafanaDashboards  { 'pgkpi-*.json': dashboard }
// render.jsonnet turns them into the committed files; scripts/render-mixin.py runs it.
local withRunbook(config, rule) =
  if std.objectHas(rule, 'alert') then rule {
    annotations+: { runbook_url: config.runbookURLPattern % std.asciiLower(rule.alert) },
  } else rule;

local areas =
  (import 'config.libsonnet')
  + (import 'rules/kpi.libsonnet')
  + (import 'alerts/exporter.libsonnet')
  + (import 'alerts/locks.libsonnet')
  + (import 'alerts/database.libsonnet')
  + (import 'alerts/replication.libsonnet')
  + (import 'alerts/vacuum.libsonnet')
  + (import 'alerts/queues.libsonnet')
  + (import 'alerts/relations.libsonnet')
  + (import 'alerts/backups.libsonnet')
  + (import 'alerts/volume.libsonnet')
  + (import 'alerts/pooling.libsonnet')
  + (import 'dashboards/dashboards.libsonnet');

areas + {
  // The rule files by name, each { groups: [...] }. Every alert gets its runbook_url here,
  // from the pattern, so no alert can carry another.
  local files = super.ruleFiles,
  ruleFiles:: {
    [name]: {
      groups: [
        group { rules: [withRunbook($._config, rule) for rule in group.rules] }
        for group in files[name].groups
      ],
    }
    for name in std.objectFields(files)
  },

  prometheusRules: { groups: $.ruleFiles['kpi.yml'].groups },
  prometheusAlerts: {
    groups: std.flattenArrays([
      $.ruleFiles[name].groups
      for name in std.objectFields($.ruleFiles)
      if name != 'kpi.yml'
    ]),
  },
}
