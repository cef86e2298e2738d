//! The `[[queues]]` configuration: keys, presets, and their resolution into a [`Shape`] of
//! quoted identifiers and checked predicates. Pure configuration: nothing here talks to a
//! database, so `check-config` can validate queues without connecting. What each preset fills
//! in is in `presets.rs`.

mod presets;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::presets::preset_defaults;
pub use self::presets::Preset;
use crate::duration;
use crate::sql_text::{check_predicate, quote_column, quote_table};

/// Default row count above which a count that would scan the table is estimated instead.
pub const DEFAULT_EXACT_COUNT_LIMIT: u64 = 100_000;
/// Default cap on `kind` label values per queue.
pub const DEFAULT_MAX_KINDS: usize = 20;

/// `[[queues]]`: one queue table to measure. With a `preset`, every other key is optional and
/// overrides the preset's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Label value `queue="..."` of every series of this queue; unique.
    pub name: String,
    /// A known queue design: `notification_queue`, `pgmq`, `river` or `oban`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The table, `schema.table` or `table`, exactly as in the catalog (case-sensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// pgmq: the queue (table `pgmq.q_<name>`); River and Oban: only rows of this `queue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// SQL predicate ANDed to every query: the rows of this queue when a table holds several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// SQL predicate: rows waiting to run (due now, or later when `available_at_column` is set
    /// and no `scheduled_predicate` is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_predicate: Option<String>,
    /// SQL predicate: rows waiting for a time (scheduled, retry backoff). Default: ready rows
    /// whose `available_at_column` is in the future.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_predicate: Option<String>,
    /// SQL predicate: rows a worker holds (leased, running, executing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leased_predicate: Option<String>,
    /// SQL predicate: rows given up on (dead, discarded, failed for good).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_predicate: Option<String>,
    /// SQL predicate: finished rows, when the table keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_predicate: Option<String>,
    /// SQL predicate: leases held past their timeout (a dead worker). Default: built from
    /// `lease_timeout` + `locked_at_column`, else from `lease_expires_at_column`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_predicate: Option<String>,
    /// Column: when a ready row becomes runnable (available_at, run_at, scheduled_at, vt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at_column: Option<String>,
    /// Column: when the row was inserted; the lag falls back to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_column: Option<String>,
    /// Column: when the current lease was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_at_column: Option<String>,
    /// Column: when the current lease ends (used when no `lease_timeout` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_column: Option<String>,
    /// A lease older than this (by `locked_at_column`) counts as expired.
    #[serde(
        with = "duration::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub lease_timeout: Option<Duration>,
    /// Column: failed attempts (or deliveries) so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_column: Option<String>,
    /// Column: a sub-queue or job kind; pending depth and lag per value, bounded by `max_kinds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind_column: Option<String>,
    /// Most `kind` values exported (largest backlog first); the rest are summed into
    /// `kind="(other)"`. Default 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_kinds: Option<usize>,
    /// The time columns are `timestamp without time zone` holding UTC (Oban). Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utc_timestamps: Option<bool>,
    /// Above this many rows, a count whose plan would scan the table is estimated by the
    /// planner instead (flagged by `app_queue_depth_estimated`). Default 100000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_count_limit: Option<u64>,
}

/// Checks a list of queues; the messages name `queues[i]` and the key.
pub fn validate(queues: &[QueueConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, queue) in queues.iter().enumerate() {
        let shape =
            Shape::resolve(queue).map_err(|e| format!("queues[{i}] ({}): {e}", queue.name))?;
        if !names.insert(shape.name.clone()) {
            return Err(format!(
                "queues[{i}] ({}): duplicate queue name; each [[queues]] entry needs its own name",
                queue.name
            ));
        }
    }
    Ok(())
}

/// A queue resolved to SQL fragments: quoted identifiers, wrapped predicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    /// Quoted, qualified table.
    pub table: String,
    /// The table as text for `to_regclass`.
    pub regclass: String,
    /// `now()`, or `now()` in UTC without zone for naive timestamp columns.
    pub now: &'static str,
    pub filter: Option<String>,
    pub ready: String,
    pub scheduled: Option<String>,
    pub leased: Option<String>,
    pub expired: Option<String>,
    pub dead: Option<String>,
    pub done: Option<String>,
    pub available_at: Option<String>,
    pub created_at: Option<String>,
    pub locked_at: Option<String>,
    pub retry: Option<String>,
    pub kind: Option<String>,
    pub max_kinds: usize,
    pub lease_timeout: Option<Duration>,
    pub exact_count_limit: u64,
}

/// A key of [`QueueConfig`] that a preset may fill in.
type Key = fn(&QueueConfig) -> &Option<String>;

impl Shape {
    /// Merges the preset (if any) with the explicit keys and builds the SQL fragments.
    pub fn resolve(config: &QueueConfig) -> Result<Shape, String> {
        let name = config.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err("name must be 1 to 64 characters; it becomes the queue label".into());
        }
        let base = match config.preset {
            Some(preset) => preset_defaults(preset, config.queue_name.as_deref())?,
            None => {
                if config.queue_name.is_some() {
                    return Err("queue_name needs a preset (pgmq, river or oban); use filter for a custom table".into());
                }
                QueueConfig::default()
            }
        };
        // The entry's own value, else the preset's.
        let pick = |key: Key| key(config).clone().or_else(|| key(&base).clone());
        let table = pick(|c| &c.table).ok_or(
            "set table (e.g. table = \"core.notification_queue\") or a preset (notification_queue, pgmq, river, oban)",
        )?;
        let quoted_table = quote_table(&table, "table")?;
        let utc = config
            .utc_timestamps
            .or(base.utc_timestamps)
            .unwrap_or(false);
        let now = if utc {
            "(now() AT TIME ZONE 'UTC')"
        } else {
            "now()"
        };
        let predicate = |name: &str, key: Key| {
            pick(key)
                .map(|p| check_predicate(&p.replace("now()", now), name))
                .transpose()
        };
        let column = |name: &str, key: Key| pick(key).map(|c| quote_column(&c, name)).transpose();
        let ready = predicate("ready_predicate", |c| &c.ready_predicate)?
            .ok_or("set ready_predicate (e.g. \"status = 'ready'\") or a preset")?;
        let leased = predicate("leased_predicate", |c| &c.leased_predicate)?;
        let locked_at = column("locked_at_column", |c| &c.locked_at_column)?;
        let lease_expires = column("lease_expires_at_column", |c| &c.lease_expires_at_column)?;
        let lease_timeout = config.lease_timeout.or(base.lease_timeout);
        if lease_timeout.is_some_and(|d| d.is_zero()) {
            return Err("lease_timeout must be positive, e.g. \"5m\"".into());
        }
        let explicit_expired = predicate("expired_predicate", |c| &c.expired_predicate)?;
        let expired = match (
            explicit_expired,
            &leased,
            lease_timeout,
            &locked_at,
            &lease_expires,
        ) {
            (Some(e), _, _, _, _) => Some(e),
            (None, Some(l), Some(timeout), Some(at), _) => Some(format!(
                "({l} AND {at} <= {now} - interval '{} seconds')",
                timeout.as_secs_f64()
            )),
            (None, Some(l), _, _, Some(until)) => Some(format!("({l} AND {until} <= {now})")),
            (None, _, Some(_), None, _) => {
                return Err(
                    "lease_timeout needs locked_at_column (when the lease was taken)".into(),
                )
            }
            _ => None,
        };
        let max_kinds = config
            .max_kinds
            .or(base.max_kinds)
            .unwrap_or(DEFAULT_MAX_KINDS);
        if max_kinds == 0 || max_kinds > 200 {
            return Err(format!(
                "max_kinds = {max_kinds}: use 1 to 200 (default {DEFAULT_MAX_KINDS})"
            ));
        }
        let exact_count_limit = config
            .exact_count_limit
            .or(base.exact_count_limit)
            .unwrap_or(DEFAULT_EXACT_COUNT_LIMIT);
        Ok(Shape {
            name: name.to_string(),
            regclass: quoted_table.clone(),
            table: quoted_table,
            now,
            filter: predicate("filter", |c| &c.filter)?,
            ready,
            scheduled: predicate("scheduled_predicate", |c| &c.scheduled_predicate)?,
            leased,
            expired,
            dead: predicate("dead_predicate", |c| &c.dead_predicate)?,
            done: predicate("done_predicate", |c| &c.done_predicate)?,
            available_at: column("available_at_column", |c| &c.available_at_column)?,
            created_at: column("created_at_column", |c| &c.created_at_column)?,
            locked_at,
            retry: column("retry_column", |c| &c.retry_column)?,
            kind: column("kind_column", |c| &c.kind_column)?,
            max_kinds,
            lease_timeout,
            exact_count_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(toml_text: &str) -> QueueConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn lease_timeout_switches_to_locked_at_and_oban_uses_utc() {
        let shape = Shape::resolve(&q(
            "name = \"n\"\npreset = \"notification_queue\"\nlease_timeout = \"90s\"",
        ))
        .unwrap();
        assert!(shape
            .expired
            .unwrap()
            .contains("\"locked_at\" <= now() - interval '90 seconds'"));
        let oban =
            Shape::resolve(&q("name = \"o\"\npreset = \"oban\"\nqueue_name = \"mail\"")).unwrap();
        assert_eq!(oban.filter.as_deref(), Some("(queue = 'mail')"));
        assert!(oban
            .expired
            .unwrap()
            .contains("(now() AT TIME ZONE 'UTC') - interval '3600 seconds'"));
        let pgmq =
            Shape::resolve(&q("name = \"p\"\npreset = \"pgmq\"\nqueue_name = \"Jobs\"")).unwrap();
        assert_eq!(pgmq.table, "\"pgmq\".\"q_jobs\"");
    }

    #[test]
    fn bad_entries_are_explained() {
        let cases = [
            ("name = \"x\"", "set table"),
            ("name = \"x\"\ntable = \"a.b.c\"\nready_predicate = \"true\"", "is not a table name"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"true; DROP TABLE t\"", "ready_predicate contains ';'"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"a) OR (b\"", "ready_predicate has an unbalanced ')'"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"a -- b\"", "comment"),
            ("name = \"x\"\npreset = \"pgmq\"", "preset pgmq needs queue_name"),
            ("name = \"x\"\ntable = \"t\"\nready_predicate = \"s = 1\"\nleased_predicate = \"s = 2\"\nlease_timeout = \"1m\"", "lease_timeout needs locked_at_column"),
            ("name = \"\"\npreset = \"river\"", "name must be"),
        ];
        for (text, expected) in cases {
            let err = validate(&[q(text)]).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with("queues[0]"), "{err}");
        }
        // Semicolons inside a string literal are data, not a statement separator.
        assert!(check_predicate("note = 'a;b'", "k").is_ok());
        let dup = [
            q("name = \"a\"\npreset = \"river\""),
            q("name = \"a\"\npreset = \"oban\""),
        ];
        assert!(validate(&dup).unwrap_err().contains("duplicate queue name"));
    }
}
