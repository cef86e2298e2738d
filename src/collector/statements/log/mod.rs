//! The log source: per (database, workload) latency samples from the durations the server
//! writes to its structured log, weighted by the rule that logged them.
//!
//! Each poll reads the server's logging settings ([`weights`]), asks `pg_current_logfile()`
//! for the file to follow ([`follow`]), reads what was appended through one of the two
//! [`access`] paths, keeps the durations of statement executions ([`parse`]) with their
//! workload and weight, and drops everything else of the record (text, parameters) there and
//! then. The samples give the histogram its shape and the window gauges their values
//! ([`window`]); pg_stat_statements keeps giving the exact counts.

pub mod access;
pub mod follow;
pub mod parse;
pub mod weights;
pub mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use tokio_postgres::Client;

use self::follow::{Follower, ReadError};
use self::parse::{Format, Skip};
use self::weights::{threshold_ms, LogSettings, Missing};
use self::window::{Logged, Samples};
use super::settings::{LogAccess, LogSourceConfig};

/// What the log source is doing; each is a label value of `pg_statement_log_source_status`.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// `statements.log.access = "off"`.
    Off,
    /// A server setting keeps the log from covering every execution.
    Settings(Missing),
    /// A privilege is missing (the text says which grant).
    Grant(String),
    /// The server writes no structured log file now (pg_current_logfile() is NULL).
    NoLogfile,
    /// The file could not be read (the text says why; never file contents).
    Unreadable(String),
    /// The weights changed in this interval: its samples are not used.
    WeightsChanged,
    Reading,
}

impl Status {
    pub const LABELS: [&'static str; 7] = [
        "off",
        "settings",
        "grant",
        "no_logfile",
        "unreadable",
        "weights_changed",
        "ok",
    ];

    pub fn label(&self) -> &'static str {
        match self {
            Status::Off => "off",
            Status::Settings(_) => "settings",
            Status::Grant(_) => "grant",
            Status::NoLogfile => "no_logfile",
            Status::Unreadable(_) => "unreadable",
            Status::WeightsChanged => "weights_changed",
            Status::Reading => "ok",
        }
    }

    /// What to do about it, for the status page, `check-config` and the log.
    pub fn hint(&self) -> Option<String> {
        match self {
            Status::Off | Status::Reading | Status::WeightsChanged => None,
            Status::Settings(missing) => Some(missing.hint().to_string()),
            Status::Grant(grant) => Some(grant.clone()),
            Status::NoLogfile => Some(
                "pg_current_logfile() is NULL: logging_collector must be on and \
                 log_destination include jsonlog or csvlog"
                    .into(),
            ),
            Status::Unreadable(why) => Some(why.clone()),
        }
    }

    /// The interval's samples can shape the histogram.
    pub fn usable(&self) -> bool {
        *self == Status::Reading
    }
}

/// What the log source needs, for `pgkpi check-config` (which does not connect, so it lists
/// the requirements rather than checking them; the status metric and `/debug/statements` say
/// what a running pgkpi found missing).
pub fn requirements(config: &LogSourceConfig) -> Vec<String> {
    let mut out = vec![
        "server: logging_collector = on, log_destination including jsonlog (15+) or csvlog, \
         log_min_duration_sample = 0 with log_statement_sample_rate > 0 (or \
         log_min_duration_statement = 0), log_transaction_sample_rate = 0, lc_messages = 'C'"
            .to_string(),
    ];
    match config.access {
        LogAccess::Off => return Vec::new(),
        LogAccess::Path => {
            out.push(
                "grant: GRANT EXECUTE ON FUNCTION pg_current_logfile(text) TO <monitoring role>"
                    .into(),
            );
            out.push(match &config.directory {
                Some(dir) => format!(
                    "files: pgkpi's OS user reads the log files in {}",
                    dir.display()
                ),
                None => "files: pgkpi's OS user reads the server's log_directory (set \
                         statements.log.directory when it is mounted elsewhere)"
                    .into(),
            });
        }
        LogAccess::PgReadBinaryFile => out.push(
            "grant: GRANT EXECUTE ON FUNCTION pg_current_logfile(text), pg_read_binary_file(text, \
             bigint, bigint, boolean), pg_stat_file(text, boolean) TO <monitoring role> (lets the \
             role read any file the server can read)"
                .into(),
        ),
    }
    out
}

/// Counts the log source exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Records read (every message, not only durations).
    pub records: u64,
    /// Durations kept as samples.
    pub samples: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// Durations no logging rule explains (logged under other settings): not weighed.
    pub unweighable: u64,
}

/// A logged execution's (database oid, workload index), or None for a database pgkpi does not
/// know (yet).
pub type Classify<'a> = dyn Fn(&str, i64, &str) -> Option<(u32, usize)> + Sync + 'a;

pub struct LogSource {
    config: LogSourceConfig,
    follower: Follower,
    pub settings: Option<LogSettings>,
    pub status: Status,
    pub counts: Counts,
    /// Per (dbid, workload).
    pub samples: BTreeMap<(u32, usize), Samples>,
}

pub const SETTINGS_SQL: &str = "SELECT /* pgkpi statements: log settings */ name, setting \
     FROM pg_settings WHERE name IN ('log_min_duration_statement', 'log_min_duration_sample', \
     'log_statement_sample_rate', 'log_transaction_sample_rate', 'log_destination', \
     'logging_collector', 'lc_messages', 'log_directory', 'data_directory')";
pub const LOGFILE_SQL: &str = "SELECT /* pgkpi statements: log file */ pg_current_logfile($1)";

impl LogSource {
    pub fn new(config: &LogSourceConfig) -> LogSource {
        LogSource {
            config: config.clone(),
            follower: Follower::default(),
            settings: None,
            status: if config.access == LogAccess::Off {
                Status::Off
            } else {
                Status::NoLogfile
            },
            counts: Counts::default(),
            samples: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.access != LogAccess::Off
    }

    pub fn min_samples(&self) -> usize {
        self.config.min_samples
    }

    pub fn lost(&self) -> follow::Lost {
        self.follower.lost
    }

    pub fn bytes_read(&self) -> u64 {
        self.follower.bytes_read
    }

    /// Reads what the server logged since the last poll into the interval's samples, and
    /// sets the status. Never fails the collector: any problem is a status, and the estimate
    /// takes over.
    pub async fn poll(&mut self, client: &Client, classify: &Classify<'_>) {
        if !self.enabled() {
            return;
        }
        let status = self.read(client, classify).await;
        if !status.usable() && status != self.status {
            if let Some(hint) = status.hint() {
                tracing::warn!(
                    collector = "statements",
                    status = status.label(),
                    hint = %hint,
                    "latency log source unavailable; the histogram falls back to the estimate"
                );
            }
        }
        if !matches!(status, Status::Reading | Status::WeightsChanged) {
            self.follower.reset();
            for samples in self.samples.values_mut() {
                samples.clear_window();
            }
        }
        self.status = status;
    }

    async fn read(&mut self, client: &Client, classify: &Classify<'_>) -> Status {
        let (settings, directory) = match read_settings(client).await {
            Ok(read) => read,
            Err(e) => return Status::Unreadable(format!("cannot read the logging settings: {e}")),
        };
        if let Some(missing) = settings.missing() {
            self.settings = Some(settings);
            return Status::Settings(missing);
        }
        let format = settings.format().expect("checked by missing()");
        let changed = self
            .settings
            .as_ref()
            .is_some_and(|before| before.weights_changed(&settings));
        self.settings = Some(settings.clone());
        let current: Option<String> = match client
            .query_one(LOGFILE_SQL, &[&format.destination()])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) if is_permission(&e) => {
                return Status::Grant(
                    "GRANT EXECUTE ON FUNCTION pg_current_logfile(text) TO <monitoring role>"
                        .into(),
                )
            }
            Err(e) => return Status::Unreadable(e.to_string()),
        };
        let Some(current) = current else {
            return Status::NoLogfile;
        };
        let mut counts = self.counts;
        let samples = &mut self.samples;
        let mut on_record = |format: Format, record: &[u8]| {
            counts.records += 1;
            let outcome = parse::parse(format, record, |execution| {
                let weight = settings.weight(execution.duration_ms)?;
                let key = classify(execution.dbname, execution.query_id, execution.text)?;
                Some((key, execution.duration_ms, weight))
            });
            match outcome {
                Ok(Some((key, duration_ms, weight))) => {
                    counts.samples += 1;
                    samples.entry(key).or_default().push(Logged {
                        duration_ms,
                        weight,
                    });
                }
                Ok(None) => counts.unweighable += 1,
                Err(Skip::Malformed) => counts.malformed += 1,
                Err(Skip::NotADuration) => {}
            }
        };
        let result = match self.config.access {
            LogAccess::Off => return Status::Off,
            LogAccess::Path => {
                let Some(directory) = self.config.directory.clone().or(directory) else {
                    return Status::Unreadable(NO_DIRECTORY.into());
                };
                let reader = access::LocalDir { directory };
                self.follower
                    .poll(&reader, &current, format, &mut on_record)
                    .await
            }
            LogAccess::PgReadBinaryFile => {
                let reader = access::Server { client };
                self.follower
                    .poll(&reader, &current, format, &mut on_record)
                    .await
            }
        };
        self.counts = counts;
        match result {
            Ok(()) if changed => Status::WeightsChanged,
            Ok(()) => Status::Reading,
            Err(ReadError::Permission(what)) => match self.config.access {
                LogAccess::PgReadBinaryFile => Status::Grant(what),
                _ => Status::Unreadable(format!(
                    "permission denied: {what} (give pgkpi's OS user read access to the log \
                     directory, e.g. the server OS user's group with log_file_mode = 0640)"
                )),
            },
            Err(ReadError::Other(why)) => Status::Unreadable(why),
        }
    }

    /// Ends the interval for every (database, workload): its samples join the window when the
    /// status allows.
    pub fn close_interval(&mut self, now: Instant) {
        let keep = self.status.usable();
        let changed = self.status == Status::WeightsChanged;
        for samples in self.samples.values_mut() {
            if changed {
                samples.clear_window();
            }
            samples.close_interval(now, self.config.window, keep);
        }
        self.samples.retain(|_, s| !s.is_empty());
    }
}

/// `path` access without a directory: neither configured nor readable from the server.
const NO_DIRECTORY: &str = "set statements.log.directory (the server's data_directory is \
                            hidden from this role; pg_read_all_settings shows it)";

fn is_permission(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
}

/// The logging settings and the server's log directory (None when data_directory is hidden).
async fn read_settings(
    client: &Client,
) -> Result<(LogSettings, Option<PathBuf>), tokio_postgres::Error> {
    let rows = client.query(SETTINGS_SQL, &[]).await?;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for row in rows {
        values.insert(row.get(0), row.get(1));
    }
    let text = |name: &str| values.get(name).cloned().unwrap_or_default();
    let number = |name: &str, off: f64| text(name).parse::<f64>().unwrap_or(off);
    let settings = LogSettings {
        min_duration_statement_ms: threshold_ms(number("log_min_duration_statement", -1.0) as i64),
        // Absent before 13: nothing is sampled.
        min_duration_sample_ms: threshold_ms(number("log_min_duration_sample", -1.0) as i64),
        sample_rate: number("log_statement_sample_rate", 0.0),
        transaction_sample_rate: number("log_transaction_sample_rate", 0.0),
        destination: text("log_destination"),
        logging_collector: text("logging_collector") == "on",
        lc_messages: text("lc_messages"),
    };
    let log_directory = PathBuf::from(text("log_directory"));
    let directory = if log_directory.is_absolute() {
        Some(log_directory)
    } else {
        values
            .get("data_directory")
            .map(|data| PathBuf::from(data).join(log_directory))
    };
    Ok((settings, directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_name_the_settings_and_the_grants_of_each_access() {
        let mut config = LogSourceConfig::default();
        assert!(requirements(&config).is_empty());
        config.access = LogAccess::Path;
        let path = requirements(&config).join("\n");
        assert!(path.contains("log_statement_sample_rate") && path.contains("pg_current_logfile"));
        assert!(!path.contains("pg_read_binary_file"));
        config.access = LogAccess::PgReadBinaryFile;
        let server = requirements(&config).join("\n");
        assert!(server.contains("pg_read_binary_file") && server.contains("any file"));
    }
}
