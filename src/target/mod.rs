//! One monitored target: how to reach it and the session it gets.
//!
//! [`Target::connect`] opens the single connection the poller keeps per target. For a
//! PostgreSQL target it applies the safety settings (timeouts, read-only, application_name)
//! and reads what collectors need to know about the server (version, recovery state); a
//! pgBouncer admin console gets none of that (see [`pgbouncer`]).

mod pgbouncer;

use std::fmt;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::{Config, SessionConfig, TargetConfig, TargetKind};
use crate::dsn::{self, Dsn};
use crate::tls;

/// tokio-postgres's `keepalives_idle` when the DSN sets none.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A target ready to connect: parsed DSN, TLS connector, session settings.
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// `user@host:port/dbname`, safe to log.
    pub endpoint: String,
    dsn: Dsn,
    tls: tls::Tls,
    pub session: SessionConfig,
}

/// What the poller learns about the server on each (re)connection. For a pgBouncer target:
/// its version (`SHOW VERSION`), never in recovery, start time unknown (0).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150018; for pgBouncer major*10000 + minor*100 + patch,
    /// e.g. 11800.
    pub version_num: i32,
    /// `server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)" cut to its first word; for
    /// pgBouncer e.g. "1.18.0".
    pub version: String,
    pub in_recovery: bool,
    /// Unix time the postmaster started.
    pub start_time_seconds: f64,
}

impl ServerInfo {
    /// Major version (13, 14, ...).
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }
}

/// A connection failure, with the endpoint (never the password) and a hint when one is known.
#[derive(Debug)]
pub struct ConnectError {
    pub endpoint: String,
    pub message: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}: {}", self.endpoint, self.message)
    }
}

impl std::error::Error for ConnectError {}

impl Target {
    /// Builds a target from validated configuration.
    pub fn from_config(config: &Config, target: &TargetConfig) -> Result<Target, String> {
        let mut dsn = dsn::parse(&target.dsn)?;
        if let Some(path) = &target.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "target \"{}\": password_file {}: cannot read it ({e})",
                    target.name,
                    path.display()
                )
            })?;
            dsn.pg
                .password(text.lines().next().unwrap_or("").trim_end());
        }
        let session = config.session_for(target);
        // pgBouncer tracks application_name (SHOW CLIENTS shows it), so it is sent to both
        // kinds; tokio-postgres sends no other startup parameter pgBouncer would reject
        // besides `options`, which validation refuses for a pgbouncer target.
        dsn.pg.application_name(&session.application_name);
        dsn.pg.connect_timeout(session.connect_timeout);
        // An attempt is awaited to its end (see `connect`), so a peer gone silent must be
        // noticed by the socket: TCP keepalives after 30 s idle, 3 probes 10 s apart, unless
        // the DSN sets its own (tokio-postgres's default idle is 2 hours) or turns them off.
        if dsn.pg.get_keepalives() && dsn.pg.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
            dsn.pg.keepalives_idle(Duration::from_secs(30));
            if dsn.pg.get_keepalives_interval().is_none() {
                dsn.pg.keepalives_interval(Duration::from_secs(10));
            }
            if dsn.pg.get_keepalives_retries().is_none() {
                dsn.pg.keepalives_retries(3);
            }
        }
        let tls = tls::build(&dsn.tls).map_err(|e| format!("target \"{}\": {e}", target.name))?;
        dsn.pg.ssl_mode(tls.mode);
        Ok(Target {
            name: target.name.clone(),
            kind: target.kind,
            endpoint: endpoint(&dsn),
            dsn,
            tls,
            session,
        })
    }

    /// The same server reached in another database (a database of a server target): same
    /// host, credentials, TLS and session settings.
    pub fn in_database(&self, database: &str) -> Target {
        let mut dsn = self.dsn.clone();
        dsn.pg.dbname(database);
        Target {
            name: self.name.clone(),
            kind: self.kind,
            endpoint: endpoint(&dsn),
            dsn,
            tls: tls::Tls {
                connector: self.tls.connector.clone(),
                mode: self.tls.mode,
            },
            session: self.session.clone(),
        }
    }

    /// A value that changes when the password changes (a rotated `password_file`), to tell a
    /// reload that the target must reconnect; the password itself never leaves the target.
    pub fn secret_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.dsn.pg.get_password().hash(&mut hasher);
        hasher.finish()
    }

    /// Connects, applies the session settings and reads the server info. The returned task
    /// drives the connection and must keep running for the client to work; it completes
    /// when the connection closes.
    ///
    /// An attempt is never abandoned while it may still hold a backend on the server: a
    /// backend in startup (waiting for a catalog lock, say) does not notice its client has
    /// gone, so an attempt dropped on a client-side timeout would leave it there while the
    /// next attempt opens another. Instead, when a phase outlives its budget (startup:
    /// `connect_timeout` + 1 s; session setup: `statement_timeout` + 1 s), `overdue` is told
    /// (the caller reports the target down) and the attempt goes on until the server
    /// finishes or refuses it, or the socket dies (TCP keepalives, see [`Target::from_config`]).
    /// The caller starts no other attempt meanwhile, so each connection of a target holds at
    /// most one backend, abandoned attempts included.
    pub async fn connect(
        &self,
        overdue: &mut (dyn FnMut(&ConnectError) + Send),
    ) -> Result<(Client, ServerInfo, tokio::task::JoinHandle<()>), ConnectError> {
        let fail = |message: String| ConnectError {
            endpoint: self.endpoint.clone(),
            message,
        };
        // connect_timeout covers each address's TCP connect; this bounds the whole startup
        // including TLS and authentication.
        let budget = self.session.connect_timeout + Duration::from_secs(1);
        let (client, connection) = patiently(
            budget,
            self.dsn.pg.connect(self.tls.connector.clone()),
            || {
                overdue(&fail(format!(
                    "timed out after {}; waiting for this attempt to end before another",
                    humantime::format_duration(budget)
                )))
            },
        )
        .await
        .map_err(|e| fail(describe(&e)))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "connection ended");
            }
        });
        if self.kind == TargetKind::Pgbouncer {
            let budget = self.session.statement_timeout + Duration::from_secs(1);
            let info = patiently(budget, pgbouncer::server_info(&client), || {
                overdue(&fail(format!(
                    "SHOW VERSION timed out after {}; waiting for it to end before another attempt",
                    humantime::format_duration(budget)
                )))
            })
            .await;
            return match info {
                Ok(info) => Ok((client, info, driver)),
                Err(message) => {
                    driver.abort();
                    Err(fail(message))
                }
            };
        }
        let setup = async {
            client.batch_execute(&self.session_sql()).await?;
            client
                .query_one(
                    "SELECT current_setting('server_version_num')::int4, \
                            split_part(current_setting('server_version'), ' ', 1), \
                            pg_is_in_recovery(), \
                            extract(epoch from pg_postmaster_start_time())::float8",
                    &[],
                )
                .await
        };
        // The statements run under the statement_timeout and lock_timeout the first ones set,
        // so the server ends a stuck setup by itself.
        let setup_budget = self.session.statement_timeout + Duration::from_secs(1);
        let row = match patiently(setup_budget, setup, || {
            overdue(&fail(format!(
                "session setup timed out after {}; waiting for it to end before another attempt",
                humantime::format_duration(setup_budget)
            )))
        })
        .await
        {
            Ok(row) => row,
            Err(e) => {
                driver.abort();
                return Err(fail(format!("session setup failed: {}", describe(&e))));
            }
        };
        let info = ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            in_recovery: row.get(2),
            start_time_seconds: row.get(3),
        };
        Ok((client, info, driver))
    }

    /// The SET statements that make a monitoring session harmless. No parallel workers: a
    /// catalog-wide statement would otherwise take worker processes from the application's
    /// pool and multiply the backends pgkpi holds.
    fn session_sql(&self) -> String {
        let s = &self.session;
        let ms = |d: Duration| d.as_millis();
        format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}; \
             SET default_transaction_read_only = {}; \
             SET jit = off; SET max_parallel_workers_per_gather = 0;",
            ms(s.statement_timeout),
            ms(s.lock_timeout),
            ms(s.idle_in_transaction_session_timeout),
            if s.read_only { "on" } else { "off" },
        )
    }
}

/// Awaits `work` to the end; calls `overdue` once if it takes longer than `budget`.
async fn patiently<F: std::future::Future>(
    budget: Duration,
    work: F,
    overdue: impl FnOnce(),
) -> F::Output {
    let mut work = std::pin::pin!(work);
    match tokio::time::timeout(budget, &mut work).await {
        Ok(output) => output,
        Err(_) => {
            overdue();
            work.await
        }
    }
}

fn endpoint(dsn: &Dsn) -> String {
    let host = dsn
        .pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = dsn.pg.get_ports().first().copied().unwrap_or(5432);
    match (dsn.pg.get_user(), dsn.pg.get_dbname()) {
        (Some(user), db) => format!("{user}@{host}:{port}/{}", db.unwrap_or(user)),
        (None, Some(db)) => format!("{host}:{port}/{db}"),
        (None, None) => format!("{host}:{port}"),
    }
}

/// A tokio-postgres error as one line: message, SQLSTATE, and PostgreSQL's DETAIL and HINT,
/// which often hold the fix. Never contains query text. Adds no advice of its own: only the
/// caller knows what the statement read, and so which grant would fix a missing privilege
/// (see [`describe_with`]).
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// The privilege hint for statements that read the server's statistics views and functions.
pub const PG_MONITOR_HINT: &str = "grant pg_monitor to the monitoring role";

/// [`describe`], plus `privilege_hint` when the error is a missing privilege: the one hint
/// that fits the object the statement read (pg_monitor for statistics views, SELECT for an
/// application table).
pub fn describe_with(error: &tokio_postgres::Error, privilege_hint: &str) -> String {
    let text = describe(error);
    if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        format!("{text}; {privilege_hint}")
    } else {
        text
    }
}
