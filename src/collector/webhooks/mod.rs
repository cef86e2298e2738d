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
use tokio_postgres::Row;

use self::settings::{Purpose, MAX_STATUSES};
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, SkipReason, Spec};
use crate::metric::{describe_all, Family, FamilyDesc, Metric};

pub fn spec() -> Spec {
    Spec {
        name: "webhooks",
        description: "Webhook deliveries ([webhooks]): by status, overdue retries, first-attempt and retry success, event lag.",
        default_interval: Duration::from_secs(30),
        enabled_by_default: true,
        lane: super::Lane::Main,
        kind: crate::config::TargetKind::Postgres,
        scope: crate::config::Scope::Database,
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

crate::metric::metrics! {
    DELIVERIES = gauge("app_webhook_deliveries", &["target", "status"], "Deliveries created in the window, by status (at most 20 statuses).");
    RETRIES_PENDING = gauge("app_webhook_retries_pending", &["target"], "Deliveries waiting for a retry.");
    RETRIES_OVERDUE = gauge("app_webhook_retries_overdue", &["target"], "Retries due for longer than overdue_grace: the retry worker is stalled or behind.");
    RETRY_OVERDUE_SECONDS = gauge("app_webhook_retry_overdue_seconds", &["target"], "How far the most overdue retry is past its due time (0 when none is due).");
    WINDOW_SECONDS = gauge("app_webhook_window_seconds", &["target"], "The window the success counts below cover (deliveries created this recently).");
    FIRST_ATTEMPTS = gauge("app_webhook_first_attempts", &["target"], "Deliveries in the window with at least one attempt.");
    FIRST_ATTEMPTS_SUCCEEDED = gauge("app_webhook_first_attempts_succeeded", &["target"], "Deliveries in the window delivered on their first attempt.");
    FIRST_ATTEMPT_SUCCESS_RATIO = gauge("app_webhook_first_attempt_success_ratio", &["target"], "first_attempts_succeeded / first_attempts (absent without attempts).");
    RETRIED_DELIVERIES = gauge("app_webhook_retried_deliveries", &["target"], "Deliveries in the window whose first attempt failed and that are settled (delivered later, or given up).");
    RETRIED_DELIVERIES_SUCCEEDED = gauge("app_webhook_retried_deliveries_succeeded", &["target"], "Retried deliveries in the window that were delivered in the end.");
    RETRY_SUCCESS_RATIO = gauge("app_webhook_retry_success_ratio", &["target"], "retried_deliveries_succeeded / retried_deliveries (absent when none settled).");
    FAILING_DELIVERIES = gauge("app_webhook_failing_deliveries", &["target", "webhook_id"], "Deliveries in the window retrying or given up, for the top_failing webhooks with the most.");
    EVENTS_UNPROCESSED = gauge("app_webhook_events_unprocessed", &["target"], "Incoming events not processed yet.");
    EVENT_LAG = gauge("app_webhook_event_lag_seconds", &["target"], "Age of the oldest unprocessed event (0 when none).");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        DELIVERIES,
        RETRIES_PENDING,
        RETRIES_OVERDUE,
        RETRY_OVERDUE_SECONDS,
        WINDOW_SECONDS,
        FIRST_ATTEMPTS,
        FIRST_ATTEMPTS_SUCCEEDED,
        FIRST_ATTEMPT_SUCCESS_RATIO,
        RETRIED_DELIVERIES,
        RETRIED_DELIVERIES_SUCCEEDED,
        RETRY_SUCCESS_RATIO,
        FAILING_DELIVERIES,
        EVENTS_UNPROCESSED,
        EVENT_LAG,
    ])
}

struct Webhooks {
    /// Empty when `[webhooks]` is not configured: the collector then reads nothing.
    statements: Vec<(Purpose, String)>,
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
            // The snapshot serves families sorted by name, so their order here is free.
            let mut out = vec![WINDOW_SECONDS.family().with(&[], self.window.as_secs_f64())];
            for (purpose, sql) in &self.statements {
                let rows = session
                    .client
                    .query(sql.as_str(), &[])
                    .await
                    .map_err(|e| query_error(*purpose, &e))?;
                match purpose {
                    Purpose::Status => {
                        self.dropped = rows.len().saturating_sub(MAX_STATUSES) as u64;
                        out.push(by_label(
                            DELIVERIES,
                            "status",
                            &rows[..rows.len().min(MAX_STATUSES)],
                        ));
                    }
                    Purpose::Retries => {
                        let row = &rows[0];
                        out.extend([
                            RETRIES_PENDING.family().with(&[], row.get(0)),
                            RETRIES_OVERDUE.family().with(&[], row.get(1)),
                            RETRY_OVERDUE_SECONDS
                                .family()
                                .with(&[], row.get::<_, f64>(2).max(0.0)),
                        ]);
                    }
                    Purpose::Window => {
                        let row = &rows[0];
                        let (first, first_ok, retried, retried_ok): (f64, f64, f64, f64) =
                            (row.get(0), row.get(1), row.get(2), row.get(3));
                        out.extend([
                            FIRST_ATTEMPTS.family().with(&[], first),
                            FIRST_ATTEMPTS_SUCCEEDED.family().with(&[], first_ok),
                            RETRIED_DELIVERIES.family().with(&[], retried),
                            RETRIED_DELIVERIES_SUCCEEDED.family().with(&[], retried_ok),
                        ]);
                        if first > 0.0 {
                            out.push(
                                FIRST_ATTEMPT_SUCCESS_RATIO
                                    .family()
                                    .with(&[], first_ok / first),
                            );
                        }
                        if retried > 0.0 {
                            out.push(RETRY_SUCCESS_RATIO.family().with(&[], retried_ok / retried));
                        }
                    }
                    Purpose::Failing => {
                        out.push(by_label(FAILING_DELIVERIES, "webhook_id", &rows));
                    }
                    Purpose::Events => {
                        let row = &rows[0];
                        out.extend([
                            EVENTS_UNPROCESSED.family().with(&[], row.get(0)),
                            EVENT_LAG.family().with(&[], row.get::<_, f64>(1).max(0.0)),
                        ]);
                    }
                }
            }
            Ok(out)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        (!self.statements.is_empty()).then_some(self.dropped)
    }
}

/// A family of (label value, count) rows: one series per row, a NULL value as "".
fn by_label(metric: Metric, label: &str, rows: &[Row]) -> Family {
    let mut family = metric.family();
    for row in rows {
        let value: Option<String> = row.get(0);
        family.push(&[(label, value.as_deref().unwrap_or(""))], row.get(1));
    }
    family
}

/// A failed statement as the collector reports it: a missing table or a missing grant skips
/// the collector with the one hint that fits; anything else fails this run.
fn query_error(purpose: Purpose, e: &tokio_postgres::Error) -> CollectError {
    match e.code() {
        Some(&SqlState::UNDEFINED_TABLE) => CollectError::skipped(
            SkipReason::MissingTable,
            format!(
                "{}; create the table or fix [webhooks]",
                crate::target::describe(e)
            ),
        ),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => CollectError::skipped(
            SkipReason::Permission,
            format!(
                "{}; grant the monitoring role SELECT on the webhook tables (migrations 001/008 do)",
                crate::target::describe(e)
            ),
        ),
        _ => CollectError::failed(format!("{purpose}: {}", crate::target::describe(e))),
    }
}
