// Panels shared by the overview and the area dashboards: function of the helpers of
// lib/grafana.libsonnet (bound to the mixin's _config).
function(g) {
  local T = g.T,
  local TD = g.TD,
  local RI = g.RI,
  local kpi = g.kpi,

  p95ByWorkload: g.panel(
      'Statement latency p95 / p99 by workload',
      [
        ['histogram_quantile(0.95, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{%s}[%s])))' % [TD, RI], 'p95 {{workload}} ({{datname}})'],
        ['histogram_quantile(0.99, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{%s}[%s])))' % [TD, RI], 'p99 {{workload}} ({{datname}})'],
        ['max by (target, datname, workload) (pg_statement_latency_window_seconds{%s, quantile="0.95"})' % TD, 'p95 measured {{workload}} ({{datname}})'],
        ['max by (target, datname, workload) (pg_statement_latency_window_seconds{%s, quantile="0.99"})' % TD, 'p99 measured {{workload}} ({{datname}})'],
      ],
      's',
      'Execution-time percentiles per workload. p95/p99: from the histogram, shaped by the durations the server logged when the log source is on (see the latency source panel), else estimated from pg_stat_statements deltas. p95/p99 measured: the exact percentiles of the logged durations over pgkpi\'s window (statements.log.window), per target and database only. See docs/statements.md. The red line is the KPI target (alerts/kpi.yml, 20 ms by default).',
      threshold=kpi.statement_p95_target_seconds,
    ),
  qpsAndLockWaits: g.panel(
      'QPS and lock-wait seconds per second',
      [
        ['sum by (target, datname) (rate(pg_stat_statements_all_calls_total{%s}[%s]))' % [TD, RI], 'statements/s {{datname}}'],
        ['sum by (target, datname) (rate(pg_lock_wait_seconds_total{%s}[%s]))' % [TD, RI], 'sessions waiting on locks {{datname}}'],
      ],
      'short',
      'Statements executed per second next to the average number of sessions waiting on a lock (rate of pg_lock_wait_seconds_total). The seed KPI: QPS grows without lock waits growing.',
    ),
  cacheHit: g.panel(
      'Cache hit ratio',
      [
        ['sum by (target, datname) (rate(pg_stat_database_blks_hit_total{%s}[%s])) / (sum by (target, datname) (rate(pg_stat_database_blks_hit_total{%s}[%s])) + sum by (target, datname) (rate(pg_stat_database_blks_read_total{%s}[%s])))' % [TD, RI, TD, RI, TD, RI], '{{datname}}'],
      ],
      'percentunit',
      'Share of block reads served from shared buffers. Below the KPI line (90%) the working set no longer fits memory or queries scan too much.',
      threshold=kpi.cache_hit_ratio_min,
      minZero=false,
    ),
  connections: g.panel(
      'Connections used / usable',
      [
        ['pg_connections_used{%s} / clamp_min(pg_connections_max{%s} - pg_connections_superuser_reserved{%s}, 1)' % [T, T, T], '{{target}}'],
      ],
      'percentunit',
      'Client sessions over max_connections minus the superuser reserve. The red line is the alert threshold; past 100% connections are refused.',
      threshold=kpi.connections_used_ratio_max,
    ),
  databaseGrowth: g.panel(
      'Database size growth per day',
      [['deriv(pg_database_size_bytes{%s}[1h]) * 86400' % TD, '{{datname}}']],
      'bytes',
      'Growth rate of each database (deriv over the last hour, scaled to a day). Sizes are sampled every 5 minutes by the database_size collector.',
      minZero=false,
    ),
  lockPanels: [
      g.panel(
        'Blocked sessions and root blockers',
        [
          ['pg_blocking_blocked_sessions{%s}' % T, 'blocked {{target}}'],
          ['pg_blocking_root_blockers{%s}' % T, 'root blockers {{target}}'],
          ['pg_blocking_max_depth{%s}' % T, 'max chain depth {{target}}'],
        ],
        'short',
        'From pg_blocking_pids(): sessions waiting behind another session, sessions at the root of a blocking tree, and the longest chain. Any value above 0 for long is what PostgresLockWaits pages on.',
      ),
      g.panel(
        'Oldest lock wait',
        [['pg_lock_oldest_wait_seconds{%s}' % T, '{{target}}']],
        's',
        'How long the longest-waiting session has waited for a lock (pg_locks.waitstart). The red line is the paging threshold.',
        threshold=kpi.lock_wait_max_seconds,
      ),
    ],
  dbPanels: [
      g.panel(
        'Transactions per second',
        [
          ['sum by (target, datname) (rate(pg_stat_database_xact_commit_total{%s}[%s]))' % [TD, RI], 'commits {{datname}}'],
          ['sum by (target, datname) (rate(pg_stat_database_xact_rollback_total{%s}[%s]))' % [TD, RI], 'rollbacks {{datname}}'],
        ],
        'ops',
        'Commits and rollbacks per second (pg_stat_database).',
      ),
      g.panel(
        'Sessions by state',
        [['sum by (target, state) (pg_stat_activity_sessions{%s})' % T, '{{state}}']],
        'short',
        'Client sessions by state. Many \'idle in transaction\' sessions hold locks; many \'idle\' ones mean oversized client pools.',
        stack=true,
      ),
      g.panel(
        'Oldest transaction, idle-in-transaction and query',
        [
          ['pg_oldest_transaction_age_seconds{%s}' % T, 'transaction {{target}}'],
          ['pg_oldest_idle_in_transaction_seconds{%s}' % T, 'idle in transaction {{target}}'],
          ['pg_oldest_query_age_seconds{%s}' % T, 'query {{target}}'],
        ],
        's',
        'Ages of the oldest open transaction, idle-in-transaction session and running query (pgkpi\'s own sessions excluded). Long transactions hold back vacuum.',
        threshold=kpi.long_transaction_max_seconds,
      ),
      g.panel(
        'Temporary files written',
        [
          ['sum by (target, datname) (rate(pg_stat_database_temp_bytes_total{%s}[%s]))' % [TD, RI], '{{datname}}'],
        ],
        'Bps',
        'Bytes per second spilled to temporary files by sorts and hashes exceeding work_mem.',
      ),
      g.panel(
        'Deadlocks',
        [
          ['sum by (target, datname) (increase(pg_stat_database_deadlocks_total{%s}[%s]))' % [TD, RI], '{{datname}}'],
        ],
        'short',
        'Deadlocks detected per interval; each cancelled a transaction. PostgreSQL does not count lock_timeout errors separately.',
      ),
    ],
  queueKpis: [
      g.panel(
        'Queue drain time',
        [
          ['sum without (state) (app_queue_depth{%s, state="ready"}) / clamp_min(rate(app_queue_processed_total{%s}[%s]), 1e-9)' % [T, T, RI], '{{queue}}'],
        ],
        's',
        'Ready items divided by the processing rate: how long the queue would take to empty at the current pace (the seed KPI \'tiempo de vaciado de cola\'; recording rule app_queue:drain_seconds).',
      ),
      g.panel(
        'Queue lag (oldest ready item)',
        [['app_queue_lag_seconds{%s}' % T, '{{queue}}']],
        's',
        'Age of the oldest item ready to be processed; bounded while consumers keep up.',
        threshold=kpi.queue_lag_max_seconds,
      ),
      g.panel(
        'Webhook retry success rate',
        [
          ['app_webhook_retry_success_ratio{%s}' % T, 'retries {{target}}'],
          ['app_webhook_first_attempt_success_ratio{%s}' % T, 'first attempts {{target}}'],
        ],
        'percentunit',
        'Share of retried webhook deliveries (and of first attempts) that ended delivered over the configured window (the seed KPI \'tasa de retries exitosos\').',
        threshold=kpi.webhook_retry_success_min,
        minZero=false,
      ),
    ],
  poolingPanels: // pgBouncer targets (kind = "pgbouncer"): read next to the database's own connections.
    local pool = '%s, database!="pgbouncer"' % T;
    [
      g.panel(
        'Pool clients waiting for a server',
        [
          ['sum by (target, database, user) (pgbouncer_pool_client_connections{%s, state="waiting"})' % pool, '{{database}}/{{user}}'],
        ],
        'short',
        'Clients queued in pgBouncer for a server connection, per pool. Any lasting queue adds its wait to every query; see the longest wait beside it.',
        width=8,
      ),
      g.panel(
        'Longest client wait per pool',
        [['pgbouncer_pool_max_wait_seconds{%s}' % pool, '{{database}}/{{user}}']],
        's',
        'How long the oldest waiting client of each pool has waited. The red line is the PgbouncerClientsWaiting threshold.',
        threshold=kpi.pool_wait_max_seconds,
        width=8,
      ),
      g.panel(
        'Wait share of transaction time',
        [
          ['rate(pgbouncer_client_wait_seconds_total{%s}[%s]) / clamp_min(rate(pgbouncer_transaction_seconds_total{%s}[%s]), 1e-9)' % [pool, RI, pool, RI], '{{database}}'],
        ],
        'percentunit',
        'Share of the time clients spent in transactions through pgBouncer that was queueing for a server (pgBouncer 1.18 counts the wait inside the transaction time). Near 0 the pool is large enough.',
        width=8,
      ),
      g.panel(
        'Server utilization per pool',
        [
          ['max without (state) (pgbouncer_pool_server_connections{%s, state="active"}) / on (instance, job, target, database) group_left () clamp_min(pgbouncer_database_pool_size{%s}, 1)' % [pool, pool], '{{database}}/{{user}}'],
        ],
        'percentunit',
        'Active server connections of each pool over its pool size. At 100% with clients waiting the pool is saturated (PgbouncerPoolSaturated).',
        threshold=1,
      ),
      g.panel(
        'Pooler client connections / max_client_conn',
        [
          ['pgbouncer_client_connections{%s} / pgbouncer_config_max_client_conn{%s}' % [T, T], '{{target}}'],
        ],
        'percentunit',
        'Client connections pgBouncer holds over max_client_conn; past 100% it refuses new clients.',
        threshold=kpi.pooler_client_conn_ratio_max,
      ),
    ],
}
