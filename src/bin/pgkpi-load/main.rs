//! pgkpi-load: a bounded workload generator for the audited application schema
//! (`fixtures/baseline.sql`, optionally with `migrations/` applied).
//!
//! It drives the traffic the audit describes, so that pgkpi's KPIs (p95 latency, lock waits,
//! queue depth and age, webhook retries) show a before/after when the migrations are applied:
//!
//! * `producer`: notifications and their queue entries;
//! * `consumer`: claims, completes or fails them (some fail and are retried with backoff, some
//!   consumers die and leave their lease to expire), plus a `reaper` that reclaims leases;
//! * `webhook`: events fanned out to subscribed webhooks, deliveries failing at a configurable
//!   rate, the retry sweep and event-log processing;
//! * `chat`: messages, timelines, unread counts, mark-as-read, inboxes;
//! * `booking`: host and guest lists, availability, new bookings and payments, the expiry job;
//! * `analytics`: inserts into the partitioned history tables (migrated schema only);
//! * `lock-holder`/`lock-waiter` (`--lock-contention`): one session keeps a row locked for a
//!   few seconds, others queue behind it and time out.
//!
//! # Layout
//! * `main`: command line, setup (loopback guard, schema detection), task spawning, summary.
//! * `db`: connections, DSN guard, catalog detection, id samples from the seeded data.
//! * `traffic`: one async function per traffic class and the `Worker` they share.
//! * `stats`: counters and latency histograms per operation kind.
//!
//! Exit codes: 0 the run had no unexpected error; 1 some operation failed unexpectedly (the
//! summary shows which); 2 the run could not start (bad flags, DSN, schema, empty database).

mod db;
mod stats;
mod traffic;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tokio::sync::watch;
use tokio::time::Instant;

use db::Schema;
use stats::{summary_rows, Stats};
use traffic::{Knobs, Shared, Worker};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SchemaArg {
    /// `migrated` when `core.claim_notifications` exists, else `baseline`.
    Auto,
    Baseline,
    Migrated,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Longest accepted `--duration`: the demo runs for a day; a week is the hard bound.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Parser, Debug)]
#[command(
    name = "pgkpi-load",
    version,
    about = "Bounded workload generator for the audited schema (baseline or migrated); loopback only"
)]
struct Cli {
    /// Database to load (URL or key=value). Only loopback hosts and Unix sockets unless
    /// --allow-remote. TLS is not used.
    #[arg(long, env = "DATABASE_URL", value_name = "DSN")]
    dsn: String,
    /// How long to run (e.g. 30s, 10m, 24h; at most 7 days).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Target operations per second over all rate-paced classes (consumers drain as fast as
    /// work exists and are not counted here).
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Queue producer tasks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    producers: u16,
    /// Queue consumer tasks.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    consumers: u16,
    /// Share of webhook delivery attempts that fail (HTTP 5xx) and are retried with backoff.
    #[arg(long, default_value_t = 0.3, value_parser = parse_probability)]
    webhook_failure_rate: f64,
    /// Share of claimed notifications whose processing fails (retried with backoff, dead
    /// after max_attempts).
    #[arg(long, default_value_t = 0.1, value_parser = parse_probability)]
    notification_failure_rate: f64,
    /// Probability that a consumer dies right after a claim: on the migrated schema its lease
    /// expires and the reaper reclaims it; on the baseline its row locks block the others
    /// for --lock-hold until the connection drops.
    #[arg(long, default_value_t = 0.02, value_parser = parse_probability)]
    consumer_crash_rate: f64,
    /// Queue lease (migrated schema); expired leases are reclaimed every 2 s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Items per claim.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=1000))]
    batch: i32,
    /// Add the lock-contention scenario: a session holds a booking row lock for --lock-hold
    /// every --lock-every while two others wait on it with lock_timeout 1s.
    #[arg(long)]
    lock_contention: bool,
    /// Period of the lock-contention hold.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lock_every: Duration,
    /// How long a lock is held (lock contention, and a crashed baseline consumer).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lock_hold: Duration,
    /// Which SQL to use.
    #[arg(long, value_enum, default_value = "auto")]
    schema: SchemaArg,
    /// Seed of the random choices (same seed, same sequence of choices per task).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Upper bound of operations over the whole run, whatever the rate and duration.
    #[arg(long, default_value_t = 50_000_000)]
    max_ops: u64,
    /// Print a progress line to stderr this often (0s: never).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    report_every: Duration,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Allow a non-loopback host. The generator writes; only use it on a throwaway copy.
    #[arg(long)]
    allow_remote: bool,
    /// The DSN is a transaction-mode pooler (pgBouncer): no statement cache; each statement
    /// is prepared, run and closed inside a transaction (its own one when the operation has
    /// none), so that it never moves between server connections. Costs round trips, which
    /// the recorded latencies include. Session settings do not survive a transaction-mode
    /// pooler: the lock waiter's lock_timeout is lost, so its waits last until the holder
    /// commits.
    #[arg(long)]
    pooled: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.1..=10_000.0).contains(&rate) {
        return Err("must be between 0.1 and 10000 operations per second".into());
    }
    Ok(rate)
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err("must be between 0 and 1".into());
    }
    Ok(p)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgkpi-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pgkpi-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One traffic class: its name (also the application_name suffix), its task count and its
/// weight in `--rate` (None: not rate-paced by `--rate`).
struct ClassPlan {
    class: &'static str,
    tasks: usize,
    weight: Option<f64>,
    fixed_rate: Option<f64>,
}

/// Returns Ok(true) when the run had no unexpected error.
async fn run(cli: Cli) -> Result<bool> {
    if cli.duration.is_zero() || cli.duration > MAX_DURATION {
        bail!("--duration must be between 1s and 7 days");
    }
    if cli.lease < Duration::from_secs(1) || cli.lock_hold.is_zero() || cli.lock_every.is_zero() {
        bail!("--lease must be at least 1s; --lock-hold and --lock-every must be positive");
    }
    let base = db::parse_dsn(&cli.dsn, cli.allow_remote)?;
    let admin = db::connect(&base, "setup")
        .await
        .context("cannot connect")?;
    let catalog = db::catalog(&admin).await?;
    let schema = match cli.schema {
        SchemaArg::Auto if catalog.migrated => Schema::Migrated,
        SchemaArg::Auto | SchemaArg::Baseline => Schema::Baseline,
        SchemaArg::Migrated if catalog.migrated => Schema::Migrated,
        SchemaArg::Migrated => bail!(
            "--schema migrated, but core.claim_notifications does not exist; apply \
             migrations/001..009 (psql -v ON_ERROR_STOP=1 -f FILE) or use --schema baseline"
        ),
    };
    let samples = db::samples(&admin).await.context("cannot sample ids")?;
    drop(admin);

    let has_partitions = schema == Schema::Migrated && catalog.has_partitions;
    let mut skipped = Vec::new();
    let mut plans = vec![
        ClassPlan {
            class: "producer",
            tasks: cli.producers.into(),
            weight: Some(20.0),
            fixed_rate: None,
        },
        ClassPlan {
            class: "consumer",
            tasks: cli.consumers.into(),
            weight: None,
            // Polls every 250 ms while the queue is empty; drains without waiting otherwise.
            fixed_rate: Some(4.0),
        },
        ClassPlan {
            class: "webhook",
            tasks: 2,
            weight: Some(25.0),
            fixed_rate: None,
        },
        ClassPlan {
            class: "chat",
            tasks: 2,
            weight: Some(35.0),
            fixed_rate: None,
        },
        ClassPlan {
            class: "booking",
            tasks: 1,
            weight: Some(15.0),
            fixed_rate: None,
        },
    ];
    if schema == Schema::Migrated {
        plans.push(ClassPlan {
            class: "reaper",
            tasks: 1,
            weight: None,
            fixed_rate: Some(0.5),
        });
    } else {
        skipped.push("reaper: the baseline has no leases (migration 004)");
    }
    if has_partitions {
        plans.push(ClassPlan {
            class: "analytics",
            tasks: 1,
            weight: Some(5.0),
            fixed_rate: None,
        });
    } else {
        skipped.push("analytics: core.analytics_events and siblings do not exist (migration 007)");
    }
    if cli.lock_contention {
        plans.push(ClassPlan {
            class: "lock-holder",
            tasks: 1,
            weight: None,
            fixed_rate: Some(1.0 / cli.lock_every.as_secs_f64()),
        });
        plans.push(ClassPlan {
            class: "lock-waiter",
            tasks: 2,
            weight: None,
            fixed_rate: Some(2.0),
        });
    }
    let total_weight: f64 = plans.iter().filter_map(|p| p.weight).sum();

    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let shared = Arc::new(Shared {
        base,
        schema,
        samples,
        stats: stats.clone(),
        knobs: Knobs {
            webhook_failure_rate: cli.webhook_failure_rate,
            notification_failure_rate: cli.notification_failure_rate,
            consumer_crash_rate: cli.consumer_crash_rate,
            batch: cli.batch,
            lease: cli.lease,
            lock_hold: cli.lock_hold,
            max_ops: cli.max_ops,
            pooled: cli.pooled,
        },
        deadline: started + cli.duration,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for plan in &plans {
        let rate = match (plan.weight, plan.fixed_rate) {
            (Some(w), _) => Some(cli.rate * w / total_weight / plan.tasks as f64),
            (None, rate) => rate,
        };
        for index in 0..plan.tasks {
            let worker = Worker::new(
                shared.clone(),
                plan.class,
                index,
                rate,
                cli.seed,
                stop_rx.clone(),
            );
            match plan.class {
                "producer" => tasks.spawn(traffic::producer(worker)),
                "consumer" => tasks.spawn(traffic::consumer(worker)),
                "reaper" => tasks.spawn(traffic::reaper(worker)),
                "webhook" => tasks.spawn(traffic::webhooks(worker)),
                "chat" => tasks.spawn(traffic::chat(worker)),
                "booking" => tasks.spawn(traffic::bookings(worker)),
                "analytics" => tasks.spawn(traffic::analytics(worker)),
                "lock-holder" => tasks.spawn(traffic::lock_holder(worker)),
                "lock-waiter" => tasks.spawn(traffic::lock_waiter(worker)),
                other => unreachable!("no task for class {other}"),
            };
        }
    }
    eprintln!(
        "pgkpi-load: schema={} duration={} rate={}/s tasks={} (application_name pgkpi-load/<class>)",
        schema.name(),
        humantime::format_duration(cli.duration),
        cli.rate,
        tasks.len()
    );

    let mut interrupted = false;
    let report_every = (!cli.report_every.is_zero()).then_some(cli.report_every);
    let mut next_report = report_every.map(|d| started + d);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    loop {
        let report_at = next_report.unwrap_or(shared.deadline + Duration::from_secs(3600));
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Err(e)) if e.is_panic() => bail!("a traffic task panicked: {e}"),
                Some(_) => {}
            },
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
            _ = sigterm.recv() => { interrupted = true; break; }
            _ = tokio::time::sleep_until(report_at) => {
                let rows = summary_rows(&stats);
                let ops: u64 = rows.iter().map(|r| r.ops).sum();
                let unexpected: u64 = rows.iter().map(|r| r.unexpected_errors).sum();
                let expected: u64 = rows.iter().map(|r| r.expected_errors).sum();
                eprintln!(
                    "pgkpi-load: t={:.0}s ops={ops} unexpected_errors={unexpected} expected_errors={expected}",
                    started.elapsed().as_secs_f64()
                );
                next_report = report_every.map(|d| report_at + d);
            }
        }
    }
    // Stop: tasks finish their current operation (each is bounded by statement_timeout);
    // whatever is still running after the grace period is cancelled.
    let _ = stop_tx.send(true);
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = &mut grace => { tasks.abort_all(); break; }
        }
    }
    let elapsed = started.elapsed();
    let rows = summary_rows(&stats);
    let unexpected: u64 = rows.iter().map(|r| r.unexpected_errors).sum();
    let expected: u64 = rows.iter().map(|r| r.expected_errors).sum();
    let ops: u64 = rows.iter().map(|r| r.ops).sum();
    match cli.output {
        Output::Json => {
            let doc = serde_json::json!({
                "schema": schema.name(),
                "elapsed_seconds": elapsed.as_secs_f64(),
                "interrupted": interrupted,
                "operations": ops,
                "unexpected_errors": unexpected,
                "expected_errors": expected,
                "skipped": skipped,
                "kinds": rows,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            println!(
                "pgkpi-load summary: schema={} elapsed={:.1}s{} operations={ops} \
                 unexpected_errors={unexpected} expected_errors={expected}",
                schema.name(),
                elapsed.as_secs_f64(),
                if interrupted { " (interrupted)" } else { "" },
            );
            println!(
                "{:<12} {:<20} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
                "class",
                "kind",
                "ops",
                "expected",
                "unexpected",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms"
            );
            for r in &rows {
                println!(
                    "{:<12} {:<20} {:>9} {:>8} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    r.class,
                    r.kind,
                    r.ops,
                    r.expected_errors,
                    r.unexpected_errors,
                    r.p50_seconds * 1e3,
                    r.p95_seconds * 1e3,
                    r.p99_seconds * 1e3,
                    r.max_seconds * 1e3,
                );
            }
            for s in &skipped {
                println!("skipped {s}");
            }
            for r in rows.iter().filter(|r| !r.error_samples.is_empty()) {
                for e in &r.error_samples {
                    println!("error {}/{}: {e}", r.class, r.kind);
                }
            }
        }
    }
    Ok(unexpected == 0)
}
