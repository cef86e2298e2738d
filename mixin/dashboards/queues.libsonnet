// The queues dashboard (dashboards/pgkpi-queues.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-queues.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local Q = T + ', queue=~"$queue"';
      local extra = [
        g.queryVariable('queue', 'Queue', 'label_values(app_queue_depth{%s}, queue)' % T),
      ];
      local panels = [g.row('Queues')]
      + shared.queueKpis[:2]
      + [
        g.panel(
          'Depth by state',
          [['app_queue_depth{%s}' % Q, '{{queue}} {{state}}']],
          'short',
          'Items per state (ready, scheduled, leased, dead, done). Counts over large tables may be planner estimates (app_queue_depth_estimated = 1) to avoid scans.',
          stack=true,
        ),
        g.panel(
          'Inserted and processed per second',
          [
            ['rate(app_queue_inserted_total{%s}[%s])' % [Q, RI], 'inserted {{queue}}'],
            ['rate(app_queue_processed_total{%s}[%s])' % [Q, RI], 'processed {{queue}}'],
          ],
          'ops',
          'Producer and consumer throughput. Processed below inserted for long means the backlog grows.',
        ),
        g.panel(
          'Expired leases and oldest lease',
          [
            ['app_queue_expired_leases{%s}' % Q, 'expired {{queue}}'],
            ['app_queue_oldest_lease_seconds{%s}' % Q, 'oldest lease age (s) {{queue}}'],
          ],
          'short',
          'Leases held past their timeout (a dead worker), and how long the oldest current lease has been held, in seconds.',
        ),
        g.panel(
          'Pending items by retry count',
          [['sum by (queue, le) (app_queue_retries_bucket{%s})' % Q, '≤ {{le}} retries {{queue}}']],
          'short',
          'Cumulative distribution of retry_count over pending items: a fat tail means items bounce between failure and retry.',
        ),
        g.row('Webhooks'),
        shared.queueKpis[2],
        g.panel(
          'Deliveries by status',
          [['app_webhook_deliveries{%s}' % T, '{{status}}']],
          'short',
          'Webhook deliveries created in the collector\'s window (default 1 h), per status.',
          stack=true,
        ),
        g.panel(
          'Pending and overdue retries',
          [
            ['app_webhook_retries_pending{%s}' % T, 'pending {{target}}'],
            ['app_webhook_retries_overdue{%s}' % T, 'overdue {{target}}'],
          ],
          'short',
          'Deliveries waiting for a retry, and those past their next retry time by more than the grace period (the retry worker is stalled).',
        ),
        g.panel(
          'Event log processing lag',
          [['app_webhook_event_lag_seconds{%s}' % T, '{{target}}']],
          's',
          'Age of the oldest unprocessed webhook event log entry.',
        ),
        g.panel(
          'Most failing webhooks',
          [['topk(5, app_webhook_failing_deliveries{%s})' % T, 'webhook {{webhook_id}}']],
          'short',
          'Webhooks with the most failed deliveries in the window (top K, bounded).',
          kind='table',
        ),
      ];
      g.dashboard(
        'pgkpi-queues',
        'pgkpi / Queues and webhooks',
        'Application queues (depth, lag, leases, retries) and webhook delivery KPIs.',
        panels,
        g.variables(datname=false, extra=extra),
      ),
  },
}
