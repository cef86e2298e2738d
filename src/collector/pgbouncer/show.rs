//! Running one SHOW command on the admin console and reading its columns by name.
//!
//! Only the simple query protocol works there, and column sets differ between releases
//! (1.16 split `cl_cancel_req`, 1.18 added `sv_active_cancel`, ...): a column is read by name
//! and a missing one is `None`, never an error.

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::collector::CollectError;
use crate::target::describe;

/// The rows of `SHOW <what>`.
pub(super) async fn show(client: &Client, what: &str) -> Result<Vec<SimpleQueryRow>, CollectError> {
    let messages = client
        .simple_query(&format!("SHOW {what}"))
        .await
        .map_err(|e| CollectError::failed(format!("SHOW {what}: {}", describe(&e))))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect())
}

/// The text of a column, `None` when the release has no such column or it is NULL.
pub(super) fn text<'a>(row: &'a SimpleQueryRow, column: &str) -> Option<&'a str> {
    row.try_get(column).ok().flatten()
}

/// A numeric column.
pub(super) fn number(row: &SimpleQueryRow, column: &str) -> Option<f64> {
    text(row, column)?.trim().parse().ok()
}

/// Most pools (or databases) exported per target: a pooler with thousands of user/database
/// pairs would otherwise multiply every pool series by them. The rest is counted in
/// `pgkpi_collector_dropped_series`.
pub(super) const MAX_POOLS: usize = 200;
