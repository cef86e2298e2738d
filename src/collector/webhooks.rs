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

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;

use super::queues::{check_predicate, quote_column, quote_table};
use super::{BuildContext, CollectError, CollectFuture, Collector, Session, Spec};
use crate::config::duration;
use crate::metric::{Family, FamilyDesc, MetricType};

/// Most distinct status values exported.
const MAX_STATUSES: usize = 20;

/// `[webhooks]`: which tables hold webhook deliveries and events, and how to read them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Table of deliveries (one row per event and endpoint); unset = collector off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_table: Option<String>,
    /// Column whose values become the `status` label of app_webhook_deliveries.
    pub status_column: String,
    /// Column: attempts made so far.
    pub attempts_column: String,
    /// Column: when the next retry is due.
    pub next_retry_column: String,
    /// Column: when the delivery was created (the window applies to it).
    pub created_at_column: String,
    /// Column: the webhook (endpoint) a delivery belongs to, for the top failing ones.
    pub webhook_column: String,
    /// SQL predicate: delivered successfully.
    pub delivered_predicate: String,
    /// SQL predicate: failed, waiting for a retry.
    pub retrying_predicate: String,
    /// SQL predicate: given up (no more retries).
    pub failed_predicate: String,
    /// Table of incoming events processed into deliveries; unset = no event metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_table: Option<String>,
    /// SQL predicate: events not processed yet.
    pub events_unprocessed_predicate: String,
    /// Column: when the event arrived.
    pub events_created_at_column: String,
    /// Success rates and the top failing webhooks cover deliveries created this recently.
    #[serde(with = "duration")]
    pub window: Duration,
    /// A retry this far past its due time counts as overdue (the retry worker is stalled).
    #[serde(with = "duration")]
    pub overdue_grace: Duration,
    /// How many webhooks with the most failing deliveries get a series (0 = none).
    pub top_failing: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            deliveries_table: None,
            status_column: "status".into(),
            attempts_column: "attempt_count".into(),
            next_retry_column: "next_retry_at".into(),
            created_at_column: "created_at".into(),
            webhook_column: "webhook_id".into(),
            delivered_predicate: "status = 'delivered'".into(),
            retrying_predicate: "status = 'retrying'".into(),
            failed_predicate: "status = 'failed'".into(),
            events_table: None,
            events_unprocessed_predicate: "processed = false".into(),
            events_created_at_column: "created_at".into(),
            window: Duration::from_secs(3600),
            overdue_grace: Duration::from_secs(60),
            top_failing: 5,
        }
    }
}

impl WebhooksConfig {
    /// Checks names, predicates and bounds; messages name `webhooks.<key>`.
    pub fn validate(&self) -> Result<(), String> {
        if self.deliveries_table.is_none() && self.events_table.is_some() {
            return Err("webhooks.events_table needs webhooks.deliveries_table as well".into());
        }
        if self.deliveries_table.is_some() {
            self.statements()?;
        }
        if self.window.is_zero() {
            return Err("webhooks.window must be positive, e.g. \"1h\"".into());
        }
        if self.top_failing > 50 {
            return Err(format!(
                "webhooks.top_failing = {} is too many series; use at most 50 (default 5)",
                self.top_failing
            ));
        }
        Ok(())
    }

    /// The statements one poll runs, by purpose (deliveries_table must be set).
    pub fn statements(&self) -> Result<Vec<(&'static str, String)>, String> {
        let key = |k: &str| format!("webhooks.{k}");
        let t = quote_table(
            self.deliveries_table.as_deref().unwrap_or_default(),
            &key("deliveries_table"),
        )?;
        let status = quote_column(&self.status_column, &key("status_column"))?;
        let attempts = quote_column(&self.attempts_column, &key("attempts_column"))?;
        let next_retry = quote_column(&self.next_retry_column, &key("next_retry_column"))?;
        let created = quote_column(&self.created_at_column, &key("created_at_column"))?;
        let webhook = quote_column(&self.webhook_column, &key("webhook_column"))?;
        let delivered = check_predicate(&self.delivered_predicate, &key("delivered_predicate"))?;
        let retrying = check_predicate(&self.retrying_predicate, &key("retrying_predicate"))?;
        let failed = check_predicate(&self.failed_predicate, &key("failed_predicate"))?;
        let window = format!(
            "{created} > now() - interval '{} seconds'",
            self.window.as_secs_f64()
        );
        let grace = format!("interval '{} seconds'", self.overdue_grace.as_secs_f64());
        let mut out = vec![
            (
                "status",
                // The window, not the whole history: bounded by the created_at index.
                format!("SELECT {status}::text, count(*)::float8 FROM {t} WHERE {window} GROUP BY 1 ORDER BY 2 DESC LIMIT {}", MAX_STATUSES + 1),
            ),
            (
                "retries",
                format!(
                    "SELECT count(*)::float8, \
                            count(*) FILTER (WHERE {next_retry} < now() - {grace})::float8, \
                            coalesce(extract(epoch FROM now() - min({next_retry})), 0)::float8 \
                     FROM {t} WHERE {retrying}"
                ),
            ),
            (
                "window",
                format!(
                    "SELECT count(*) FILTER (WHERE {attempts} >= 1)::float8, \
                            count(*) FILTER (WHERE {delivered} AND {attempts} = 1)::float8, \
                            count(*) FILTER (WHERE ({delivered} OR {failed}) AND {attempts} > 1)::float8, \
                            count(*) FILTER (WHERE {delivered} AND {attempts} > 1)::float8 \
                     FROM {t} WHERE {window}"
                ),
            ),
        ];
        if self.top_failing > 0 {
            out.push((
                "failing",
                format!(
                    "SELECT {webhook}::text, count(*)::float8 FROM {t} \
                     WHERE {window} AND ({retrying} OR {failed}) \
                     GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {}",
                    self.top_failing
                ),
            ));
        }
        if let Some(events) = &self.events_table {
            let e = quote_table(events, &key("events_table"))?;
            let unprocessed = check_predicate(
                &self.events_unprocessed_predicate,
                &key("events_unprocessed_predicate"),
            )?;
            let at = quote_column(
                &self.events_created_at_column,
                &key("events_created_at_column"),
            )?;
            out.push((
                "events",
                format!(
                    "SELECT count(*)::float8, coalesce(extract(epoch FROM now() - min({at})), 0)::float8 \
                     FROM {e} WHERE {unprocessed}"
                ),
            ));
        }
        Ok(out)
    }
}

pub fn spec() -> Spec {
    Spec {
        name: "webhooks",
        description: "Webhook deliveries ([webhooks]): by status, overdue retries, first-attempt and retry success, event lag.",
        default_interval: Duration::from_secs(30),
        enabled_by_default: true,
        lane: crate::poller::Lane::Main,
        families,
        build: |ctx: &BuildContext| {
            let config = &ctx.config.webhooks;
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
                            "missing_table",
                            format!("{}; create the table or fix [webhooks]", crate::target::describe(&e)),
                        ))
                    }
                    Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                        return Err(CollectError::skipped(
                            "permission",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_migrations_and_bad_keys_are_named() {
        let config = WebhooksConfig {
            deliveries_table: Some("public.webhook_deliveries".into()),
            events_table: Some("public.webhook_event_logs".into()),
            ..Default::default()
        };
        config.validate().unwrap();
        let sql = config.statements().unwrap();
        assert_eq!(sql.len(), 5);
        assert!(
            sql[1].1.contains("WHERE (status = 'retrying')"),
            "{}",
            sql[1].1
        );
        let bad = WebhooksConfig {
            retrying_predicate: "status = 'retrying'; DELETE FROM x".into(),
            ..config.clone()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("webhooks.retrying_predicate contains ';'"));
        let many = WebhooksConfig {
            top_failing: 500,
            ..config
        };
        assert!(many
            .validate()
            .unwrap_err()
            .contains("webhooks.top_failing"));
        // Off by default, and then nothing to check.
        WebhooksConfig::default().validate().unwrap();
    }
}
