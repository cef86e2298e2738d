//! Tables and indexes of the target database: what index and partitioning plans act on.
//!
//! Three collectors share the `[relations]` section, and a fourth uses their measures:
//! * `relation_stats` (every 60s): scan and row counters per table and per index
//!   (`pg_stat_user_tables`, `pg_stat_user_indexes`); catalog reads only, cheap.
//! * `relation_sizes` (every 5m): heap, TOAST, index and total sizes plus bloat estimates. Size
//!   functions stat files, which is not free on a big catalog, hence the slower interval of
//!   their own; only the tables changed since the previous run are measured again (`sizes`).
//! * `index_health` (every 5m): unused, invalid and duplicate indexes.
//! * `database_size` (every 5m, once per server): each database's size, derived from
//!   `relation_sizes`' measures where it inspects the tables, else `pg_database_size`.
//!
//! Partitioned tables are the `partitions` definition (`collectors/partitions.toml`).
//!
//! Cardinality: a catalogue of 10 000 tables must not become 10 000 series. Per-table and
//! per-index series are capped (`max_tables`, `max_indexes`); the rows kept are the best ranked
//! by any of size or activity (a row ranked 3rd by size and 900th by scans ranks 3rd), and
//! the rest are summed: index rows into an `indexrelname="(other)"` row of their table when
//! that table has series, everything else into one `(other)` row (whose counters add their
//! members' increases, so they never step down as members change). Partitions are rolled up into
//! their root table (and partition indexes into the root's index) unless `partition_children`
//! is set. The queries read one row per relation, in chunks of `page_size` tables so that no
//! statement grows with the catalog; Rust groups partitions into their root, ranks and cuts
//! as the rows arrive (only the rows that can still be kept are held), so that logic is
//! unit-tested.
//! Estimates (bloat) are explained in docs/relations.md.
//!
//! Files: `columns` (label columns, naming SQL, chunked reads, the `Col` declarations), `cut`
//! (the cap, applied as rows arrive), `rollup` (rows and the `(other)` counters, pure logic),
//! `last` (every relation's counters at the last run, compact), `export` (naming the kept
//! ones, the families), one file per collector (`stats`, `sizes`, `health`) with its SQL, and
//! `settings` (`[relations]`), `database` (`database_size` and the sizes `relation_sizes`
//! derives).

mod columns;
mod cut;
mod database;
mod export;
mod health;
mod last;
mod measures;
mod rollup;
pub mod settings;
mod sizes;
mod stats;

pub use self::database::{spec as database_size_spec, DerivedSizes};
pub use self::health::spec as health_spec;
pub use self::rollup::OTHER;
pub use self::sizes::spec as sizes_spec;
pub use self::stats::spec as stats_spec;
