//! The last step of `relation_stats` and `relation_sizes`: name the relations exported one by
//! one (the caps bound how many) and write the table and index families.

use super::columns::{names, Col, INDEX_LABELS, TABLE_LABELS};
use super::rollup::{families, to_name, Series};
use crate::collector::{CollectError, Session};
use crate::metric::Family;

/// The families of capped `tables` and `indexes`, their labels read by one bounded query.
pub async fn export(
    session: &Session,
    children: bool,
    (tables, table_cols): (&[Series], &[Col]),
    (indexes, index_cols): (&[Series], &[Col]),
) -> Result<Vec<Family>, CollectError> {
    let (named_tables, _) = to_name(tables);
    let (named_indexes, their_tables) = to_name(indexes);
    let names = names(
        session,
        children,
        &[named_tables, their_tables].concat(),
        &named_indexes,
    )
    .await?;
    let mut out = families(tables, &names, TABLE_LABELS, table_cols);
    out.extend(families(indexes, &names, INDEX_LABELS, index_cols));
    Ok(out)
}
