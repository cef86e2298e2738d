//! The `[locks]` configuration: options of the `locks` and `activity_sampler` collectors.

use serde::{Deserialize, Serialize};

/// `[locks]`: options of the `locks` and `activity_sampler` collectors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LocksConfig {
    /// How many root blockers get series of their own (`blocker_pid` label), the ones holding
    /// up the most sessions first. 0 exports only the totals.
    pub top_blockers: usize,
    /// Show each session's query text in `/debug/locks` (never in metrics). Off by default:
    /// query text may hold personal data.
    pub show_query_text: bool,
    /// Most distinct `datname` values per family; further databases are summed into
    /// `datname="(other)"` so that a cluster with thousands of databases stays bounded.
    pub max_databases: usize,
}

impl Default for LocksConfig {
    fn default() -> Self {
        LocksConfig {
            top_blockers: 5,
            show_query_text: false,
            max_databases: 50,
        }
    }
}

impl LocksConfig {
    /// Checks the bounds; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.top_blockers > 100 {
            return Err(format!(
                "locks.top_blockers = {} is too many series; use at most 100 (default 5)",
                self.top_blockers
            ));
        }
        if self.max_databases == 0 {
            return Err("locks.max_databases must be at least 1 (default 50)".into());
        }
        Ok(())
    }
}
