//! Connections, the loopback guard, schema detection and the id samples the traffic picks from.

use std::net::IpAddr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// Which SQL the traffic uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// fixtures/baseline.sql only: plain SQL, a naive `FOR UPDATE` claim on
    /// `chat.push_notifications`, no partitioned tables.
    Baseline,
    /// migrations/001..009 applied: the queue functions of 004, the subscription table of 006
    /// and the partitioned history tables of 007.
    Migrated,
}

impl Schema {
    pub fn name(self) -> &'static str {
        match self {
            Schema::Baseline => "baseline",
            Schema::Migrated => "migrated",
        }
    }
}

/// Parses the DSN (URL or key=value) and refuses hosts other than loopback or a Unix socket,
/// unless `allow_remote`: the generator writes to the database.
pub fn parse_dsn(dsn: &str, allow_remote: bool) -> Result<Config> {
    let config = Config::from_str(dsn).context("invalid --dsn / DATABASE_URL")?;
    if config.get_hosts().is_empty() {
        bail!("the DSN names no host; add host=127.0.0.1 (or a Unix socket directory)");
    }
    if allow_remote {
        return Ok(config);
    }
    for host in config.get_hosts() {
        if let Host::Tcp(name) = host {
            let loopback =
                name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "refusing to write load to host {name:?}: pgkpi-load only targets loopback \
                     addresses or Unix sockets; pass --allow-remote if this database is a \
                     throwaway copy"
                );
            }
        }
    }
    for addr in config.get_hostaddrs() {
        if !addr.is_loopback() {
            bail!("refusing to write load to hostaddr {addr}: loopback only unless --allow-remote");
        }
    }
    Ok(config)
}

/// Opens a connection named `pgkpi-load/<class>` (visible in pg_stat_activity and pg_locks).
pub async fn connect(base: &Config, class: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config = base.clone();
    config.application_name(format!("pgkpi-load/{class}"));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // Bounds every statement, so a stuck wait cannot outlive the run by much.
    client
        .batch_execute("SET statement_timeout = '30s'")
        .await?;
    Ok(client)
}

/// An error with PostgreSQL's message, SQLSTATE, DETAIL and HINT (tokio-postgres's Display
/// of a server error is only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; DETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; HINT: {hint}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// What exists in the database, detected once at start.
pub struct Catalog {
    pub migrated: bool,
    pub has_partitions: bool,
}

pub async fn catalog(client: &Client) -> Result<Catalog> {
    // query_typed: one round trip with an unnamed statement, so setup also works through a
    // transaction-mode pooler (a named statement may be prepared on one server connection and
    // executed on another).
    let row = client
        .query_typed(
            "SELECT to_regprocedure('core.claim_notifications(text,integer,interval)') IS NOT NULL,
                    to_regclass('core.analytics_events') IS NOT NULL
                    AND to_regclass('core.listing_views') IS NOT NULL
                    AND to_regclass('core.user_activity') IS NOT NULL
                    AND to_regclass('integration.external_api_logs') IS NOT NULL,
                    to_regclass('chat.messages') IS NOT NULL
                    AND to_regclass('core.bookings') IS NOT NULL
                    AND to_regclass('public.webhook_deliveries') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot inspect the schema")?
        .into_iter()
        .next()
        .context("the schema inspection returned no row")?;
    if !row.get::<_, bool>(2) {
        bail!(
            "the application schema is missing (chat.messages, core.bookings, \
             public.webhook_deliveries); load fixtures/baseline.sql and fixtures/seed.sql first"
        );
    }
    Ok(Catalog {
        migrated: row.get(0),
        has_partitions: row.get(1),
    })
}

/// A conversation and its two participants.
#[derive(Clone, Copy)]
pub struct Conversation {
    pub id: i64,
    pub client: i64,
    pub owner: i64,
}

/// A booking's listing and parties (to make new bookings look like existing ones).
#[derive(Clone, Copy)]
pub struct BookingParties {
    pub listing: i64,
    pub host: i64,
    pub guest: i64,
}

/// Ids sampled from the seeded data, lowest ids first: the seed puts its heavy conversations,
/// users and webhooks there, and the traffic picks with a skew towards the front.
pub struct Samples {
    pub conversations: Vec<Conversation>,
    pub bookings: Vec<BookingParties>,
    pub webhooks: Vec<i64>,
    /// The row the lock-contention scenario fights over.
    pub hot_booking: i64,
}

pub async fn samples(client: &Client) -> Result<Samples> {
    let conversations: Vec<Conversation> = client
        .query_typed(
            "SELECT id, client_user_id, owner_user_id FROM chat.conversations ORDER BY id LIMIT 20000",
            &[],
        )
        .await?
        .iter()
        .map(|r| Conversation {
            id: r.get(0),
            client: r.get(1),
            owner: r.get(2),
        })
        .collect();
    let bookings: Vec<BookingParties> = client
        .query_typed(
            "SELECT listing_id, host_user_id, guest_user_id FROM core.bookings ORDER BY id LIMIT 20000",
            &[],
        )
        .await?
        .iter()
        .map(|r| BookingParties {
            listing: r.get(0),
            host: r.get(1),
            guest: r.get(2),
        })
        .collect();
    let webhooks: Vec<i64> = client
        .query_typed(
            "SELECT id FROM public.webhooks WHERE active ORDER BY id LIMIT 20000",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let hot_booking: Option<i64> = client
        .query_typed("SELECT min(id) FROM core.bookings", &[])
        .await?
        .first()
        .and_then(|r| r.get(0));
    if conversations.is_empty() || bookings.is_empty() || webhooks.is_empty() {
        bail!(
            "the database has no conversations, bookings or active webhooks to pick from; \
             load fixtures/seed.sql first (psql -v ON_ERROR_STOP=1 -v scale=0.1 -f fixtures/seed.sql)"
        );
    }
    Ok(Samples {
        conversations,
        bookings,
        webhooks,
        hot_booking: hot_booking.unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_accepted() {
        for ok in [
            "host=127.0.0.1 user=postgres",
            "host=localhost user=postgres",
            "postgresql://postgres@[::1]:5432/app",
            "host=/var/run/postgresql user=postgres",
            "host=127.0.0.1 hostaddr=127.0.0.1 user=postgres",
        ] {
            assert!(parse_dsn(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "host=db.example user=postgres",
            "postgresql://postgres@10.0.0.5/app",
            "host=localhost hostaddr=10.0.0.5 user=postgres",
        ] {
            let err = parse_dsn(bad, false).unwrap_err().to_string();
            assert!(err.contains("--allow-remote"), "{bad}: {err}");
            assert!(parse_dsn(bad, true).is_ok(), "{bad}");
        }
        assert!(parse_dsn("user=postgres", false).is_err());
    }
}
