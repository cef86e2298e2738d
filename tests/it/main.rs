//! pgkpi's integration tests, one binary for every area: built once, and one PostgreSQL
//! cluster ([`support::Cluster::shared`]) for all the tests that can share it.
//!
//! Run one area with `cargo test --test it -- locks::`.

mod support;

mod cli;
mod definitions;
mod e2e;
mod exporter;
mod locks;
mod migrations;
mod queues;
mod relations;
mod replication;
mod rules;
mod stack_files;
mod statements;
mod webhooks;
