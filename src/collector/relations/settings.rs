//! The `[relations]` configuration: the caps and thresholds of the relation collectors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// `[relations]`: options of the `relation_stats`, `relation_sizes` and `index_health`
/// collectors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelationsConfig {
    /// Most tables with series of their own; the others are summed into `relname="(other)"`.
    pub max_tables: usize,
    /// Most indexes with series of their own; the others are summed per table into
    /// `indexrelname="(other)"` (or into one `(other)` row when their table has no series).
    pub max_indexes: usize,
    /// Most unused, invalid and duplicate indexes listed one by one (each list; the largest
    /// first). The counts and reclaimable bytes always cover all of them.
    pub max_listed: usize,
    /// Unused indexes smaller than this (bytes) are not reported: not worth a migration.
    pub unused_min_bytes: u64,
    /// Export partitions as tables of their own (with a `parent` label) instead of rolling
    /// them up into their partitioned root. Costs a series per partition and per index.
    pub partition_children: bool,
    /// `relation_sizes` re-measures only the tables written, vacuumed, analyzed or rewritten
    /// since its previous run (and their indexes) and carries the other sizes; every
    /// `full_pass_interval` it measures everything again.
    #[serde(with = "duration")]
    pub full_pass_interval: Duration,
    /// Tables read per statement by the catalog-wide queries (statistics and names of the
    /// tables and their indexes): each statement's time stays bounded however large the
    /// catalog; lower it when `statement_timeout` is tight.
    pub page_size: usize,
}

impl Default for RelationsConfig {
    fn default() -> Self {
        RelationsConfig {
            max_tables: 200,
            max_indexes: 300,
            max_listed: 50,
            unused_min_bytes: 1024 * 1024,
            partition_children: false,
            full_pass_interval: Duration::from_secs(3600),
            page_size: 5_000,
        }
    }
}

impl RelationsConfig {
    /// Checks the bounds; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value, default) in [
            ("max_tables", self.max_tables, 200),
            ("max_indexes", self.max_indexes, 300),
            ("max_listed", self.max_listed, 50),
        ] {
            if value == 0 || value > 10_000 {
                return Err(format!(
                    "relations.{key} = {value}: use 1 to 10000 series (default {default})"
                ));
            }
        }
        if !(100..=100_000).contains(&self.page_size) {
            return Err(format!(
                "relations.page_size = {}: use 100 to 100000 tables per statement (default 5000)",
                self.page_size
            ));
        }
        if self.full_pass_interval < Duration::from_secs(60) {
            return Err(format!(
                "relations.full_pass_interval = {:?}: use at least 60s (default 1h)",
                self.full_pass_interval
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds_name_the_key() {
        let config = RelationsConfig {
            max_indexes: 0,
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("relations.max_indexes"));
        assert!(RelationsConfig::default().validate().is_ok());
        let config = RelationsConfig {
            full_pass_interval: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("relations.full_pass_interval"));
        let config = RelationsConfig {
            page_size: 10,
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("relations.page_size"));
    }
}
