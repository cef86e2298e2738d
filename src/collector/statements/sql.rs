//! The collector's SQL: the pg_stat_statements columns of each extension release, the queries
//! built from them, and the decoding of their rows. Every statement carries a
//! `/* pgkpi statements: <what> */` comment so that its own cost shows in pg_stat_statements.
//!
//! The installed extension version defines the columns, even when the server was upgraded
//! without `ALTER EXTENSION pg_stat_statements UPDATE`.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::delta::{Counters, Entry, EntryKey};
use super::estimate::Cumulative;
use crate::collector::{CollectError, SkipReason};
use crate::sql_text::quote_ident;

/// The pg_stat_statements releases whose columns differ; a later release reads as the
/// latest one listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Release {
    /// 1.8 (PostgreSQL 13): the oldest supported.
    V1_8,
    /// 1.9 (14): `toplevel`, `pg_stat_statements_info` (`dealloc`, `stats_reset`).
    V1_9,
    /// 1.10 (15): `temp_blk_read_time`, `temp_blk_write_time`.
    V1_10,
    /// 1.11 (17): `blk_*_time` split into `shared_`/`local_blk_*_time`; `stats_since`,
    /// `minmax_stats_since`.
    V1_11,
}

impl Release {
    /// The release of an `extversion` such as "1.10"; None before 1.8.
    pub fn of(version: (u32, u32)) -> Option<Release> {
        Some(match version {
            v if v >= (1, 11) => Release::V1_11,
            v if v >= (1, 10) => Release::V1_10,
            v if v >= (1, 9) => Release::V1_9,
            v if v >= (1, 8) => Release::V1_8,
            _ => return None,
        })
    }

    /// `pg_stat_statements_info` exists (dealloc and the last full reset).
    pub fn has_info(self) -> bool {
        self >= Release::V1_9
    }

    /// The column expressions that differ between releases.
    fn columns(self) -> Columns {
        const NO_SINCE: &str = "NULL::float8, NULL::float8";
        match self {
            Release::V1_8 => Columns {
                toplevel: "true",
                io_read: "blk_read_time",
                io_write: "blk_write_time",
                since: NO_SINCE,
            },
            Release::V1_9 => Columns {
                toplevel: "toplevel",
                ..Release::V1_8.columns()
            },
            Release::V1_10 => Columns {
                toplevel: "toplevel",
                io_read: "blk_read_time + temp_blk_read_time",
                io_write: "blk_write_time + temp_blk_write_time",
                since: NO_SINCE,
            },
            Release::V1_11 => Columns {
                toplevel: "toplevel",
                io_read: "shared_blk_read_time + local_blk_read_time + temp_blk_read_time",
                io_write: "shared_blk_write_time + local_blk_write_time + temp_blk_write_time",
                since: "extract(epoch FROM stats_since)::float8, \
                        extract(epoch FROM minmax_stats_since)::float8",
            },
        }
    }
}

/// Column expressions of [`entries_sql`] that depend on the release.
struct Columns {
    /// `toplevel`, or `true` before it existed (every entry was top-level then).
    toplevel: &'static str,
    /// Time spent reading blocks, ms.
    io_read: &'static str,
    /// Time spent writing blocks, ms.
    io_write: &'static str,
    /// `stats_since, minmax_stats_since` as Unix seconds, or two NULLs.
    since: &'static str,
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

pub const EXTENSION_SQL: &str =
    "SELECT /* pgkpi statements: extension */ current_database()::text, \
       (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'pg_stat_statements'), \
       (SELECT e.extversion::text FROM pg_extension e WHERE e.extname = 'pg_stat_statements'), \
       current_setting('pg_stat_statements.max', true), \
       current_setting('pg_stat_statements.track_planning', true), \
       (SELECT oid FROM pg_roles WHERE rolname = current_user)";

/// The extension as installed in the target's database.
pub struct Extension {
    pub database: String,
    pub schema: String,
    pub release: Release,
    pub max: Option<f64>,
    pub track_planning: bool,
    /// The monitoring role's oid: its statements are pgkpi's own.
    pub own_role: Option<u32>,
}

impl Extension {
    /// Reads the row of [`EXTENSION_SQL`]; a skip when the extension is missing or too old.
    pub fn from_row(row: &Row) -> Result<Extension, CollectError> {
        let database: String = row.get(0);
        let (Some(schema), Some(version_text)) = (
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
        ) else {
            return Err(CollectError::skipped(
                SkipReason::ExtensionMissing,
                format!(
                    "pg_stat_statements is not installed in database \"{database}\"; run CREATE \
                     EXTENSION pg_stat_statements there (with shared_preload_libraries = \
                     'pg_stat_statements' in postgresql.conf)"
                ),
            ));
        };
        let Some(release) = Release::of(parse_version(&version_text)) else {
            return Err(CollectError::skipped(
                SkipReason::Version,
                format!(
                    "pg_stat_statements {version_text} in database \"{database}\" is older than \
                     1.8 (PostgreSQL 13); run ALTER EXTENSION pg_stat_statements UPDATE"
                ),
            ));
        };
        Ok(Extension {
            database,
            schema,
            release,
            max: row
                .get::<_, Option<String>>(3)
                .and_then(|v| v.parse::<f64>().ok()),
            track_planning: row.get::<_, Option<String>>(4).as_deref() == Some("on"),
            own_role: row.get(5),
        })
    }

    /// `pg_stat_statements_info` (1.9+): dealloc and the last full reset.
    pub fn info_sql(&self) -> String {
        format!(
            "SELECT /* pgkpi statements: info */ dealloc, \
             extract(epoch FROM stats_reset)::float8 \
             FROM {}.pg_stat_statements_info",
            quote_ident(&self.schema)
        )
    }

    /// The counters of every entry, without query text.
    pub fn entries_sql(&self) -> String {
        entries_sql(&self.schema, self.release)
    }

    /// The text of the statements whose queryid is in `$1`.
    pub fn text_sql(&self) -> String {
        format!(
            "SELECT /* pgkpi statements: text */ dbid, queryid, query \
             FROM {}.pg_stat_statements(true) WHERE queryid = ANY($1)",
            quote_ident(&self.schema)
        )
    }

    /// Maps a failure to a skip when the library is not preloaded.
    pub fn query_error(&self, error: tokio_postgres::Error) -> CollectError {
        if error.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) {
            return CollectError::skipped(
                SkipReason::NotPreloaded,
                format!(
                    "pg_stat_statements is installed in database \"{}\" but not loaded; add \
                     pg_stat_statements to shared_preload_libraries in postgresql.conf and \
                     restart the server",
                    self.database
                ),
            );
        }
        CollectError::from(error)
    }
}

/// The counters query of a release; `read_entry` decodes its rows.
fn entries_sql(schema: &str, release: Release) -> String {
    let Columns {
        toplevel,
        io_read,
        io_write,
        since,
    } = release.columns();
    format!(
        "SELECT /* pgkpi statements: poll */ userid, dbid, queryid, {toplevel}, calls, \
         total_exec_time, min_exec_time, max_exec_time, mean_exec_time, stddev_exec_time, \
         rows, shared_blks_hit, shared_blks_read, temp_blks_read, temp_blks_written, \
         wal_bytes::float8, total_plan_time, ({io_read})::float8, ({io_write})::float8, {since} \
         FROM {}.pg_stat_statements(false)",
        quote_ident(schema)
    )
}

/// Reads the row of [`Extension::info_sql`]: (dealloc, stats_reset).
pub fn read_info(row: &Row) -> (Option<f64>, Option<f64>) {
    (
        row.get::<_, Option<i64>>(0).map(|v| v as f64),
        row.get::<_, Option<f64>>(1),
    )
}

/// Reads one row of [`Extension::entries_sql`]; None for an entry whose queryid is hidden.
pub fn read_entry(row: &Row) -> Result<Option<(EntryKey, Entry)>, tokio_postgres::Error> {
    let Some(queryid) = row.try_get::<_, Option<i64>>(2)? else {
        return Ok(None);
    };
    let f = |i: usize| -> Result<f64, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<f64>>(i)?.unwrap_or(0.0))
    };
    let n = |i: usize| -> Result<f64, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<i64>>(i)?.unwrap_or(0) as f64)
    };
    let key = EntryKey {
        userid: row.try_get(0)?,
        dbid: row.try_get(1)?,
        queryid,
        toplevel: row.try_get::<_, Option<bool>>(3)?.unwrap_or(true),
    };
    let calls = n(4)?;
    let entry = Entry {
        counters: Counters {
            calls,
            exec_ms: f(5)?,
            rows: n(10)?,
            shared_blks_hit: n(11)?,
            shared_blks_read: n(12)?,
            temp_blks_read: n(13)?,
            temp_blks_written: n(14)?,
            wal_bytes: f(15)?,
            plan_ms: f(16)?,
            io_read_ms: f(17)?,
            io_write_ms: f(18)?,
        },
        timing: Cumulative {
            calls,
            total: f(5)?,
            min: f(6)?,
            max: f(7)?,
            mean: f(8)?,
            stddev: f(9)?,
        },
        stats_since: row.try_get(19)?,
        minmax_since: row.try_get(20)?,
    };
    Ok(Some((key, entry)))
}

pub const DATABASES_SQL: &str =
    "SELECT /* pgkpi statements: names */ oid, datname::text FROM pg_database";
pub const ROLES_SQL: &str = "SELECT /* pgkpi statements: names */ oid, rolname::text FROM pg_roles";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_follows_the_extension_version() {
        let sql = |version| entries_sql("public", Release::of(version).unwrap());
        assert!(sql((1, 8)).contains("(blk_read_time)"));
        assert!(!sql((1, 8)).contains("toplevel"));
        assert!(sql((1, 9)).contains("toplevel") && !sql((1, 9)).contains("temp_blk_read_time"));
        assert!(sql((1, 10)).contains("temp_blk_read_time"));
        assert!(!sql((1, 10)).contains("stats_since"));
        let v17 = entries_sql("my \"schema\"", Release::of((1, 11)).unwrap());
        assert!(v17.contains("shared_blk_read_time") && v17.contains("stats_since"));
        assert!(v17.contains("minmax_stats_since") && !v17.contains(" blk_read_time"));
        assert!(v17.contains("\"my \"\"schema\"\"\".pg_stat_statements(false)"));
        // PostgreSQL 18 ships 1.12: read with the 1.11 columns.
        assert_eq!(sql((1, 12)), sql((1, 11)));
    }

    #[test]
    fn release_follows_the_version_text() {
        let release = |text: &str| Release::of(parse_version(text));
        assert_eq!(parse_version("1.10"), (1, 10));
        assert_eq!(release("1.7"), None);
        assert_eq!(release("1.8"), Some(Release::V1_8));
        assert_eq!(release("1.9"), Some(Release::V1_9));
        assert_eq!(release("1.10"), Some(Release::V1_10));
        assert_eq!(release("1.11"), Some(Release::V1_11));
        assert_eq!(release("2.0"), Some(Release::V1_11));
        assert!(!Release::V1_8.has_info() && Release::V1_9.has_info());
    }
}
