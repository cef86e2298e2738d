// The relations dashboard (dashboards/pgkpi-relations.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-relations.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local panels = [
        g.row('Indexes'),
        g.panel(
          'Unused indexes and reclaimable space',
          [
            ['pg_index_unused_indexes{%s}' % T, 'unused {{target}}'],
            ['pg_index_invalid_indexes{%s}' % T, 'invalid {{target}}'],
            ['pg_index_duplicate_indexes{%s}' % T, 'duplicate {{target}}'],
          ],
          'short',
          'Indexes never scanned since the statistics were reset (not backing a constraint, above the size floor), invalid indexes (a failed CREATE INDEX CONCURRENTLY) and exact duplicates. Judge \'unused\' against the statistics age.',
        ),
        g.secondsOnRight(
          g.panel(
            'Reclaimable bytes and statistics age',
            [
              ['pg_index_unused_reclaimable_bytes{%s}' % T, 'reclaimable {{target}}'],
              ['pg_index_usage_stats_age_seconds{%s}' % T, 'statistics age {{target}}'],
            ],
            'bytes',
            'Total size of the unused indexes: what dropping them would give back. On the right axis, pg_index_usage_stats_age_seconds says how long the \'unused\' verdict has been observed (a reset yesterday proves little).',
          ),
        ),
        g.panel(
          'Unused indexes',
          [['pg_index_unused_size_bytes{%s}' % T, '{{schemaname}}.{{indexrelname}}']],
          'bytes',
          'Each unused index with its size (bounded list).',
          kind='table',
        ),
        g.panel(
          'Index scans per second (busiest)',
          [
            ['topk(10, rate(pg_index_scans_total{%s}[%s]))' % [T, RI], '{{schemaname}}.{{indexrelname}}'],
          ],
          'ops',
          'Index scans per second for the most used indexes: a new index from the migrations should show up here once the application uses it.',
        ),
        g.panel(
          'Index bloat estimate (largest)',
          [['topk(10, pg_index_bloat_bytes{%s})' % T, '{{schemaname}}.{{indexrelname}}']],
          'bytes',
          'Catalog-based estimate of B-tree index space beyond what its entries need (docs/relations.md); reads low on deduplicated indexes.',
        ),
        g.row('Tables'),
        g.panel(
          'Rows read by sequential scans (the missing-index signal)',
          [
            ['topk(10, rate(pg_table_seq_tup_read_total{%s}[%s]))' % [T, RI], '{{schemaname}}.{{relname}}'],
          ],
          'short',
          'Rows per second read by sequential scans per table. Large numbers on a big table usually mean a query lacks an index.',
        ),
        g.panel(
          'Sequential vs index scans',
          [
            ['sum by (target) (rate(pg_table_seq_scans_total{%s}[%s]))' % [T, RI], 'sequential {{target}}'],
            ['sum by (target) (rate(pg_table_idx_scans_total{%s}[%s]))' % [T, RI], 'index {{target}}'],
          ],
          'ops',
          'Scans per second over all tables, by kind.',
        ),
        g.panel(
          'Largest tables',
          [['topk(10, pg_table_size_bytes{%s})' % T, '{{schemaname}}.{{relname}}']],
          'bytes',
          'Total size (heap, TOAST and indexes) of the largest tables; sampled every 5 minutes by relation_sizes.',
        ),
        g.panel(
          'Table growth per day (fastest)',
          [
            ['topk(10, deriv(pg_table_size_bytes{%s}[1h]) * 86400)' % T, '{{schemaname}}.{{relname}}'],
          ],
          'bytes',
          'Growth per day of the fastest-growing tables (deriv over an hour).',
          minZero=false,
        ),
        g.panel(
          'Table bloat estimate (largest)',
          [['topk(10, pg_table_bloat_bytes{%s})' % T, '{{schemaname}}.{{relname}}']],
          'bytes',
          'Catalog-based estimate of heap space beyond what live rows need at the table\'s fillfactor (docs/relations.md).',
        ),
        g.row('Partitions'),
        g.panel(
          'Future partition coverage',
          [
            ['pg_partitioned_table_coverage_seconds{%s, strategy="range"}' % T, '{{schemaname}}.{{relname}}'],
          ],
          's',
          'Time until the newest partition\'s upper bound: below the line (7 days), run the partition maintenance job before rows fall into DEFAULT.',
          threshold=kpi.partition_coverage_min_seconds,
        ),
        g.panel(
          'Oldest partition age',
          [
            ['pg_partitioned_table_oldest_partition_age_seconds{%s}' % T, '{{schemaname}}.{{relname}}'],
          ],
          's',
          'Age of the oldest partition\'s lower bound: with retention applied it stays near the policy (90 days raw).',
        ),
        g.panel(
          'Rows in DEFAULT partitions',
          [['pg_partitioned_table_default_rows{%s}' % T, '{{schemaname}}.{{relname}}']],
          'short',
          'Rows that matched no partition\'s range. Should stay 0.',
        ),
        g.panel(
          'Partitioned table sizes',
          [['pg_partitioned_table_size_bytes{%s}' % T, '{{schemaname}}.{{relname}}']],
          'bytes',
          'Size of each partitioned table, all partitions rolled up to the root.',
        ),
      ];
      g.dashboard(
        'pgkpi-relations',
        'pgkpi / Indexes, tables and partitions',
        'Whether the optimization plan is applied and working: index use, scans, sizes, bloat and partition coverage.',
        panels,
        g.variables(datname=false),
      ),
  },
}
