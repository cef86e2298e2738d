// The query performance dashboard (dashboards/pgkpi-queries.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-queries.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local extra = [
        g.queryVariable('workload', 'Workload', 'label_values(pg_statement_latency_seconds_count{%s}, workload)' % T),
      ];
      local W = TD + ', workload=~"$workload"';
      local panels = [
        g.row('Latency'),
        shared.p95ByWorkload,
        g.panel(
          'Median latency by workload',
          [
            ['histogram_quantile(0.5, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{%s}[%s])))' % [W, RI], '{{workload}} ({{datname}})'],
            ['max by (target, datname, workload) (pg_statement_latency_window_seconds{%s, quantile="0.5"})' % W, 'measured {{workload}} ({{datname}})'],
          ],
          's',
          'Median execution time per workload: from the histogram, and measured (the exact median of the durations the server logged over pgkpi\'s window, with the log source on).',
        ),
        g.panel(
          'Latency source',
          [
            ['max by (target, datname, workload) (pg_statement_latency_source{%s, source="log"})' % W, 'from the log {{workload}} ({{datname}})'],
            ['max by (target, datname, workload) (pg_statement_latency_interval_samples{%s})' % W, 'logged durations per interval {{workload}} ({{datname}})'],
          ],
          'short',
          '1 when the server log\'s sampled durations shaped the workload\'s histogram in its last interval (0: estimated from pg_stat_statements), and how many durations that interval had. pg_statement_log_source_status says why the log is not used.',
        ),
        g.panel(
          'Mean latency by workload',
          [
            ['sum by (target, datname, workload) (rate(pg_statement_latency_seconds_sum{%s}[%s])) / sum by (target, datname, workload) (rate(pg_statement_latency_seconds_count{%s}[%s]))' % [W, RI, W, RI], '{{workload}} ({{datname}})'],
          ],
          's',
          'Exact mean execution time per workload (no estimation: total time / calls).',
        ),
        g.panel(
          'Calls per second by workload',
          [
            ['sum by (target, datname, workload) (rate(pg_statement_latency_seconds_count{%s}[%s]))' % [W, RI], '{{workload}} ({{datname}})'],
          ],
          'ops',
          'Statement executions per second per workload.',
        ),
        g.panel(
          'Slow executions per second',
          [
            ['sum by (target, datname, workload) (rate(pg_statement_slow_calls_total{%s}[%s]))' % [W, RI], '{{workload}} ({{datname}})'],
          ],
          'ops',
          'Executions slower than statements.slow_threshold, estimated from the same distribution as the histogram.',
        ),
        g.row('Top statements'),
        g.panel(
          'Top statements by execution time',
          [
            ['topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_exec_seconds_total{%s}[%s])))' % [TD, RI], '{{queryid}} ({{datname}})'],
          ],
          's',
          'Seconds of execution per second for the 10 statements using the most time (top statements of each interval; text via pg_stat_statements_query_info when enabled).',
        ),
        g.panel(
          'Top statements by rows',
          [
            ['topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_rows_total{%s}[%s])))' % [TD, RI], '{{queryid}} ({{datname}})'],
          ],
          'short',
          'Rows returned or affected per second by the busiest statements.',
        ),
        g.panel(
          'Shared blocks read from disk by statement',
          [
            ['topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_shared_blks_read_total{%s}[%s])))' % [TD, RI], '{{queryid}} ({{datname}})'],
          ],
          'short',
          'Blocks per second read outside shared buffers: the statements behind a low cache hit ratio.',
        ),
        g.panel(
          'I/O time of all statements',
          [
            ['sum by (target, datname) (rate(pg_stat_statements_all_io_read_seconds_total{%s}[%s]))' % [TD, RI], 'read {{datname}}'],
            ['sum by (target, datname) (rate(pg_stat_statements_all_io_write_seconds_total{%s}[%s]))' % [TD, RI], 'write {{datname}}'],
          ],
          's',
          'Seconds per second spent reading/writing blocks by statements (needs track_io_timing).',
        ),
        g.row('pg_stat_statements health'),
        g.panel(
          'pg_stat_statements fill and evictions',
          [['pg_stat_statements_fill_ratio{%s}' % T, 'fill {{target}}']],
          'percentunit',
          'Entries over pg_stat_statements.max. Near 100% entries are evicted (see PostgresStatementsDeallocated) and their statistics lost.',
        ),
        g.panel(
          'Statements left out of the top N',
          [['pg_stat_statements_top_omitted{%s}' % T, '{{target}}']],
          'short',
          'Statements active in the last interval that were not exported per statement (beyond statements.top_n); they still count in the histograms and totals.',
        ),
      ];
      g.dashboard(
        'pgkpi-queries',
        'pgkpi / Query performance',
        'Latency distributions by workload and top statements from pg_stat_statements.',
        panels,
        g.variables(extra=extra),
      ),
  },
}
