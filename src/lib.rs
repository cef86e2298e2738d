//! pgkpi: a PostgreSQL health and KPI exporter for Prometheus.
//!
//! pgkpi polls each configured database on its own schedule and serves the latest results on
//! `/metrics`. A scrape never reaches the database: it reads an already-encoded snapshot.
//!
//! # Layout
//! Data flows one way: target → poller → collector → snapshot → http, wired by `app`. Imports
//! follow the layers below, lowest first: a module names only modules of its own layer or
//! lower ones, and `src/layering.rs` fails the tests when a module cycle comes back.
//!
//! Foundations (no knowledge of PostgreSQL sessions or collectors):
//! * `duration`: human-readable durations ("5s") in every configuration section.
//! * `html`: escaping for the pages pgkpi writes (status page, report).
//! * `sql_text`: identifiers and predicates from the configuration, quoted and checked.
//! * `metric`: metric declarations (`Metric`), families and the Prometheus text encoding.
//! * `dsn`: connection-string parsing, TLS options, password masking.
//! * `tls`: rustls connectors following libpq's `sslmode` semantics.
//! * `status`: per target and collector health for `/readyz` and the status page.
//! * `views`: JSON debug views collectors publish (served at `/debug/<name>`).
//! * `telemetry`: the exporter's own metrics.
//! * `snapshot`: the latest encoded results, served as-is.
//! * `web_config`: `--web.config.file`, TLS and basic authentication for the server.
//! * `shard`: which targets an exporter of a sharded set polls (a stable rendezvous hash).
//!
//! Configuration:
//! * `collector::<name>::settings`: each collector's section (`[locks]`, `[[queues]]`, ...);
//!   imports nothing of the collectors, so that `config` can embed it.
//! * `config`: the model (`mod.rs`), layering of defaults, file, environment and flags
//!   (`load`), and the checks serde cannot make (`validate`).
//! * `logging`: the tracing subscriber from `[log]`.
//!
//! The data path:
//! * `target`: one target; opens a database's safe, read-only monitoring session, or a
//!   pgBouncer admin console's session (`target::pgbouncer`), by the target's kind.
//! * `definition`: the collector definition format (built-ins in `collectors/*.toml`).
//! * `collector`: the interface every collector implements (`Collector`, `Spec`, `Lane`,
//!   `BuildContext`, `CollectError`, `SkipReason`), the Rust collectors (one module or
//!   directory each), the SQL engine for definition files (`sql`) and the `registry` of all.
//! * `shared`: the state pollers write and the HTTP server reads.
//! * `poller`: per target, a supervisor per connection (`connection`) and a task per
//!   collector (`schedule`).
//! * `http`: the hyper server (`limits`: connection cap and accept backoff); reads `shared`,
//!   never a database.
//! * `reference`: the generated metric reference (`docs/metrics.md`).
//! * `app`: wiring from configuration to running tasks; the only module that knows them all.
//!   `app::reconcile` starts, stops and keeps targets' pollers to match the wanted set (at
//!   start, on reload, on a change of the target files); `app::reload` re-reads the
//!   configuration on SIGHUP, `POST /-/reload` and changes of `targets_directory`.
//!
//! Beside the exporter:
//! * `report`: `pgkpi report`, a before/after verdict on a change from the KPIs a Prometheus
//!   server holds (its HTTP API, never a database); uses only `tls` and `html` of the modules above.
//!
//! # Where new things go
//! * A collector that is only SQL: a definition file in `collectors/` (see
//!   docs/collectors.md); no Rust.
//! * A collector in Rust: `src/collector/<name>.rs` (or a directory when it has more than one
//!   job), declaring its families as `Metric` constants and its `Spec`; add the spec to
//!   `registry::builtins`. Its options go in `<name>/settings.rs`, a field of `config::Config`
//!   and a field of `BuildContext` filled in `app::plan`.
//! * A target kind (as `pgbouncer`, a connection pooler's admin console): a `TargetKind`
//!   variant in `config`, its session setup in a module of `target`, the collectors that speak
//!   to it beside the others with the kind they need in their `Spec` (`app::plan` builds only
//!   those of the target's kind); the poller and everything above it stay unchanged because
//!   they only see a `Session`.
//! * An HTTP endpoint: a route in `http`, reading what it serves from `shared` (a collector
//!   publishes what the endpoint shows, as `/debug/<name>` does through `views`).

pub mod app;
pub mod collector;
pub mod config;
pub mod definition;
pub mod dsn;
pub mod duration;
pub mod html;
pub mod http;
#[cfg(test)]
mod layering;
pub mod logging;
pub mod metric;
pub mod poller;
pub mod reference;
pub mod report;
pub mod shard;
pub mod shared;
pub mod snapshot;
pub mod sql_text;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod views;
pub mod web_config;
