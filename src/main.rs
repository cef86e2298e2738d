//! Command line: parse flags, load the configuration, run; map errors to exit codes
//! (0 fine, 1 runtime failure, 2 configuration problem).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pgkpi::config::{Config, FlagOverrides};

#[derive(Parser)]
#[command(
    name = "pgkpi",
    version,
    about = "PostgreSQL health and KPI exporter for Prometheus"
)]
struct Cli {
    /// Configuration file (TOML, or YAML when named *.yaml / *.yml).
    #[arg(long = "config.file", value_name = "FILE", global = true)]
    config_file: Option<PathBuf>,
    /// Address to listen on, host:port (default 0.0.0.0:9188).
    #[arg(long = "web.listen-address", value_name = "ADDRESS", global = true)]
    listen_address: Option<String>,
    /// TLS and basic authentication for the HTTP server: a YAML file in the Prometheus
    /// exporter-toolkit format (tls_server_config, basic_auth_users).
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    web_config_file: Option<String>,
    /// Path serving the metrics (default /metrics).
    #[arg(long = "web.telemetry-path", value_name = "PATH", global = true)]
    telemetry_path: Option<String>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long = "log.format", value_name = "FORMAT", global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print it, passwords masked; exit 2 when it is invalid.
    CheckConfig,
    /// Print the metric reference as Markdown.
    MetricsReference,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::MetricsReference) = cli.command {
        print!("{}", pgkpi::reference::markdown());
        return ExitCode::SUCCESS;
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let config_file = cli
        .config_file
        .clone()
        .or_else(|| env.get("PGKPI_CONFIG_FILE").map(PathBuf::from));
    let flags = FlagOverrides {
        listen_address: cli.listen_address,
        telemetry_path: cli.telemetry_path,
        web_config_file: cli.web_config_file,
        log_level: cli.log_level,
        log_format: cli.log_format,
    };
    let config = match Config::load(config_file.as_deref(), &env, &flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pgkpi: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let views = std::sync::Arc::new(pgkpi::views::Views::new());
    let plans = match pgkpi::app::plan(&config, &views) {
        Ok(plans) => plans,
        Err(error) => {
            eprintln!("pgkpi: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    // Names only: a value may be anything (an address, a token) and is none of pgkpi's business.
    let ignored = pgkpi::config::ignored_env_vars(&env).join(", ");
    if let Some(Command::CheckConfig) = cli.command {
        println!("# configuration is valid; effective settings (passwords masked):\n");
        print!("{}", config.to_masked_toml());
        println!();
        for plan in &plans {
            let collectors: Vec<String> = plan
                .collectors
                .iter()
                .map(|c| {
                    format!(
                        "{} every {}",
                        c.name,
                        humantime::format_duration(c.interval)
                    )
                })
                .collect();
            println!(
                "# target {} ({}): {}",
                plan.target.name,
                plan.target.endpoint,
                collectors.join(", ")
            );
        }
        for need in pgkpi::collector::statements::log::requirements(&config.statements.log) {
            println!("# statements.log needs {need}");
        }
        if !ignored.is_empty() {
            println!(
                "# not read (PGKPI_ but not PGKPI_<SECTION>__<KEY>, e.g. Kubernetes service links): {ignored}"
            );
        }
        return ExitCode::SUCCESS;
    }
    pgkpi::logging::init(&config.log);
    if !ignored.is_empty() {
        tracing::debug!(
            variables = %ignored,
            "environment variables not read: PGKPI_ but not PGKPI_<SECTION>__<KEY> (e.g. Kubernetes service links)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgkpi: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(pgkpi::app::run(config, plans, views)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgkpi: {error:#}");
            ExitCode::from(1)
        }
    }
}
