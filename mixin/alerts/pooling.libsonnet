// pgBouncer targets (kind = "pgbouncer"): clients queueing for a server, saturated pools, the
// pooler's own client limit, and the pooler being unreachable. Thresholds in kpi.yml.
local text = import '../lib/text.libsonnet';

{
  ruleFiles+:: {
    'pooling.yml'+: { groups+: [
      {
        name: 'pgkpi-pooling',
        rules: [
          {
            alert: 'PgbouncerClientsWaiting',
            expr: |||
              pgbouncer_pool_max_wait_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:pool_wait_max_seconds
            ||| % $._config,
            'for': '2m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Clients of pool {{ $labels.database }}/{{ $labels.user }} on {{ $labels.target }} wait {{ $value | humanizeDuration }} for a server',
              description: 'The oldest client of the pool has waited longer than the %s target for a server connection for 2 minutes: every query through the pool pays that wait on top of its own time.' % text.duration($._config.kpi.pool_wait_max_seconds),
            },
          },
          {
            alert: 'PgbouncerPoolSaturated',
            expr: |||
              (
                max without (state) (pgbouncer_pool_server_connections{%(pgkpiSelector)s, state="active"})
                >= on (instance, job, target, database) group_left ()
                pgbouncer_database_pool_size{%(pgkpiSelector)s}
              )
              and on (instance, job, target, database, user)
              pgbouncer_pool_client_connections{%(pgkpiSelector)s, state="waiting"} > 0
            ||| % $._config,
            'for': '30s',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Pool {{ $labels.database }}/{{ $labels.user }} on {{ $labels.target }} is saturated',
              description: 'Every server connection the pool may open is busy ({{ $value }}) while clients wait for one: the pool size, not PostgreSQL, now limits throughput and adds queueing to every query.',
            },
          },
          {
            alert: 'PgbouncerClientConnectionsNearMax',
            expr: |||
              pgbouncer_client_connections{%(pgkpiSelector)s} / on (%(aggregationLabels)s, target) pgbouncer_config_max_client_conn{%(pgkpiSelector)s}
              > on () group_left () pgkpi_kpi:pooler_client_conn_ratio_max
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'pgBouncer {{ $labels.target }} uses {{ $value | humanizePercentage }} of max_client_conn',
              description: 'Past max_client_conn pgBouncer refuses new clients outright. Find which application opens so many connections, or raise max_client_conn (and the open-file limit with it).',
            },
          },
          {
            alert: 'PgbouncerTargetDown',
            expr: |||
              pg_up{%(pgkpiSelector)s} == 0 and on (instance, target) pgkpi_target_info{%(pgkpiSelector)s, kind="pgbouncer"}
            ||| % $._config,
            'for': '1m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'pgBouncer target {{ $labels.target }} is unreachable',
              description: "pgkpi ({{ $labels.instance }}) has had no session to the pgBouncer admin console {{ $labels.target }} for 1 minute: the pooler is down, or refuses the monitoring user (stats_users); pgkpi's / page shows the error.",
            },
          },
        ],
      },
    ] },
  },
}
