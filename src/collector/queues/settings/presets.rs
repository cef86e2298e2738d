//! The queue designs pgkpi knows ([`Preset`]) and what each contributes to a `[[queues]]`
//! entry: table, predicates and columns, written from the projects' own sources (see
//! docs/queues.md). Kept apart from the keys and their resolution because this is knowledge
//! about other software, which changes when those projects change, not when pgkpi does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::QueueConfig;
use crate::sql_text::quote_literal;

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

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// What a preset contributes; every field may be overridden by the config.
pub(super) fn preset_defaults(
    preset: Preset,
    queue_name: Option<&str>,
) -> Result<QueueConfig, String> {
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
            created_at_column: s("created_at"),
            ..job_states("running", "kind", queue_name)
        },
        // Oban: the same state machine as River, timestamps are UTC without time zone; the
        // Lifeline plugin rescues executing jobs after rescue_after (default 60 min).
        Preset::Oban => QueueConfig {
            table: s("oban_jobs"),
            created_at_column: s("inserted_at"),
            utc_timestamps: Some(true),
            ..job_states("executing", "worker", queue_name)
        },
    })
}

/// The job state machine River and Oban share (available, scheduled/retryable, the running
/// state, discarded/cancelled, completed; attempts and times in the same columns), given the
/// name of its running state. With a `queue_name`, only that queue's rows, and their kinds by
/// `kind_column`; without, every queue of the table, and their kinds by queue.
fn job_states(running: &str, kind_column: &str, queue_name: Option<&str>) -> QueueConfig {
    QueueConfig {
        filter: queue_name.map(|q| format!("queue = {}", quote_literal(q))),
        ready_predicate: s("state = 'available'"),
        scheduled_predicate: s("state IN ('scheduled', 'retryable')"),
        leased_predicate: Some(format!("state = '{running}'")),
        dead_predicate: s("state IN ('discarded', 'cancelled')"),
        done_predicate: s("state = 'completed'"),
        available_at_column: s("scheduled_at"),
        locked_at_column: s("attempted_at"),
        lease_timeout: Some(Duration::from_secs(3600)),
        retry_column: s("attempt"),
        kind_column: s(if queue_name.is_some() {
            kind_column
        } else {
            "queue"
        }),
        ..Default::default()
    }
}
