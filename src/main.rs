//! Command line: parse flags, load the configuration, run; map errors to exit codes
//! (0 fine, 1 runtime failure, 2 configuration problem). The man page and the shell
//! completions are generated from this definition (`pgkpi generate`, hidden), so they cannot
//! drift from the flags.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use pgkpi::config::{FlagOverrides, Layers};
use pgkpi::shard::Shard;

#[derive(Parser)]
#[command(
    name = "pgkpi",
    version,
    about = "PostgreSQL health and KPI exporter for Prometheus",
    long_about = "PostgreSQL health and KPI exporter for Prometheus.\n\n\
        pgkpi polls each configured database on its own schedule, over one read-only \
        connection per target, and serves the latest results on /metrics: a scrape never \
        touches the database. Settings are layered: built-in defaults < configuration file \
        < environment < flags."
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
    /// Number of exporters sharing the targets; each polls the targets whose stable hash
    /// falls in its shard (rendezvous hashing: changing the number moves few targets).
    #[arg(
        long = "total-shards",
        value_name = "N",
        env = "PGKPI_TOTAL_SHARDS",
        default_value_t = 1,
        global = true
    )]
    total_shards: u32,
    /// This exporter's shard, 0 to N-1 (see --total-shards).
    #[arg(
        long = "shard",
        value_name = "I",
        env = "PGKPI_SHARD",
        default_value_t = 0,
        global = true,
        conflicts_with = "shard_from_hostname"
    )]
    shard: u32,
    /// Take the shard from the trailing -<ordinal> of the hostname, as a StatefulSet names
    /// its pods (<set>-<ordinal>).
    #[arg(
        long = "shard-from-hostname",
        env = "PGKPI_SHARD_FROM_HOSTNAME",
        global = true
    )]
    shard_from_hostname: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The machine's hostname (a pod's name in Kubernetes).
fn hostname() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(format!(
            "--shard-from-hostname: cannot read the hostname ({})",
            std::io::Error::last_os_error()
        ));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// This exporter's shard from the flags.
fn shard(cli: &Cli) -> Result<Shard, String> {
    if cli.shard_from_hostname {
        Shard::from_hostname(&hostname()?, cli.total_shards)
    } else {
        Shard::new(cli.shard, cli.total_shards)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print it, passwords masked; exit 2 when it is invalid.
    CheckConfig,
    /// Print the metric reference as Markdown.
    MetricsReference,
    /// Print the man page or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
}

#[derive(Subcommand)]
enum Generated {
    /// The man page pgkpi(1), in roff.
    Man,
    /// A completion script for bash, zsh, fish, elvish or powershell.
    Completion { shell: clap_complete::Shell },
}

/// Writes the man page: clap_mangen's sections for the synopsis and the flags, then the
/// commands (as entries of this page, not as pages of their own), the environment, files and
/// exit status, which the flags cannot describe.
fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use roff::{bold, italic, roman, Roff};
    let cli = Cli::command();
    let man = clap_mangen::Man::new(cli.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;

    fn entry(page: &mut Roff, term: Vec<roff::Inline>, text: &str) {
        page.control("TP", []).text(term).text([roman(text)]);
    }
    let mut page = Roff::new();
    page.control("SH", ["COMMANDS"]).text([roman(
        "Without a command, pgkpi runs the exporter until SIGINT or SIGTERM. SIGHUP (or POST \
         /-/reload) re-reads the configuration and target files: unchanged targets keep \
         polling, changed ones restart, removed ones stop; a broken configuration is \
         rejected and the running one kept.",
    )]);
    for command in cli.get_subcommands() {
        if command.is_hide_set() || command.get_name() == "help" {
            continue;
        }
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        entry(
            &mut page,
            vec![bold(format!("pgkpi {}", command.get_name()))],
            &about,
        );
    }
    page.control("SH", ["ENVIRONMENT"]);
    for (name, text) in [
        ("DATA_SOURCE_NAME, PGKPI_DSN", "One database to monitor, a libpq key=value string or a postgresql:// URL; replaces the targets of the configuration file."),
        ("PGKPI_TARGET_NAME", "The target label of that database (default: default)."),
        ("PGKPI_CONFIG_FILE", "The configuration file when --config.file is not given."),
        ("PGKPI_TOTAL_SHARDS, PGKPI_SHARD, PGKPI_SHARD_FROM_HOSTNAME", "The same as --total-shards, --shard and --shard-from-hostname."),
    ] {
        entry(&mut page, vec![bold(name)], text);
    }
    entry(
        &mut page,
        vec![bold("PGKPI_"), italic("SECTION"), bold("__"), italic("KEY")],
        "Any scalar key of the configuration file, e.g. PGKPI_WEB__LISTEN_ADDRESS.",
    );
    page.control("SH", ["FILES"]);
    for (path, text) in [
        (
            "/etc/default/pgkpi",
            "DATA_SOURCE_NAME and ARGS (the command line) of the Debian package's pgkpi.service.",
        ),
        (
            "/etc/pgkpi/pgkpi.toml",
            "The configuration file of that service.",
        ),
    ] {
        entry(&mut page, vec![italic(path)], text);
    }
    page.control("SH", ["EXIT STATUS"]).text([roman(
        "0 on success, 1 on a runtime failure (e.g. the listen address is taken), 2 on a \
         configuration problem, with a message naming the file, line or key and the fix.",
    )]);
    page.control("SH", ["SEE ALSO"]).text([roman(
        "The configuration reference, docs/configuration.md in the pgkpi sources, and the \
         metric reference printed by pgkpi metrics-reference.",
    )]);
    page.to_writer(out)?;
    man.render_version_section(out)
}

/// The command line as users see it. clap_complete would offer hidden commands (`generate`)
/// too, so the completions are generated from a copy without them.
fn public_command() -> clap::Command {
    let cli = Cli::command();
    clap::Command::new("pgkpi")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

fn generate(what: Generated) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generated::Man => write_man_page(&mut out),
        Generated::Completion { shell } => {
            clap_complete::generate(shell, &mut public_command(), "pgkpi", &mut out);
            Ok(())
        }
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgkpi: cannot write: {error}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(Command::MetricsReference) => {
            print!("{}", pgkpi::reference::markdown());
            return ExitCode::SUCCESS;
        }
        Some(Command::Generate { what }) => return generate(what),
        other => cli.command = other,
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let config_file = cli
        .config_file
        .clone()
        .or_else(|| env.get("PGKPI_CONFIG_FILE").map(PathBuf::from));
    let shard = match shard(&cli) {
        Ok(shard) => shard,
        Err(error) => {
            eprintln!("pgkpi: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let flags = FlagOverrides {
        listen_address: cli.listen_address,
        telemetry_path: cli.telemetry_path,
        web_config_file: cli.web_config_file,
        log_level: cli.log_level,
        log_format: cli.log_format,
    };
    let layers = Layers {
        file: config_file,
        env: env.clone(),
        flags,
    };
    let config = match layers.load() {
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
        if shard.total > 1 {
            println!("# shard {shard}: polls the targets marked [this shard]");
        }
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
            let mine = if shard.total > 1 && shard.owns(&plan.target.name) {
                " [this shard]"
            } else {
                ""
            };
            println!(
                "# target {}{mine} ({}): {}",
                plan.target.name,
                plan.target.endpoint,
                collectors.join(", ")
            );
            if let Some(databases) = &plan.databases {
                println!(
                    "#   every matching database, {} connections at most ({} for the databases' turns), in each: {}",
                    databases.budget,
                    databases.slots,
                    databases.collectors.join(", ")
                );
            }
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
    drop(plans);
    match runtime.block_on(pgkpi::app::run(layers, config, shard, views)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgkpi: {error:#}");
            ExitCode::from(1)
        }
    }
}
