//! `webhooks`: delivery KPIs of the application's webhook tables.
//!
//! Configured by `[webhooks]`; off until `deliveries_table` is set. Every other key defaults
//! to the shape of the migrations' `public.webhook_deliveries` (status pending / retrying /
//! delivered / failed, `attempt_count`, `next_retry_at`) and `public.webhook_event_logs`
//! (`processed`, `created_at`), so the audited application needs two lines; other shapes set
//! their columns and predicates (same rules as `[[queues]]`: quoted identifiers, predicates
//! without `;` or comments, read-only session).
//!
//! Success rates are exported as the counts they are made of (over `window`, by creation
//! time) plus the ratio, so that PromQL can aggregate the counts across targets:
//! * first attempts: deliveries with at least one attempt; succeeded = delivered on attempt 1;
//! * retried deliveries: first attempt failed and the delivery is settled (delivered on a
//!   later attempt, or given up); succeeded = delivered. Deliveries still retrying are not
//!   settled and count in neither.

pub mod settings;

use std::time::Duration;

use tokio_postgres::error::SqlState;

use self::settings::MAX_STATUSES;
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{Family, FamilyDesc, MetricType};

pub fn spec() -> Spec {
    Spec {
        name: "webhooks",
        description: "Webhook deliveries ([webhooks]): by status, overdue retries, first-attempt and retry success, event lag.",
        default_interval: Duration::from_secs(30),
        enabled_by_default: true,
        lane: super::Lane::Main,
        families,
        build: |ctx: &BuildContext| {
            let config = ctx.webhooks;
            Box::new(Webhooks {
                // validate() ran at start-up.
                statements: config
                    .deliveries_table
                    .as_ref()
                    .and_then(|_| config.statements().ok())
                    .unwrap_or_default(),
                window: config.window,
                dropped: 0,
            })
        },
    }
}

fn families() -> Vec<FamilyDesc> {
    use MetricType::Gauge;
    vec![
        FamilyDesc::new("app_webhook_deliveries", Gauge, &["target", "status"], "Deliveries created in the window, by status (at most 20 statuses)."),
        FamilyDesc::new("app_webhook_retries_pending", Gauge, &["target"], "Deliveries waiting for a retry."),
        FamilyDesc::new("app_webhook_retries_overdue", Gauge, &["target"], "Retries due for longer than overdue_grace: the retry worker is stalled or behind."),
        FamilyDesc::new("app_webhook_retry_overdue_seconds", Gauge, &["target"], "How far the most overdue retry is past its due time (0 when none is due)."),
        FamilyDesc::new("app_webhook_window_seconds", Gauge, &["target"], "The window the success counts below cover (deliveries created this recently)."),
        FamilyDesc::new("app_webhook_first_attempts", Gauge, &["target"], "Deliveries in the window with at least one attempt."),
        FamilyDesc::new("app_webhook_first_attempts_succeeded", Gauge, &["target"], "Deliveries in the window delivered on their first attempt."),
        FamilyDesc::new("app_webhook_first_attempt_success_ratio", Gauge, &["target"], "first_attempts_succeeded / first_attempts (absent without attempts)."),
        FamilyDesc::new("app_webhook_retried_deliveries", Gauge, &["target"], "Deliveries in the window whose first attempt failed and that are settled (delivered later, or given up)."),
        FamilyDesc::new("app_webhook_retried_deliveries_succeeded", Gauge, &["target"], "Retried deliveries in the window that were delivered in the end."),
        FamilyDesc::new("app_webhook_retry_success_ratio", Gauge, &["target"], "retried_deliveries_succeeded / retried_deliveries (absent when none settled)."),
        FamilyDesc::new("app_webhook_failing_deliveries", Gauge, &["target", "webhook_id"], "Deliveries in the window retrying or given up, for the top_failing webhooks with the most."),
        FamilyDesc::new("app_webhook_events_unprocessed", Gauge, &["target"], "Incoming events not processed yet."),
        FamilyDesc::new("app_webhook_event_lag_seconds", Gauge, &["target"], "Age of the oldest unprocessed event (0 when none)."),
    ]
}

struct Webhooks {
    /// Empty when `[webhooks]` is not configured: the collector then reads nothing.
    statements: Vec<(&'static str, String)>,
    window: Duration,
    /// Statuses beyond the cap in the last run.
    dropped: u64,
}

impl Collector for Webhooks {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            if self.statements.is_empty() {
                return Ok(Vec::new());
            }
            let mut families: Vec<Family> = families()
                .into_iter()
                .map(|d| Family::new(d.name, d.help, d.kind))
                .collect();
            let mut set = |name: &str, labels: &[(&str, &str)], value: f64| {
                if let Some(f) = families.iter_mut().find(|f| f.name == name) {
                    f.push(labels, value);
                }
            };
            set("app_webhook_window_seconds", &[], self.window.as_secs_f64());
            for (what, sql) in &self.statements {
                let rows = match session.client.query(sql.as_str(), &[]).await {
                    Ok(rows) => rows,
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                        return Err(CollectError::skipped(
                            SkipReason::MissingTable,
                            format!("{}; create the table or fix [webhooks]", crate::target::describe(&e)),
                        ))
                    }
                    Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                        return Err(CollectError::skipped(
                            SkipReason::Permission,
                            format!("{}; grant the monitoring role SELECT on the webhook tables (migrations 001/008 do)", crate::target::describe(&e)),
                        ))
                    }
                    Err(e) => return Err(CollectError::failed(format!("{what}: {}", crate::target::describe(&e)))),
                };
                match *what {
                    "status" => {
                        self.dropped = rows.len().saturating_sub(MAX_STATUSES) as u64;
                        for row in rows.iter().take(MAX_STATUSES) {
                            let status: Option<String> = row.get(0);
                            set(
                                "app_webhook_deliveries",
                                &[("status", status.as_deref().unwrap_or(""))],
                                row.get(1),
                            );
                        }
                    }
                    "retries" => {
                        let row = &rows[0];
                        set("app_webhook_retries_pending", &[], row.get(0));
                        set("app_webhook_retries_overdue", &[], row.get(1));
                        set(
                            "app_webhook_retry_overdue_seconds",
                            &[],
                            row.get::<_, f64>(2).max(0.0),
                        );
                    }
                    "window" => {
                        let row = &rows[0];
                        let (first, first_ok, retried, retried_ok): (f64, f64, f64, f64) =
                            (row.get(0), row.get(1), row.get(2), row.get(3));
                        set("app_webhook_first_attempts", &[], first);
                        set("app_webhook_first_attempts_succeeded", &[], first_ok);
                        set("app_webhook_retried_deliveries", &[], retried);
                        set("app_webhook_retried_deliveries_succeeded", &[], retried_ok);
                        if first > 0.0 {
                            set(
                                "app_webhook_first_attempt_success_ratio",
                                &[],
                                first_ok / first,
                            );
                        }
                        if retried > 0.0 {
                            set("app_webhook_retry_success_ratio", &[], retried_ok / retried);
                        }
                    }
                    "failing" => {
                        for row in &rows {
                            let id: Option<String> = row.get(0);
                            set(
                                "app_webhook_failing_deliveries",
                                &[("webhook_id", id.as_deref().unwrap_or(""))],
                                row.get(1),
                            );
                        }
                    }
                    _ => {
                        let row = &rows[0];
                        set("app_webhook_events_unprocessed", &[], row.get(0));
                        set(
                            "app_webhook_event_lag_seconds",
                            &[],
                            row.get::<_, f64>(1).max(0.0),
                        );
                    }
                }
            }
            Ok(families)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        (!self.statements.is_empty()).then_some(self.dropped)
    }
}
