//! pgkpi's integration tests, one binary for every area: built once, and one PostgreSQL
//! cluster ([`support::Cluster::shared`]) for all the tests that can share it.
//!
//! Run one area with `cargo test --test it -- locks::`. Tests of every area run concurrently
//! on the shared cluster: a test there works in a database of its own and looks at nothing
//! beyond it (filters by datname, its own application_name); a test that changes or must see
//! the whole server starts a cluster of its own ([`support::Cluster::start`]). See each area's
//! header for what it keeps to itself. Migrations are applied one at a time in the whole binary
//! ([`support::schema`]), and the tests that load the machine for minutes run one at a time
//! ([`support::heavy_load`]).

mod support;

mod backups;
mod cli;
mod data_volume;
mod definitions;
mod e2e;
mod exporter;
mod faults;
mod fleet;
mod http_limits;
mod locks;
mod migrations;
mod pgbouncer;
mod probe;
mod queues;
mod relations;
mod reload;
mod replication;
mod report;
mod rules;
mod shards;
mod stack_files;
mod statements;
mod tls;
mod webhooks;
