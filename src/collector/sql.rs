//! The engine behind definition files: checks `requires`, picks the SQL variant for the server
//! version, runs it, caps the rows and maps columns to metric families.

use std::error::Error;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};

use super::{CollectError, CollectFuture, Collector, Session, SkipReason};
use crate::definition::{Definition, Privilege, ServerRole};
use crate::metric::Family;
use crate::target::{describe_with, PG_MONITOR_HINT};

/// Label values longer than this are cut: a label is an identifier, not a document.
const MAX_LABEL_LEN: usize = 128;

pub struct SqlCollector {
    definition: Arc<Definition>,
    /// Rows cut by `max_series` in the last run.
    dropped: u64,
}

impl SqlCollector {
    pub fn new(definition: Arc<Definition>) -> SqlCollector {
        SqlCollector {
            definition,
            dropped: 0,
        }
    }
}

impl Collector for SqlCollector {
    fn collect<'a>(&'a mut self, session: &'a Session) -> CollectFuture<'a> {
        Box::pin(async move {
            let (families, dropped) = run(&self.definition, session).await?;
            self.dropped = dropped;
            Ok(families)
        })
    }

    fn dropped_series(&self) -> Option<u64> {
        self.definition.max_series.map(|_| self.dropped)
    }
}

async fn run(def: &Definition, session: &Session) -> Result<(Vec<Family>, u64), CollectError> {
    let server = &session.server;
    let major = server.major();
    let req = &def.requires;
    if req.min_version.is_some_and(|v| major < v) || req.max_version.is_some_and(|v| major > v) {
        return Err(CollectError::skipped(
            SkipReason::Version,
            format!(
                "needs PostgreSQL {}; the server runs {}",
                def.versions(),
                server.version
            ),
        ));
    }
    let query = def.query_for(major).ok_or_else(|| {
        CollectError::skipped(
            SkipReason::Version,
            format!(
                "has no query for PostgreSQL {}; it covers {}",
                server.version,
                def.versions()
            ),
        )
    })?;
    match (req.role, server.in_recovery) {
        (Some(ServerRole::Primary), true) => {
            return Err(CollectError::skipped(
                SkipReason::Standby,
                "runs on primaries only; this server is a standby",
            ))
        }
        (Some(ServerRole::Standby), false) => {
            return Err(CollectError::skipped(
                SkipReason::Primary,
                "runs on standbys only; this server is a primary",
            ))
        }
        _ => {}
    }
    if req.extension.is_some() || req.privilege.is_some() {
        let row = session
            .client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1), {}",
                    super::ROLE_COLUMNS
                ),
                &[&req.extension.as_deref().unwrap_or("")],
            )
            .await?;
        let (has_extension, superuser, monitor): (bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2));
        if let Some(extension) = &req.extension {
            if !has_extension {
                return Err(CollectError::skipped(
                    SkipReason::ExtensionMissing,
                    format!("extension {extension} is not installed in this database; run CREATE EXTENSION {extension}"),
                ));
            }
        }
        match req.privilege {
            Some(Privilege::Superuser) if !superuser => {
                return Err(CollectError::skipped(
                    SkipReason::Permission,
                    "needs a superuser connection",
                ))
            }
            Some(Privilege::PgMonitor) => super::pg_monitor_check(superuser, monitor)?,
            _ => {}
        }
    }
    let rows = match session.client.query(query.sql.as_str(), &[]).await {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Err(CollectError::skipped(
                SkipReason::Permission,
                describe_with(&error, PG_MONITOR_HINT),
            ))
        }
        Err(error) => return Err(error.into()),
    };
    let Some(first) = rows.first() else {
        return Ok((Vec::new(), 0));
    };
    let position = |column: &str| {
        first
            .columns()
            .iter()
            .position(|c| c.name() == column)
            .ok_or_else(|| {
                CollectError::failed(format!(
                    "the query returned no column \"{column}\", which the definition uses; \
                     fix the SQL or the definition (columns: {})",
                    first
                        .columns()
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    let label_at: Vec<usize> = def
        .labels
        .iter()
        .map(|l| position(l))
        .collect::<Result<_, _>>()?;
    let metric_at: Vec<usize> = def
        .metrics
        .iter()
        .map(|m| position(&m.column))
        .collect::<Result<_, _>>()?;
    let mut table: Vec<Vec<Cell>> = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut cells = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            cells.push(row.try_get::<_, Cell>(i).map_err(|e| {
                CollectError::failed(format!(
                    "column \"{}\": {}",
                    row.columns()[i].name(),
                    e.source()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string())
                ))
            })?);
        }
        table.push(cells);
    }
    let mut dropped = 0;
    if let Some(max) = def.max_series {
        if table.len() > max {
            if let Some(column) = &def.order_by {
                let at = position(column)?;
                table.sort_by(|a, b| {
                    b[at]
                        .number()
                        .unwrap_or(f64::MIN)
                        .total_cmp(&a[at].number().unwrap_or(f64::MIN))
                });
            }
            dropped = (table.len() - max) as u64;
            table.truncate(max);
        }
    }
    let families = def
        .metrics
        .iter()
        .zip(def.families())
        .zip(&metric_at)
        .map(|((metric, desc), &at)| {
            let mut family = desc.family();
            for cells in &table {
                let Some(value) = cells[at].number() else {
                    continue;
                };
                let labels: Vec<(&str, String)> = def
                    .labels
                    .iter()
                    .zip(&label_at)
                    .map(|(name, &i)| (name.as_str(), cells[i].label()))
                    .collect();
                let borrowed: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                family.push(&borrowed, value * metric.scale.unwrap_or(1.0));
            }
            family
        })
        .collect();
    Ok((families, dropped))
}

/// A result cell of any column type a definition may reasonably return.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Number(f64),
    Text(String),
    Null,
}

impl Cell {
    fn number(&self) -> Option<f64> {
        match self {
            Cell::Number(n) => Some(*n),
            Cell::Text(t) => t.trim().parse().ok(),
            Cell::Null => None,
        }
    }

    fn label(&self) -> String {
        let text = match self {
            Cell::Number(n) => n.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Null => String::new(),
        };
        match text.char_indices().nth(MAX_LABEL_LEN) {
            Some((cut, _)) => text[..cut].to_string(),
            None => text,
        }
    }
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::BOOL => Cell::Number(if bool::from_sql(ty, raw)? { 1.0 } else { 0.0 }),
            Type::INT2 => Cell::Number(i16::from_sql(ty, raw)? as f64),
            Type::INT4 => Cell::Number(i32::from_sql(ty, raw)? as f64),
            Type::INT8 => Cell::Number(i64::from_sql(ty, raw)? as f64),
            Type::OID => Cell::Number(u32::from_sql(ty, raw)? as f64),
            Type::XID => Cell::Number(u32::from_be_bytes(raw.try_into()?) as f64),
            Type::FLOAT4 => Cell::Number(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => Cell::Number(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Cell::Number(numeric(raw)?),
            Type::CHAR => Cell::Text((i8::from_sql(ty, raw)? as u8 as char).to_string()),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                Cell::Text(String::from_sql(ty, raw)?)
            }
            _ => {
                return Err(format!(
                    "type {ty} is not supported; cast it in the SQL (::float8 for values, ::text for labels)"
                )
                .into())
            }
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes PostgreSQL's binary NUMERIC: base-10000 digits with a weight and a sign.
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn Error + Sync + Send>> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    match sign {
        0xC000 => return Ok(f64::NAN),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let mut value = 0.0;
    for i in 0..ndigits {
        value += word(8 + 2 * i)? as f64 * 10000f64.powi(weight - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_numeric() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3
        let raw = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1A, 0x7C];
        assert!((numeric(&raw).unwrap() - 12345.678).abs() < 1e-9);
        let negative = [0, 1, 0, 0, 0x40, 0, 0, 0, 0, 7];
        assert_eq!(numeric(&negative).unwrap(), -7.0);
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 0.0);
    }

    #[test]
    fn labels_are_cut_and_numbers_parsed() {
        assert_eq!(Cell::Text("x".repeat(300)).label().len(), MAX_LABEL_LEN);
        assert_eq!(Cell::Text(" 42 ".into()).number(), Some(42.0));
        assert_eq!(Cell::Null.number(), None);
        assert_eq!(Cell::Null.label(), "");
    }
}
