//! The session of a pgBouncer admin console.
//!
//! The console speaks only the simple query protocol (tokio-postgres' `simple_query`; a
//! prepared statement fails), accepts no SET, and has nothing to make read-only: its SHOW
//! commands read the pooler's memory. So the PostgreSQL session setup is not applied; the
//! connection reads the version and is ready.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::{describe, ServerInfo};

/// Reads `SHOW VERSION` ("PgBouncer 1.18.0"). Old releases answered with a notice and no
/// row; they are refused with that reason rather than half-read.
pub(super) async fn server_info(client: &Client) -> Result<ServerInfo, String> {
    let messages = client
        .simple_query("SHOW VERSION")
        .await
        .map_err(|e| format!("SHOW VERSION failed: {}", describe(&e)))?;
    let text = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or("SHOW VERSION returned no row: not a pgBouncer admin console, or a pgBouncer too old to monitor")?;
    let (version, version_num) = parse_version(&text).ok_or_else(|| {
        format!("SHOW VERSION answered {text:?}, not \"PgBouncer <major>.<minor>.<patch>\"")
    })?;
    Ok(ServerInfo {
        version_num,
        version,
        in_recovery: false,
        start_time_seconds: 0.0,
    })
}

/// "PgBouncer 1.18.0" → ("1.18.0", 11800).
fn parse_version(text: &str) -> Option<(String, i32)> {
    let version = text.strip_prefix("PgBouncer ")?.split_whitespace().next()?;
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<i32>().ok().filter(|n| (0..100).contains(n)));
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((version.to_string(), major * 10000 + minor * 100 + patch))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("PgBouncer 1.18.0"),
            Some(("1.18.0".to_string(), 11800))
        );
        assert_eq!(
            parse_version("PgBouncer 1.23.1 (something)"),
            Some(("1.23.1".to_string(), 12301))
        );
        assert_eq!(parse_version("PostgreSQL 15"), None);
        assert_eq!(parse_version("PgBouncer x.y"), None);
    }
}
