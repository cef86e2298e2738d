//! The pgmq, River and Oban presets against faithful copies of each project's tables, with
//! known rows.

use std::time::Duration;

use super::{depth, get, T};
use crate::support::{Cluster, Exporter, ExporterConfig};

/// Faithful copies of the three presets' tables (DDL written from each project's schema; see
/// docs/queues.md for the sources), with known rows.
const PRESET_TABLES: &str = r#"
CREATE SCHEMA pgmq;
CREATE TABLE pgmq.q_jobs (
    msg_id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    read_ct integer DEFAULT 0 NOT NULL,
    enqueued_at timestamptz DEFAULT now() NOT NULL,
    vt timestamptz NOT NULL,
    message jsonb,
    headers jsonb
);
CREATE INDEX q_jobs_vt_idx ON pgmq.q_jobs (vt ASC);
INSERT INTO pgmq.q_jobs (read_ct, enqueued_at, vt, message)
SELECT r, now() - interval '1 minute', now() + v, '{}'::jsonb
FROM (VALUES (0, interval '-10 seconds'), (0, interval '-8 seconds'), (0, interval '-1 second'), (0, interval '-1 second'),
             (0, interval '1 hour'), (0, interval '2 hours'),
             (1, interval '30 seconds'), (1, interval '30 seconds'), (3, interval '30 seconds'),
             (2, interval '-5 seconds')) AS x(r, v);

CREATE TYPE river_job_state AS ENUM ('available', 'cancelled', 'completed', 'discarded', 'pending', 'retryable', 'running', 'scheduled');
CREATE TABLE river_job (
    id bigserial PRIMARY KEY,
    state river_job_state NOT NULL DEFAULT 'available',
    attempt smallint NOT NULL DEFAULT 0,
    max_attempts smallint NOT NULL,
    attempted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    priority smallint NOT NULL DEFAULT 1,
    args jsonb NOT NULL DEFAULT '{}',
    attempted_by text[],
    errors jsonb[],
    kind text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    queue text NOT NULL DEFAULT 'default',
    tags varchar(255)[] NOT NULL DEFAULT '{}',
    unique_key bytea,
    unique_states bit(8),
    CONSTRAINT finalized_or_finalized_at_null CHECK (
        (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded')) OR
        (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded'))),
    CONSTRAINT max_attempts_is_positive CHECK (max_attempts > 0),
    CONSTRAINT priority_in_range CHECK (priority >= 1 AND priority <= 4),
    CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
    CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
);
CREATE INDEX river_job_kind ON river_job USING btree (kind);
CREATE INDEX river_job_state_and_finalized_at_index ON river_job USING btree (state, finalized_at) WHERE finalized_at IS NOT NULL;
CREATE INDEX river_job_prioritized_fetching_index ON river_job USING btree (state, queue, priority, scheduled_at, id);
INSERT INTO river_job (state, attempt, max_attempts, attempted_at, finalized_at, scheduled_at, kind, queue)
SELECT s::river_job_state, a, 25, now() - att, CASE WHEN s IN ('completed', 'discarded', 'cancelled') THEN now() END,
       now() + sch, 'email', q
FROM (VALUES ('available', 0, NULL::interval, interval '-20 seconds', 'default'),
             ('available', 0, NULL, interval '-5 seconds', 'default'),
             ('available', 1, NULL, interval '-1 second', 'mail'),
             ('scheduled', 0, NULL, interval '1 hour', 'default'),
             ('scheduled', 0, NULL, interval '1 hour', 'mail'),
             ('retryable', 2, NULL, interval '10 minutes', 'mail'),
             ('running', 1, interval '2 hours', interval '-2 hours', 'default'),
             ('running', 1, interval '2 hours', interval '-2 hours', 'mail'),
             ('running', 1, interval '1 second', interval '-1 second', 'default'),
             ('completed', 1, interval '1 minute', interval '-1 minute', 'default'),
             ('completed', 1, interval '1 minute', interval '-1 minute', 'default'),
             ('completed', 3, interval '1 minute', interval '-1 minute', 'mail'),
             ('discarded', 25, interval '1 minute', interval '-1 minute', 'mail'),
             ('discarded', 25, interval '1 minute', interval '-1 minute', 'default'),
             ('cancelled', 0, NULL, interval '-1 minute', 'default')) AS x(s, a, att, sch, q);

CREATE TYPE oban_job_state AS ENUM ('available', 'scheduled', 'executing', 'retryable', 'completed', 'discarded', 'cancelled');
CREATE TABLE oban_jobs (
    id bigserial PRIMARY KEY,
    state oban_job_state NOT NULL DEFAULT 'available',
    queue text NOT NULL DEFAULT 'default',
    worker text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    errors jsonb[] NOT NULL DEFAULT ARRAY[]::jsonb[],
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 20,
    inserted_at timestamp without time zone NOT NULL DEFAULT timezone('UTC', now()),
    scheduled_at timestamp without time zone NOT NULL DEFAULT timezone('UTC', now()),
    attempted_at timestamp without time zone,
    completed_at timestamp without time zone,
    attempted_by text[],
    discarded_at timestamp without time zone,
    priority integer NOT NULL DEFAULT 0,
    tags varchar(255)[] DEFAULT ARRAY[]::varchar[],
    meta jsonb DEFAULT '{}',
    cancelled_at timestamp without time zone,
    CONSTRAINT attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts),
    CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
    CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
    CONSTRAINT worker_length CHECK (char_length(worker) > 0 AND char_length(worker) < 128)
);
CREATE INDEX oban_jobs_state_queue_priority_scheduled_at_id_index ON oban_jobs (state, queue, priority, scheduled_at, id);
INSERT INTO oban_jobs (state, queue, worker, attempt, scheduled_at, attempted_at)
SELECT s::oban_job_state, q, 'Mailer', a, timezone('UTC', now()) + sch, timezone('UTC', now()) - att
FROM (VALUES ('available', 'default', 0, interval '-40 seconds', NULL::interval),
             ('available', 'default', 0, interval '-3 seconds', NULL),
             ('available', 'media', 1, interval '-2 seconds', NULL),
             ('available', 'media', 0, interval '-1 second', NULL),
             ('scheduled', 'default', 0, interval '1 day', NULL),
             ('retryable', 'media', 2, interval '5 minutes', interval '1 minute'),
             ('executing', 'default', 1, interval '-2 hours', interval '2 hours'),
             ('executing', 'media', 1, interval '-1 minute', interval '30 seconds'),
             ('completed', 'default', 1, interval '-1 hour', interval '1 hour'),
             ('completed', 'default', 1, interval '-1 hour', interval '1 hour'),
             ('completed', 'media', 1, interval '-1 hour', interval '1 hour'),
             ('discarded', 'media', 20, interval '-1 hour', interval '1 hour')) AS x(s, q, a, sch, att);
"#;

#[test]
fn presets_report_known_rows() {
    let (cluster, db) = Cluster::shared_database("presets");
    cluster.psql(&db, PRESET_TABLES);
    // Oban's UTC-without-zone columns must not be read in the session's time zone.
    cluster.psql(
        &db,
        &format!("ALTER DATABASE {db} SET timezone = 'America/New_York'"),
    );
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "1s")
        .raw(
            "[[queues]]\nname = \"pgmq_jobs\"\npreset = \"pgmq\"\nqueue_name = \"jobs\"\n\n\
             [[queues]]\nname = \"river\"\npreset = \"river\"\n\n\
             [[queues]]\nname = \"river_mail\"\npreset = \"river\"\nqueue_name = \"mail\"\n\n\
             [[queues]]\nname = \"oban\"\npreset = \"oban\"\n",
        );
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "every preset", |m| {
        ["pgmq_jobs", "river", "river_mail", "oban"]
            .iter()
            .all(|q| get(m, "app_queue_up", &[("queue", q)]) == Some(1.0))
    });
    let check = |queue: &str, state: &str, sql: &str| {
        let truth = cluster.number(&db, sql);
        assert_eq!(
            depth(&m, queue, state),
            Some(truth),
            "{queue} {state}: {sql}"
        );
    };
    let lag_between = |queue: &str, low: f64, high: f64| {
        let lag = get(&m, "app_queue_lag_seconds", &[("queue", queue)]).unwrap();
        assert!(
            lag >= low && lag <= high,
            "{queue}: lag {lag} not in [{low}, {high}]"
        );
    };
    let expired = |queue: &str| get(&m, "app_queue_expired_leases", &[("queue", queue)]);

    // pgmq: visible, delayed, in flight; one message read twice and not deleted in time.
    check(
        "pgmq_jobs",
        "ready",
        "SELECT count(*) FROM pgmq.q_jobs WHERE vt <= now()",
    );
    check(
        "pgmq_jobs",
        "scheduled",
        "SELECT count(*) FROM pgmq.q_jobs WHERE read_ct = 0 AND vt > now()",
    );
    check(
        "pgmq_jobs",
        "leased",
        "SELECT count(*) FROM pgmq.q_jobs WHERE read_ct > 0 AND vt > now()",
    );
    assert_eq!(depth(&m, "pgmq_jobs", "ready"), Some(5.0));
    assert_eq!(expired("pgmq_jobs"), Some(1.0));
    lag_between("pgmq_jobs", 10.0, 60.0);
    assert!(
        depth(&m, "pgmq_jobs", "dead").is_none(),
        "pgmq has no dead state"
    );

    // River, whole table and one queue.
    check(
        "river",
        "ready",
        "SELECT count(*) FROM river_job WHERE state = 'available'",
    );
    check(
        "river",
        "scheduled",
        "SELECT count(*) FROM river_job WHERE state IN ('scheduled', 'retryable')",
    );
    check(
        "river",
        "leased",
        "SELECT count(*) FROM river_job WHERE state = 'running'",
    );
    check(
        "river",
        "dead",
        "SELECT count(*) FROM river_job WHERE state IN ('discarded', 'cancelled')",
    );
    check(
        "river",
        "done",
        "SELECT count(*) FROM river_job WHERE state = 'completed'",
    );
    check("river_mail", "dead", "SELECT count(*) FROM river_job WHERE state IN ('discarded', 'cancelled') AND queue = 'mail'");
    check(
        "river_mail",
        "ready",
        "SELECT count(*) FROM river_job WHERE state = 'available' AND queue = 'mail'",
    );
    assert_eq!(
        expired("river"),
        Some(2.0),
        "running for 2 h > RescueStuckJobsAfter 1 h"
    );
    assert_eq!(expired("river_mail"), Some(1.0));
    lag_between("river", 20.0, 60.0);
    lag_between("river_mail", 1.0, 30.0);
    assert_eq!(
        get(
            &m,
            "app_queue_kind_depth",
            &[("queue", "river"), ("kind", "mail"), ("state", "scheduled")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            &m,
            "app_queue_kind_depth",
            &[
                ("queue", "river_mail"),
                ("kind", "email"),
                ("state", "leased")
            ]
        ),
        Some(1.0)
    );
    assert!(
        get(&m, "app_queue_processed_total", &[("queue", "river_mail")]).is_none(),
        "no counter with a row filter"
    );
    let river_pending = cluster.number(&db, "SELECT count(*) FROM river_job WHERE state IN ('available', 'scheduled', 'retryable', 'running')");
    let river_total = cluster.number(&db, "SELECT count(*) FROM river_job");
    let m2 = exporter.wait_for(Duration::from_secs(10), "river processed", |m| {
        get(m, "app_queue_processed_total", &[("queue", "river")])
            == Some(river_total - river_pending)
    });
    assert_eq!(
        m2.find(
            "app_queue_retries_count",
            &[("target", T), ("queue", "river")]
        )[0]
        .value,
        river_pending
    );

    // Oban: naive UTC timestamps, read correctly although the session is in New York.
    check(
        "oban",
        "ready",
        "SELECT count(*) FROM oban_jobs WHERE state = 'available'",
    );
    check(
        "oban",
        "scheduled",
        "SELECT count(*) FROM oban_jobs WHERE state IN ('scheduled', 'retryable')",
    );
    check(
        "oban",
        "leased",
        "SELECT count(*) FROM oban_jobs WHERE state = 'executing'",
    );
    check(
        "oban",
        "dead",
        "SELECT count(*) FROM oban_jobs WHERE state IN ('discarded', 'cancelled')",
    );
    check(
        "oban",
        "done",
        "SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
    );
    assert_eq!(expired("oban"), Some(1.0));
    lag_between("oban", 40.0, 90.0);
    let lease = get(&m, "app_queue_oldest_lease_seconds", &[("queue", "oban")]).unwrap();
    assert!((7200.0..7300.0).contains(&lease), "oldest lease {lease}");
}
