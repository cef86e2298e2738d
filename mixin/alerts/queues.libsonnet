{
  ruleFiles+:: {
    'queues.yml'+: { groups+: [
      {
        name: 'pgkpi-queues-webhooks',
        rules: [
          {
            alert: 'AppQueueLagHigh',
            expr: |||
              app_queue_lag_seconds{%(pgkpiSelector)s} > on () group_left () pgkpi_kpi:queue_lag_max_seconds
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Queue {{ $labels.queue }} on {{ $labels.target }}: oldest ready item waits {{ $value | humanizeDuration }}',
              description: 'Work is not being picked up fast enough: consumers are down, too few, or blocked. Compare app_queue_processed_total with app_queue_inserted_total.',
            },
          },
          {
            alert: 'AppQueueExpiredLeases',
            expr: |||
              app_queue_expired_leases{%(pgkpiSelector)s} > 0
            ||| % $._config,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Queue {{ $labels.queue }} on {{ $labels.target }} has {{ $value }} expired leases',
              description: 'Items are leased past their lease timeout: their worker died or hangs. Until reclaimed they are processed by nobody.',
            },
          },
          {
            alert: 'AppQueueDeadItems',
            expr: |||
              app_queue_depth{%(pgkpiSelector)s, state="dead"} - app_queue_depth{%(pgkpiSelector)s, state="dead"} offset 15m > 0
            ||| % $._config,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Queue {{ $labels.queue }} on {{ $labels.target }}: {{ $value | humanize }} items went dead in 15 minutes',
              description: 'Items exhausted their retries; what they were meant to do (a notification) did not happen.',
            },
          },
          {
            alert: 'AppWebhookRetrySuccessLow',
            expr: |||
              app_webhook_retry_success_ratio{%(pgkpiSelector)s} < on () group_left () pgkpi_kpi:webhook_retry_success_min
              and on (instance, target) app_webhook_retried_deliveries{%(pgkpiSelector)s} >= 10
            ||| % $._config,
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Only {{ $value | humanizePercentage }} of webhook retries on {{ $labels.target }} succeed',
              description: 'Retried deliveries mostly end failed: the receivers are down or reject the payload. See app_webhook_failing_deliveries for the webhooks behind it.',
            },
          },
          {
            alert: 'AppWebhookRetriesOverdue',
            expr: |||
              app_webhook_retries_overdue{%(pgkpiSelector)s} > 0
            ||| % $._config,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $value }} webhook retries on {{ $labels.target }} are overdue',
              description: 'Deliveries are past their next retry time by more than the grace period: the retry worker is stalled.',
            },
          },
        ],
      },
    ] },
  },
}
