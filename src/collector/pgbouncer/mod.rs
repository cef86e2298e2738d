//! Collectors of a pgBouncer target (`kind = "pgbouncer"`), over the admin console's SHOW
//! commands:
//! * `pgbouncer_pools` (`pools`): SHOW POOLS and SHOW DATABASES, clients and servers per
//!   pool, the longest wait, and the sizes each pool may grow to;
//! * `pgbouncer_stats` (`stats`): SHOW STATS, traffic and time counters per database;
//! * `pgbouncer_limits` (`limits`): SHOW CONFIG and SHOW LISTS, the pooler's own limits and
//!   its client connections against them.
//!
//! Columns are looked up by name (`show`), so a column a release lacks only leaves its
//! metric out; tested against pgBouncer 1.18 (Debian 12).

mod limits;
mod pools;
mod show;
mod stats;

pub use limits::spec as limits_spec;
pub use pools::spec as pools_spec;
pub use stats::spec as stats_spec;
