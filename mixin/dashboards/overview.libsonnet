// The overview dashboard (dashboards/pgkpi-overview.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-overview.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local panels = [
        g.row('Query latency and throughput'),
        shared.p95ByWorkload,
        shared.qpsAndLockWaits,
        g.row('Async work'),
      ]
      + shared.queueKpis
      + [
        g.row('Database health'),
        shared.cacheHit,
        shared.connections,
        g.row('Growth'),
        shared.databaseGrowth,
        g.panel(
          'Partitioned table size growth per day',
          [['deriv(pg_partitioned_table_size_bytes{%s}[1h]) * 86400' % T, '{{parent}}']],
          'bytes',
          'Growth of each partitioned table (all partitions rolled up to the root); with retention applied it levels off.',
          minZero=false,
        ),
      ];
      g.dashboard(
        'pgkpi-overview',
        'pgkpi / KPI overview',
        'The seed documents\' KPIs against their targets.',
        panels,
        g.variables(),
      ),
  },
}
