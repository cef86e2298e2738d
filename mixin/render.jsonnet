// Every file the mixin renders, by its path in the repository, as data. mixin/render.py
// evaluates this with the external code variable `config` (a _config override, such as
// { kpi+: { statement_p95_target_seconds: 0.05 } }; '{}' for the defaults) and writes the
// .yml files as YAML, the .json files as JSON, or checks the committed ones.
local mixin = (import 'mixin.libsonnet') + { _config+:: std.extVar('config') };

// The promtool tests of the rule files, rendered with the same _config (mixin/tests/).
local ruleTests = (mixin
                   + (import 'tests/exporter_test.libsonnet')
                   + (import 'tests/locks_test.libsonnet')
                   + (import 'tests/database_test.libsonnet')
                   + (import 'tests/replication_test.libsonnet')
                   + (import 'tests/vacuum_test.libsonnet')
                   + (import 'tests/queues_test.libsonnet')
                   + (import 'tests/relations_test.libsonnet')
                   + (import 'tests/backups_test.libsonnet')
                   + (import 'tests/volume_test.libsonnet')
                   + (import 'tests/pooling_test.libsonnet')).ruleTests;

{
  ['alerts/' + name]: mixin.ruleFiles[name]
  for name in std.objectFields(mixin.ruleFiles)
} + {
  ['alerts/tests/' + name]: ruleTests[name]
  for name in std.objectFields(ruleTests)
} + {
  ['dashboards/' + name]: mixin.grafanaDashboards[name]
  for name in std.objectFields(mixin.grafanaDashboards)
}
