//! The `[webhooks]` configuration: table and column names, predicates, the window, and the
//! statements they resolve to. Pure configuration: validated by `check-config` without a
//! database.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::sql_text::{check_predicate, quote_column, quote_table};

/// Most distinct status values exported.
pub const MAX_STATUSES: usize = 20;

/// What one statement of a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Deliveries created in the window, by status.
    Status,
    /// The retry backlog: waiting, overdue, and how far overdue.
    Retries,
    /// First-attempt and retry success counts of the window.
    Window,
    /// The webhooks with the most failing deliveries in the window.
    Failing,
    /// Unprocessed incoming events and the age of the oldest.
    Events,
}

impl Purpose {
    /// The purpose's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Status => "status",
            Purpose::Retries => "retries",
            Purpose::Window => "window",
            Purpose::Failing => "failing",
            Purpose::Events => "events",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    pub fn statements(&self) -> Result<Vec<(Purpose, String)>, String> {
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
                Purpose::Status,
                // The window, not the whole history: bounded by the created_at index.
                format!("SELECT {status}::text, count(*)::float8 FROM {t} WHERE {window} GROUP BY 1 ORDER BY 2 DESC LIMIT {}", MAX_STATUSES + 1),
            ),
            (
                Purpose::Retries,
                format!(
                    "SELECT count(*)::float8, \
                            count(*) FILTER (WHERE {next_retry} < now() - {grace})::float8, \
                            coalesce(extract(epoch FROM now() - min({next_retry})), 0)::float8 \
                     FROM {t} WHERE {retrying}"
                ),
            ),
            (
                Purpose::Window,
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
                Purpose::Failing,
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
                Purpose::Events,
                format!(
                    "SELECT count(*)::float8, coalesce(extract(epoch FROM now() - min({at})), 0)::float8 \
                     FROM {e} WHERE {unprocessed}"
                ),
            ));
        }
        Ok(out)
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
