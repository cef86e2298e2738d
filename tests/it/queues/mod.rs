//! The `queues` collector against real tables: the migrations' `core.notification_queue`
//! driven through its own queue functions (004), and faithful copies of pgmq, River and Oban
//! tables with known rows. Every expected value is read back from the database, a database of
//! the test's own on the shared cluster.

use std::time::{Duration, Instant};

use crate::support::{
    check_config, schema, stderr, Cluster, Exporter, ExporterConfig, Metrics, TempDir,
};

const T: &str = "q";

/// A database with the baseline schema and the queue migrations (002, 004).
fn migrated(cluster: &Cluster, prefix: &str) -> String {
    let db = schema::database_with(
        cluster,
        prefix,
        &[
            "migrations/002_p0_notification_queue.sql",
            "migrations/004_fase2_queue_functions.sql",
        ],
    );
    cluster.psql(
        &db,
        "INSERT INTO core.notifications (user_id, type, title) VALUES (1, 'booking', 'hello')",
    );
    db
}

fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.of(T, name, labels)
}

fn depth(m: &Metrics, queue: &str, state: &str) -> Option<f64> {
    get(m, "app_queue_depth", &[("queue", queue), ("state", state)])
}

fn estimated(m: &Metrics, queue: &str, state: &str) -> Option<f64> {
    get(
        m,
        "app_queue_depth_estimated",
        &[("queue", queue), ("state", state)],
    )
}

const NQ: &str = "notifications";

fn enqueue(cluster: &Cluster, db: &str, n: usize, extra_cols: &str, extra_vals: &str) {
    cluster.psql(
        db,
        &format!(
            "INSERT INTO core.notification_queue (notification_id{extra_cols}) \
             SELECT (SELECT min(id) FROM core.notifications){extra_vals} FROM generate_series(1, {n})"
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_queue_depth_lag_leases_and_processed() {
    let cluster = Cluster::shared();
    let db = migrated(cluster, "nq");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "500ms")
        .raw(&format!(
            "[[queues]]\nname = \"{NQ}\"\npreset = \"notification_queue\"\n"
        ));
    let exporter = Exporter::start(&config.build());

    // Consumers stopped: 20 items due since 30 s, 5 scheduled for later (the trigger folds
    // scheduled_for into available_at).
    enqueue(
        cluster,
        &db,
        20,
        ", available_at, created_at",
        ", now() - interval '30 seconds', now() - interval '30 seconds'",
    );
    enqueue(
        cluster,
        &db,
        5,
        ", scheduled_for",
        ", now() + interval '1 hour'",
    );
    let m = exporter.wait_for(Duration::from_secs(10), "20 ready, 5 scheduled", |m| {
        depth(m, NQ, "ready") == Some(20.0) && depth(m, NQ, "scheduled") == Some(5.0)
    });
    let age = |db_: &str| {
        cluster.number(db_, "SELECT extract(epoch FROM now() - min(available_at)) FROM core.notification_queue WHERE status = 'ready' AND available_at <= now()")
    };
    let lag1 = get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap();
    assert!(lag1 >= 30.0 && lag1 <= age(&db), "lag {lag1}");
    assert_eq!(depth(&m, NQ, "leased"), Some(0.0));
    assert_eq!(depth(&m, NQ, "done"), Some(0.0));
    assert_eq!(estimated(&m, NQ, "ready"), Some(0.0));
    assert_eq!(
        get(
            &m,
            "app_queue_kind_depth",
            &[("queue", NQ), ("kind", "push"), ("state", "ready")]
        ),
        Some(20.0)
    );

    // Still stopped: more arrive, the backlog and the lag grow.
    enqueue(cluster, &db, 10, "", "");
    let m = exporter.wait_for(Duration::from_secs(10), "backlog grows", |m| {
        depth(m, NQ, "ready") == Some(30.0)
            && get(m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap_or(0.0) > lag1 + 0.5
    });
    assert!(get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap() <= age(&db));

    // A consumer claims 5 with a 2 s lease and dies: an expired lease after the timeout...
    let client = cluster.client(&db).await;
    let claimed = client
        .query(
            "SELECT id FROM core.claim_notifications('worker-killed', 5, interval '3 seconds')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let m = exporter.wait_for(Duration::from_secs(10), "5 leased, not expired yet", |m| {
        depth(m, NQ, "leased") == Some(5.0)
    });
    assert_eq!(
        get(&m, "app_queue_expired_leases", &[("queue", NQ)]),
        Some(0.0)
    );
    assert_eq!(depth(&m, NQ, "ready"), Some(25.0));
    exporter.wait_for(Duration::from_secs(10), "expired leases", |m| {
        get(m, "app_queue_expired_leases", &[("queue", NQ)]) == Some(5.0)
            && get(m, "app_queue_oldest_lease_seconds", &[("queue", NQ)]).unwrap_or(0.0) >= 3.0
    });
    // ...that disappears when reclaimed; the 5 come back with one retry each.
    let reclaimed: i32 = client
        .query_one("SELECT core.reclaim_expired_leases()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reclaimed, 5);
    let m = exporter.wait_for(Duration::from_secs(10), "leases reclaimed", |m| {
        get(m, "app_queue_expired_leases", &[("queue", NQ)]) == Some(0.0)
            && depth(m, NQ, "leased") == Some(0.0)
            && depth(m, NQ, "ready") == Some(30.0)
    });
    let retried = cluster.number(
        &db,
        "SELECT count(*) FROM core.notification_queue WHERE retry_count = 1",
    );
    let pending = cluster.number(&db, "SELECT count(*) FROM core.notification_queue");
    let bucket = |le: &str| {
        m.find(
            "app_queue_retries_bucket",
            &[("target", T), ("queue", NQ), ("le", le)],
        )
        .first()
        .map(|s| s.value)
    };
    assert_eq!(bucket("0"), Some(pending - retried));
    assert_eq!(bucket("1"), Some(pending));
    assert_eq!(bucket("+Inf"), Some(pending));
    assert_eq!(retried, 5.0);

    // Nothing finished yet: processed = inserted - pending = 0 (once the stats are flushed).
    let m = exporter.wait_for(Duration::from_secs(10), "inserted counter", |m| {
        get(m, "app_queue_inserted_total", &[("queue", NQ)]) == Some(35.0)
    });
    assert_eq!(
        get(&m, "app_queue_processed_total", &[("queue", NQ)]),
        Some(0.0)
    );

    // Consumers running while a producer adds work: processed rises, lag stays bounded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let client = cluster.client(&db).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = client
                    .query("SELECT id FROM core.claim_notifications('worker-1', 20, interval '1 minute')", &[])
                    .await
                    .unwrap();
                for row in rows {
                    let id: i64 = row.get(0);
                    client
                        .query_one("SELECT core.complete_notification($1, 'worker-1')", &[&id])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let producer_until = Instant::now() + Duration::from_secs(5);
    let mut max_lag_after_drain: f64 = 0.0;
    let mut drained_at: Option<Instant> = None;
    while Instant::now() < producer_until {
        client
            .execute("INSERT INTO core.notification_queue (notification_id) SELECT min(id) FROM core.notifications", &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = exporter.metrics();
        let lag = get(&m, "app_queue_lag_seconds", &[("queue", NQ)]).unwrap_or(0.0);
        // Once the old backlog is gone, the lag reflects the running consumer only.
        if drained_at.is_none() && lag < 5.0 && depth(&m, NQ, "ready").unwrap_or(99.0) < 5.0 {
            drained_at = Some(Instant::now());
        }
        if drained_at.is_some() {
            max_lag_after_drain = max_lag_after_drain.max(lag);
        }
    }
    // Ending the session flushes its insert statistics at once.
    drop(client);
    assert!(
        drained_at.is_some(),
        "the consumer never drained the backlog"
    );
    assert!(
        max_lag_after_drain < 3.0,
        "lag with consumers running: {max_lag_after_drain}"
    );
    // Let the consumer finish what is due, then stop it and compare with the table.
    exporter.wait_for(Duration::from_secs(10), "ready drained", |m| {
        depth(m, NQ, "ready") == Some(0.0)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    consumer.await.unwrap();
    let done = cluster.number(
        &db,
        "SELECT count(*) FROM core.notification_queue WHERE status IN ('done', 'dead')",
    );
    assert!(done > 30.0, "{done}");
    let m = exporter.wait_for(Duration::from_secs(15), "processed = finished rows", |m| {
        get(m, "app_queue_processed_total", &[("queue", NQ)]) == Some(done)
    });
    assert_eq!(depth(&m, NQ, "done"), Some(done));
    assert_eq!(
        m.types.get("app_queue_processed_total").map(String::as_str),
        Some("counter")
    );
}

#[test]
fn large_queue_estimates_instead_of_scanning() {
    let cluster = Cluster::shared();
    let db = migrated(cluster, "nqbig");
    // 40 000 finished rows, 50 ready: counting done would read the whole table.
    enqueue(
        cluster,
        &db,
        40_000,
        ", status, completed_at",
        ", 'done', now()",
    );
    enqueue(cluster, &db, 50, "", "");
    cluster.psql(&db, "VACUUM ANALYZE core.notification_queue");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "1s")
        .raw(&format!(
            "[[queues]]\nname = \"{NQ}\"\npreset = \"notification_queue\"\nexact_count_limit = 1000\n"
        ));
    let exporter = Exporter::start(&config.build());
    let m = exporter.wait_for(Duration::from_secs(10), "queue metrics", |m| {
        depth(m, NQ, "done").is_some()
    });
    assert_eq!(estimated(&m, NQ, "done"), Some(1.0));
    assert_eq!(estimated(&m, NQ, "ready"), Some(0.0));
    assert_eq!(
        depth(&m, NQ, "ready"),
        Some(50.0),
        "exact through the claim index"
    );
    let done = depth(&m, NQ, "done").unwrap();
    assert!((done - 40_000.0).abs() < 4_000.0, "estimate {done}");
    // The breakdown by retries still runs: it reads the pending rows through the partial indexes.
    assert!(
        m.find("app_queue_retries_count", &[("target", T), ("queue", NQ)])
            .len()
            == 1
    );
}

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
    let cluster = Cluster::shared();
    let db = cluster.create_database("presets");
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

#[test]
fn missing_table_is_skipped_and_bad_entries_are_rejected() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("noqueue");
    let config = ExporterConfig::new(T, &cluster.dsn(&db))
        .interval("queues", "1s")
        .raw("[[queues]]\nname = \"river\"\npreset = \"river\"\n");
    let exporter = Exporter::start(&config.build());
    let labels = [
        ("target", T),
        ("collector", "queues"),
        ("reason", "missing_table"),
    ];
    let m = exporter.wait_for(Duration::from_secs(10), "skipped", |m| {
        m.value("pgkpi_collector_skipped", &labels) == Some(1.0)
    });
    assert_eq!(
        m.value(
            "pgkpi_collector_errors_total",
            &[("target", T), ("collector", "queues")]
        ),
        Some(0.0)
    );
    assert!(exporter.logs().contains("river_job"), "{}", exporter.logs());

    let dir = TempDir::new("badqueue");
    let path = dir.write(
        "pgkpi.toml",
        "[[queues]]\nname = \"jobs\"\ntable = \"app.jobs\"\nready_predicate = \"state = 'ready'; DELETE FROM app.jobs\"\n\n\
         [[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
    );
    let out = check_config(&path);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("queues[0] (jobs): ready_predicate contains ';'"),
        "{stderr}"
    );
}
