//! `pgbouncer_stats`: SHOW STATS, per database, as counters in base units. The pooler's
//! own averages (avg_*) are left out: they cover its last stats_period, not the scrape
//! interval; rate() of the totals gives the same over any window, e.g. the average client
//! wait per transaction is rate(wait seconds) / rate(transactions).

use std::time::Duration;

use super::show::{number, show, text, MAX_POOLS};
use crate::collector::{CollectFuture, Collector, Lane, Session, Spec};
use crate::config::TargetKind;
use crate::metric::{describe_all, FamilyDesc, Metric};

pub fn spec() -> Spec {
    Spec {
        name: "pgbouncer_stats",
        description: "pgBouncer target: transactions, queries, bytes and time counters per database (SHOW STATS).",
        default_interval: Duration::from_secs(15),
        enabled_by_default: true,
        lane: Lane::Main,
        kind: TargetKind::Pgbouncer,
        scope: crate::config::Scope::Server,
        families,
        build: |_| Box::new(Stats { dropped: 0 }),
    }
}

crate::metric::metrics! {
    TRANSACTIONS = counter("pgbouncer_transactions_total", &["target", "database"], "Transactions pooled by pgBouncer for the database (SHOW STATS total_xact_count); in statement mode, queries.");
    QUERIES = counter("pgbouncer_queries_total", &["target", "database"], "Queries pooled by pgBouncer for the database (SHOW STATS total_query_count).");
    RECEIVED = counter("pgbouncer_received_bytes_total", &["target", "database"], "Network traffic received by pgBouncer from clients of the database (SHOW STATS total_received).");
    SENT = counter("pgbouncer_sent_bytes_total", &["target", "database"], "Network traffic sent by pgBouncer to clients of the database (SHOW STATS total_sent).");
    TRANSACTION_TIME = counter("pgbouncer_transaction_seconds_total", &["target", "database"], "Time clients of the database spent in transactions (SHOW STATS total_xact_time); pgBouncer 1.18 counts from the client's first statement, so the wait for a server is included.");
    QUERY_TIME = counter("pgbouncer_query_seconds_total", &["target", "database"], "Time clients of the database spent with a query running on a server (SHOW STATS total_query_time).");
    WAIT_TIME = counter("pgbouncer_client_wait_seconds_total", &["target", "database"], "Time clients of the database spent waiting for a server (SHOW STATS total_wait_time); its rate over rate(pgbouncer_transaction_seconds_total) is the share of transaction time spent queueing in the pooler.");
}

fn families() -> Vec<FamilyDesc> {
    describe_all(&[
        TRANSACTIONS,
        QUERIES,
        RECEIVED,
        SENT,
        TRANSACTION_TIME,
        QUERY_TIME,
        WAIT_TIME,
    ])
}

/// SHOW STATS column → family and the factor to its base unit (times are microseconds).
const COLUMNS: &[(&str, Metric, f64)] = &[
    ("total_xact_count", TRANSACTIONS, 1.0),
    ("total_query_count", QUERIES, 1.0),
    ("total_received", RECEIVED, 1.0),
    ("total_sent", SENT, 1.0),
    ("total_xact_time", TRANSACTION_TIME, 1e-6),
    ("total_query_time", QUERY_TIME, 1e-6),
    ("total_wait_time", WAIT_TIME, 1e-6),
];

struct Stats {
    dropped: u64,
}

impl Collector for Stats {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let rows = show(&session.client, "STATS").await?;
            let mut families: Vec<_> = COLUMNS
                .iter()
                .map(|(column, metric, factor)| (*column, *factor, metric.family()))
                .collect();
            self.dropped = 0;
            for (i, row) in rows.iter().enumerate() {
                let Some(database) = text(row, "database") else {
                    continue;
                };
                if i >= MAX_POOLS {
                    self.dropped += 1;
                    continue;
                }
                for (column, factor, family) in &mut families {
                    if let Some(value) = number(row, column) {
                        family.push(&[("database", database)], value * *factor);
                    }
                }
            }
            Ok(families.into_iter().map(|(_, _, f)| f).collect())
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        Some(self.dropped)
    }
}
