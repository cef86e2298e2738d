//! The engine behind definition files: checks `requires`, picks the SQL variant for the server
//! version, runs it, caps the rows and maps columns to metric families.

use std::error::Error;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::Row;

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
    // Read row by row, keeping at most `max_series` (twice that between compactions): a
    // definition over every table of a 50 000-table catalogue held all its rows, then all
    // their cells, only to keep 50.
    let privilege = |error: tokio_postgres::Error| -> CollectError {
        if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            CollectError::skipped(
                SkipReason::Permission,
                describe_with(&error, PG_MONITOR_HINT),
            )
        } else {
            error.into()
        }
    };
    let rows = session
        .client
        .query_raw(query.sql.as_str(), std::iter::empty::<&dyn ToSql>())
        .await
        .map_err(privilege)?;
    let mut rows = std::pin::pin!(rows);
    let Some(first) = rows.next().await.transpose().map_err(privilege)? else {
        return Ok((Vec::new(), 0));
    };
    let columns: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let position = |column: &str| {
        columns.iter().position(|c| c == column).ok_or_else(|| {
            CollectError::failed(format!(
                "the query returned no column \"{column}\", which the definition uses; \
                 fix the SQL or the definition (columns: {})",
                columns.join(", ")
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
    let order_at = match (&def.max_series, &def.order_by) {
        (Some(_), Some(column)) => Some(position(column)?),
        _ => None,
    };
    let mut kept = Kept::new(def.max_series, order_at);
    let first = cells(&first)?;
    // Rows the query itself left out, by its own count (the same on every row).
    let ranked = match &def.ranked_rows {
        Some(column) => first[position(column)?].number(),
        None => None,
    };
    kept.push(first);
    while let Some(row) = rows.next().await.transpose().map_err(privilege)? {
        kept.push(cells(&row)?);
    }
    let (table, dropped) = kept.finish();
    let dropped = match ranked {
        Some(ranked) => dropped.max((ranked as u64).saturating_sub(table.len() as u64)),
        None => dropped,
    };
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

/// One row's cells, converted as the definition reads them.
fn cells(row: &Row) -> Result<Vec<Cell>, CollectError> {
    (0..row.len())
        .map(|i| {
            row.try_get::<_, Cell>(i).map_err(|e| {
                CollectError::failed(format!(
                    "column \"{}\": {}",
                    row.columns()[i].name(),
                    e.source()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string())
                ))
            })
        })
        .collect()
}

/// The rows a definition keeps while they stream in: all of them without `max_series`; with
/// it, the first `max_series`, or with `order_by` the largest by that column (ties in query
/// order), compacted whenever twice as many have piled up. The same rows as sorting them all
/// and cutting, in memory bounded by the cap.
struct Kept {
    max: Option<usize>,
    order_at: Option<usize>,
    rows: Vec<Vec<Cell>>,
    seen: u64,
}

impl Kept {
    fn new(max: Option<usize>, order_at: Option<usize>) -> Kept {
        Kept {
            max,
            order_at,
            rows: Vec::new(),
            seen: 0,
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        self.seen += 1;
        match (self.max, self.order_at) {
            (None, _) => self.rows.push(row),
            (Some(max), None) => {
                if self.rows.len() < max {
                    self.rows.push(row);
                }
            }
            (Some(max), Some(_)) => {
                self.rows.push(row);
                if self.rows.len() >= 2 * max.max(1) {
                    self.compact(max);
                }
            }
        }
    }

    /// The `max` largest by the order column; a stable sort keeps ties in query order.
    fn compact(&mut self, max: usize) {
        if let Some(at) = self.order_at {
            self.rows.sort_by(|a, b| {
                b[at]
                    .number()
                    .unwrap_or(f64::MIN)
                    .total_cmp(&a[at].number().unwrap_or(f64::MIN))
            });
        }
        self.rows.truncate(max);
    }

    /// The rows kept and how many the cap cut.
    fn finish(mut self) -> (Vec<Vec<Cell>>, u64) {
        let Some(max) = self.max else {
            return (self.rows, 0);
        };
        if self.seen as usize > max || self.rows.len() > max {
            self.compact(max);
        }
        let dropped = self.seen.saturating_sub(max as u64);
        (self.rows, dropped)
    }
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

    /// Rows of (value, arrival) pushed through `Kept` and the reference: sort all, then cut.
    fn kept(values: &[f64], max: Option<usize>, ordered: bool) -> (Vec<(f64, f64)>, u64) {
        let mut kept = Kept::new(max, ordered.then_some(0));
        for (i, v) in values.iter().enumerate() {
            kept.push(vec![Cell::Number(*v), Cell::Number(i as f64)]);
        }
        let (rows, dropped) = kept.finish();
        let rows = rows
            .iter()
            .map(|r| (r[0].number().unwrap(), r[1].number().unwrap()))
            .collect();
        (rows, dropped)
    }

    #[test]
    fn streamed_rows_are_capped_as_sorting_them_all_would() {
        // Many compactions (cap 3, 40 rows), ties across them.
        let values: Vec<f64> = (0..40).map(|i| ((i * 7) % 10) as f64).collect();
        let mut reference: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i as f64))
            .collect();
        reference.sort_by(|a, b| b.0.total_cmp(&a.0));
        reference.truncate(3);
        assert_eq!(kept(&values, Some(3), true), (reference, 37));
        // Without order_by: the first rows; without a cap: everything, in query order.
        assert_eq!(
            kept(&values, Some(2), false),
            (vec![(0.0, 0.0), (7.0, 1.0)], 38)
        );
        assert_eq!(kept(&values, None, false).0.len(), 40);
        // Under the cap nothing is sorted or cut.
        assert_eq!(
            kept(&[1.0, 5.0], Some(3), true),
            (vec![(1.0, 0.0), (5.0, 1.0)], 0)
        );
    }
}
