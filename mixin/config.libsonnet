// pgkpi's monitoring mixin configuration. Override any key with
//   (import 'mixin.libsonnet') + { _config+:: { selectorLabels: { job: 'postgres' } } }
// and render; alerts/README.md lists the keys and shows a render with another config.
{
  _config+:: {
    // Label matchers every pgkpi series in the rules and dashboards is selected by: the scrape
    // job, plus any extra label that tells this pgkpi apart (cluster, env). Equality matchers,
    // so the promtool tests can give their input series the same labels.
    selectorLabels: { job: 'pgkpi' },
    // The PromQL form of selectorLabels, derived; override it only for a regex matcher
    // (job=~"pgkpi|pgkpi-eu"), at the cost of the promtool tests rendered with it.
    pgkpiSelector: std.join(', ', [
      '%s="%s"' % [k, self.selectorLabels[k]]
      for k in std.objectFields(self.selectorLabels)
    ]),

    // The labels every aggregation in the rules keeps besides its own (target, datname...):
    // the scrape's instance and job and the selector's labels, so that a cluster or env label
    // survives into the recording rules and the alerts. Derived.
    aggregationLabels: std.join(', ', std.set(['instance', 'job'] + std.objectFields(self.selectorLabels))),

    // Each alert's runbook_url: this pattern with the lower-cased alert name (an anchor of
    // docs/runbooks.md). Absolute, so the link works from Alertmanager and Grafana.
    runbookURLPattern: 'https://github.com/pgkpi/pgkpi/blob/main/docs/runbooks.md#%s',

    // The KPI targets. Each becomes a constant recording rule pgkpi_kpi:<key> (alerts/kpi.yml)
    // that the alerts compare against with `on () group_left ()` and that other tools query
    // (pgkpi report): keep the keys, change the numbers.
    kpi: {
      statement_p95_target_seconds: 0.020,  // the seed documents' "database query time < 20 ms"
      cache_hit_ratio_min: 0.90,  // "cache hit ratio should be > 90%"
      connections_used_ratio_max: 0.85,
      lock_wait_max_seconds: 20,
      long_transaction_max_seconds: 300,
      idle_in_transaction_max_seconds: 60,
      replication_lag_max_seconds: 30,
      slot_retained_wal_max_bytes: 1073741824,  // 1 GiB kept for an inactive slot
      archive_age_max_seconds: 3600,
      xid_wraparound_ratio_max: 0.5,
      dead_rows_ratio_max: 0.2,
      partition_coverage_min_seconds: 604800,  // at least 7 days of future partitions
      queue_lag_max_seconds: 120,  // oldest ready notification waits at most 2 minutes
      webhook_retry_success_min: 0.8,  // share of retried webhook deliveries that end delivered
      backup_age_max_seconds: 93600,  // 26 h: a daily full backup, with 2 hours of slack
      restore_test_age_max_seconds: 3024000,  // 35 days: a monthly restore test, with slack
      volume_free_ratio_min: 0.10,  // free space of the data or WAL file system
      volume_fill_horizon_seconds: 86400,  // alert when the file system fills within 24 h at the current growth
      volume_fill_free_ratio_max: 0.40,  // ... and is already under 40 % free (a young or bursty trend is noise above)
      pool_wait_max_seconds: 1,  // a client waits at most 1 s for a pgBouncer server connection
      pooler_client_conn_ratio_max: 0.85,  // share of pgBouncer's max_client_conn in use
    },

    // Grafana: tags (the dashboards link to each other by the first one), refresh, time range.
    dashboardTags: ['pgkpi', 'postgresql'],
    dashboardRefresh: '30s',
    dashboardTimeFrom: 'now-6h',
    dashboardTimezone: 'browser',
  },
}
