//! pgkpi: a PostgreSQL health and KPI exporter for Prometheus.
//!
//! pgkpi polls each configured database on its own schedule and serves the latest results on
//! `/metrics`. A scrape never reaches the database: it reads an already-encoded snapshot.
//!
//! # Layout
//! Data flows one way: target → poller → collector → snapshot → http.
//! * `config`: layered configuration (defaults, file, environment, flags) and its validation.
//! * `dsn`: connection-string parsing, TLS options, password masking.
//! * `tls`: rustls connectors following libpq's `sslmode` semantics.
//! * `target`: one database; opens the safe, read-only monitoring session.
//! * `poller`: per target, a supervisor owning the one connection and a task per collector.
//! * `collector`: the `Collector` trait, the Rust collectors, the SQL engine and the registry.
//! * `definition`: the collector definition format (built-ins in `collectors/*.toml`).
//! * `metric`: metric families and the Prometheus text encoding.
//! * `snapshot`: the latest encoded results, served as-is.
//! * `status`: per target and collector health for `/readyz` and the status page.
//! * `telemetry`: the exporter's own metrics.
//! * `views`: JSON debug views collectors publish (served at `/debug/<name>`).
//! * `http`: the hyper server.
//! * `web_config`: `--web.config.file`, TLS and basic authentication for the server.
//! * `app`: wiring from configuration to running tasks.
//! * `reference`: the generated metric reference.

pub mod app;
pub mod collector;
pub mod config;
pub mod definition;
pub mod dsn;
pub mod duration;
pub mod http;
#[cfg(test)]
mod layering;
pub mod logging;
pub mod metric;
pub mod poller;
pub mod reference;
pub mod shared;
pub mod snapshot;
pub mod sql_text;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod views;
pub mod web_config;
