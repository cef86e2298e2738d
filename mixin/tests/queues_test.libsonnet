// promtool unit tests of alerts/queues.yml, rendered to alerts/tests/queues_test.yml with the same _config as
// the rules: input series carry the selector's labels, expected alerts its labels and runbook URLs.
{
  local sel = $._config.pgkpiSelector,
  local labels = $._config.selectorLabels,
  ruleTests+:: {
    'queues_test.yml': {
      rule_files: [
        '../kpi.yml',
        '../queues.yml',
      ],
      evaluation_interval: '1m',
      tests: [
        {
          name: 'queue lag, expired leases and dead items',
          interval: '1m',
          input_series: [
            {
              series: 'app_queue_lag_seconds{%s,instance="i",target="app",queue="notifications"}' % sel,
              values: '10 200x30',
            },
            {
              series: 'app_queue_lag_seconds{%s,instance="i",target="app",queue="emails"}' % sel,
              values: '5x10',
            },
            {
              series: 'app_queue_expired_leases{%s,instance="i",target="app",queue="notifications"}' % sel,
              values: '0 3x30',
            },
            {
              series: 'app_queue_expired_leases{%s,instance="i",target="app",queue="emails"}' % sel,
              values: '0x10',
            },
            {
              series: 'app_queue_depth{%s,instance="i",target="app",queue="notifications",state="dead"}' % sel,
              values: '4x16 9x10',
            },
            {
              series: 'app_queue_depth{%s,instance="i",target="app",queue="emails",state="dead"}' % sel,
              values: '2x10',
            },
          ],
          alert_rule_test: [
            { eval_time: '3m', alertname: 'AppQueueLagHigh', exp_alerts: [] },
            {
              eval_time: '8m',
              alertname: 'AppQueueLagHigh',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'critical', instance: 'i', target: 'app', queue: 'notifications' },
                  exp_annotations: {
                    summary: 'Queue notifications on app: oldest ready item waits 3m 20s',
                    description: 'Work is not being picked up fast enough: consumers are down, too few, or blocked. Compare app_queue_processed_total with app_queue_inserted_total.',
                    runbook_url: $._config.runbookURLPattern % 'appqueuelaghigh',
                  },
                },
              ],
            },
            { eval_time: '3m', alertname: 'AppQueueExpiredLeases', exp_alerts: [] },
            {
              eval_time: '8m',
              alertname: 'AppQueueExpiredLeases',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app', queue: 'notifications' },
                  exp_annotations: {
                    summary: 'Queue notifications on app has 3 expired leases',
                    description: 'Items are leased past their lease timeout: their worker died or hangs. Until reclaimed they are processed by nobody.',
                    runbook_url: $._config.runbookURLPattern % 'appqueueexpiredleases',
                  },
                },
              ],
            },
            { eval_time: '16m', alertname: 'AppQueueDeadItems', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'AppQueueDeadItems',
              exp_alerts: [
                {
                  exp_labels: labels + {
                    severity: 'warning',
                    instance: 'i',
                    target: 'app',
                    queue: 'notifications',
                    state: 'dead',
                  },
                  exp_annotations: {
                    summary: 'Queue notifications on app: 5 items went dead in 15 minutes',
                    description: 'Items exhausted their retries; what they were meant to do (a notification) did not happen.',
                    runbook_url: $._config.runbookURLPattern % 'appqueuedeaditems',
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'webhook retries failing and overdue',
          interval: '1m',
          input_series: [
            {
              series: 'app_webhook_retry_success_ratio{%s,instance="i",target="app"}' % sel,
              values: '0.9 0.5x30',
            },
            {
              series: 'app_webhook_retried_deliveries{%s,instance="i",target="app"}' % sel,
              values: '40x30',
            },
            // Low ratio but only 3 retries: too few to judge.
            {
              series: 'app_webhook_retry_success_ratio{%s,instance="i",target="small"}' % sel,
              values: '0.3x30',
            },
            {
              series: 'app_webhook_retried_deliveries{%s,instance="i",target="small"}' % sel,
              values: '3x30',
            },
            {
              series: 'app_webhook_retries_overdue{%s,instance="i",target="app"}' % sel,
              values: '0 0 7x20',
            },
          ],
          alert_rule_test: [
            { eval_time: '10m', alertname: 'AppWebhookRetrySuccessLow', exp_alerts: [] },
            {
              eval_time: '20m',
              alertname: 'AppWebhookRetrySuccessLow',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: 'Only 50% of webhook retries on app succeed',
                    description: 'Retried deliveries mostly end failed: the receivers are down or reject the payload. See app_webhook_failing_deliveries for the webhooks behind it.',
                    runbook_url: $._config.runbookURLPattern % 'appwebhookretrysuccesslow',
                  },
                },
              ],
            },
            { eval_time: '8m', alertname: 'AppWebhookRetriesOverdue', exp_alerts: [] },
            {
              eval_time: '15m',
              alertname: 'AppWebhookRetriesOverdue',
              exp_alerts: [
                {
                  exp_labels: labels + { severity: 'warning', instance: 'i', target: 'app' },
                  exp_annotations: {
                    summary: '7 webhook retries on app are overdue',
                    description: 'Deliveries are past their next retry time by more than the grace period: the retry worker is stalled.',
                    runbook_url: $._config.runbookURLPattern % 'appwebhookretriesoverdue',
                  },
                },
              ],
            },
          ],
        },
      ],
    },
  },
}
