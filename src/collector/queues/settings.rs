//! The `[[queues]]` configuration: keys, presets, and their resolution into a [`Shape`] of
//! quoted identifiers and checked predicates. Pure configuration: nothing here talks to a
//! database, so `check-config` can validate queues without connecting.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::sql_text::{check_predicate, quote_column, quote_literal, quote_table};

/// Default row count above which a count that would scan the table is estimated instead.
pub const DEFAULT_EXACT_COUNT_LIMIT: u64 = 100_000;
/// Default cap on `kind` label values per queue.
pub const DEFAULT_MAX_KINDS: usize = 20;

/// A queue design pgkpi knows; fills in table, predicates and columns.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `core.notification_queue` of migrations 002/004 (status ready/leased/done/dead).
    NotificationQueue,
    /// pgmq: one table `pgmq.q_<queue_name>` per queue; the visibility timeout is the lease.
    Pgmq,
    /// River (Go): `river_job`, states available/scheduled/running/retryable/completed/...
    River,
    /// Oban (Elixir): `oban_jobs`, states available/scheduled/executing/retryable/completed/...
    Oban,
}

impl Preset {
    pub const ALL: &'static [&'static str] = &["notification_queue", "pgmq", "river", "oban"];
}

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

/// What a preset contributes; every field may be overridden by the config.
fn preset_defaults(preset: Preset, queue_name: Option<&str>) -> Result<QueueConfig, String> {
    let s = |v: &str| Some(v.to_string());
    let queue_filter = queue_name.map(|q| format!("queue = {}", quote_literal(q)));
    Ok(match preset {
        // Migrations 002/004: claim = status 'ready' AND available_at <= now() (partial index
        // notification_queue_claim_idx); leases carry their own end (lease_expires_at, partial
        // index notification_queue_lease_idx), as reclaim_expired_leases() reads them.
        Preset::NotificationQueue => QueueConfig {
            table: s("core.notification_queue"),
            ready_predicate: s("status = 'ready'"),
            leased_predicate: s("status = 'leased'"),
            dead_predicate: s("status = 'dead'"),
            done_predicate: s("status = 'done'"),
            available_at_column: s("available_at"),
            created_at_column: s("created_at"),
            locked_at_column: s("locked_at"),
            lease_expires_at_column: s("lease_expires_at"),
            retry_column: s("retry_count"),
            kind_column: s("channel"),
            ..Default::default()
        },
        // pgmq: a message is visible when vt <= now(); reading it pushes vt forward (the
        // visibility timeout is the lease) and increments read_ct; delete/archive finishes it.
        // Invisible with read_ct = 0 = sent with a delay. Read but still here after vt passed
        // = the reader did not finish in time (an expired lease, visible again).
        Preset::Pgmq => {
            let queue = queue_name.ok_or(
                "preset pgmq needs queue_name (the name given to pgmq.create; the table is pgmq.q_<queue_name>)",
            )?;
            QueueConfig {
                table: Some(format!("pgmq.q_{}", queue.to_lowercase())),
                ready_predicate: s("read_ct = 0 OR vt <= now()"),
                scheduled_predicate: s("read_ct = 0 AND vt > now()"),
                leased_predicate: s("read_ct > 0 AND vt > now()"),
                expired_predicate: s("read_ct > 0 AND vt <= now()"),
                available_at_column: s("vt"),
                created_at_column: s("enqueued_at"),
                retry_column: s("read_ct"),
                ..Default::default()
            }
        }
        // River: available jobs are fetched by (state, queue, priority, scheduled_at, id);
        // scheduled and retryable ones wait for scheduled_at; the rescuer gives back running
        // jobs older than RescueStuckJobsAfter (default 1h).
        Preset::River => QueueConfig {
            table: s("river_job"),
            filter: queue_filter.clone(),
            ready_predicate: s("state = 'available'"),
            scheduled_predicate: s("state IN ('scheduled', 'retryable')"),
            leased_predicate: s("state = 'running'"),
            dead_predicate: s("state IN ('discarded', 'cancelled')"),
            done_predicate: s("state = 'completed'"),
            available_at_column: s("scheduled_at"),
            created_at_column: s("created_at"),
            locked_at_column: s("attempted_at"),
            lease_timeout: Some(Duration::from_secs(3600)),
            retry_column: s("attempt"),
            kind_column: if queue_name.is_some() {
                s("kind")
            } else {
                s("queue")
            },
            ..Default::default()
        },
        // Oban: the same state machine as River, timestamps are UTC without time zone; the
        // Lifeline plugin rescues executing jobs after rescue_after (default 60 min).
        Preset::Oban => QueueConfig {
            table: s("oban_jobs"),
            filter: queue_filter,
            ready_predicate: s("state = 'available'"),
            scheduled_predicate: s("state IN ('scheduled', 'retryable')"),
            leased_predicate: s("state = 'executing'"),
            dead_predicate: s("state IN ('discarded', 'cancelled')"),
            done_predicate: s("state = 'completed'"),
            available_at_column: s("scheduled_at"),
            created_at_column: s("inserted_at"),
            locked_at_column: s("attempted_at"),
            lease_timeout: Some(Duration::from_secs(3600)),
            retry_column: s("attempt"),
            kind_column: if queue_name.is_some() {
                s("worker")
            } else {
                s("queue")
            },
            utc_timestamps: Some(true),
            ..Default::default()
        },
    })
}

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
        let pick = |own: &Option<String>, preset: &Option<String>| own.clone().or(preset.clone());
        let table = pick(&config.table, &base.table).ok_or(
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
        let predicate = |key: &str, own: &Option<String>, preset: &Option<String>| {
            pick(own, preset)
                .map(|p| check_predicate(&p.replace("now()", now), key))
                .transpose()
        };
        let column = |key: &str, own: &Option<String>, preset: &Option<String>| {
            pick(own, preset).map(|c| quote_column(&c, key)).transpose()
        };
        let ready = predicate(
            "ready_predicate",
            &config.ready_predicate,
            &base.ready_predicate,
        )?
        .ok_or("set ready_predicate (e.g. \"status = 'ready'\") or a preset")?;
        let leased = predicate(
            "leased_predicate",
            &config.leased_predicate,
            &base.leased_predicate,
        )?;
        let locked_at = column(
            "locked_at_column",
            &config.locked_at_column,
            &base.locked_at_column,
        )?;
        let lease_expires = column(
            "lease_expires_at_column",
            &config.lease_expires_at_column,
            &base.lease_expires_at_column,
        )?;
        let lease_timeout = config.lease_timeout.or(base.lease_timeout);
        if lease_timeout.is_some_and(|d| d.is_zero()) {
            return Err("lease_timeout must be positive, e.g. \"5m\"".into());
        }
        let explicit_expired = predicate(
            "expired_predicate",
            &config.expired_predicate,
            &base.expired_predicate,
        )?;
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
            filter: predicate("filter", &config.filter, &base.filter)?,
            ready,
            scheduled: predicate(
                "scheduled_predicate",
                &config.scheduled_predicate,
                &base.scheduled_predicate,
            )?,
            leased,
            expired,
            dead: predicate(
                "dead_predicate",
                &config.dead_predicate,
                &base.dead_predicate,
            )?,
            done: predicate(
                "done_predicate",
                &config.done_predicate,
                &base.done_predicate,
            )?,
            available_at: column(
                "available_at_column",
                &config.available_at_column,
                &base.available_at_column,
            )?,
            created_at: column(
                "created_at_column",
                &config.created_at_column,
                &base.created_at_column,
            )?,
            locked_at,
            retry: column("retry_column", &config.retry_column, &base.retry_column)?,
            kind: column("kind_column", &config.kind_column, &base.kind_column)?,
            max_kinds,
            lease_timeout,
            exact_count_limit,
        })
    }
}
