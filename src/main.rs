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
    /// Compare a target's KPIs before and after a change, from Prometheus, with a verdict per
    /// KPI (improved, regressed, no significant change, not enough data); exit 1 when a KPI
    /// regressed or misses its target.
    Report(Box<ReportArgs>),
    /// Print the man page or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("ranges").required(true).args(["before", "change"])))]
struct ReportArgs {
    /// Base URL of the Prometheus server (a path prefix is kept, e.g. https://host/prometheus).
    #[arg(
        long = "prometheus.url",
        value_name = "URL",
        default_value = "http://127.0.0.1:9090"
    )]
    prometheus_url: String,
    /// Basic-auth user for Prometheus.
    #[arg(long = "prometheus.user", value_name = "USER")]
    prometheus_user: Option<String>,
    /// File holding the basic-auth password.
    #[arg(long = "prometheus.password-file", value_name = "FILE")]
    prometheus_password_file: Option<PathBuf>,
    /// File holding a bearer token.
    #[arg(long = "prometheus.bearer-token-file", value_name = "FILE")]
    prometheus_bearer_token_file: Option<PathBuf>,
    /// PEM file of the CA of an https:// Prometheus (default: the system's trust store).
    #[arg(long = "prometheus.ca-file", value_name = "FILE")]
    prometheus_ca_file: Option<PathBuf>,
    /// The pgkpi target to compare (its `target` label).
    #[arg(long, value_name = "NAME")]
    target: String,
    /// The pgBouncer target in front of it, for the pool-wait KPI.
    #[arg(long, value_name = "NAME")]
    pooler: Option<String>,
    /// Only the rows of this database (datname) for per-database KPIs.
    #[arg(long, value_name = "DATNAME")]
    database: Option<String>,
    /// The range before the change: START..END, each RFC 3339, Unix seconds, now or now-30m.
    #[arg(
        long,
        value_name = "START..END",
        requires = "after",
        conflicts_with = "change"
    )]
    before: Option<String>,
    /// The range after the change, as --before.
    #[arg(long, value_name = "START..END", requires = "before")]
    after: Option<String>,
    /// The time of the change: compare --window before it with --window after it (after --settle).
    #[arg(long, value_name = "TIME")]
    change: Option<String>,
    /// Length of each range around --change.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    window: std::time::Duration,
    /// Time skipped after --change (caches warming, a backlog draining).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    settle: std::time::Duration,
    /// Length of the windows the per-step values are computed over (whole seconds; at least
    /// two scrape intervals).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    step: std::time::Duration,
    /// Significance level of the rank test.
    #[arg(long, value_name = "P", default_value_t = 0.01)]
    alpha: f64,
    /// Smallest change of the medians worth a verdict, as a share of the before median
    /// (0.05 = 5 %); smaller significant changes are "no significant change".
    #[arg(long, value_name = "RATIO", default_value_t = 0.05)]
    min_change: f64,
    /// Fewest per-step values per range for a verdict; fewer is "not enough data".
    #[arg(long, value_name = "N", default_value_t = 6)]
    min_points: usize,
    /// Rows whose name matches this regex (e.g. 'workload=webhooks') are reported but do not
    /// count for the exit code.
    #[arg(long, value_name = "REGEX")]
    ignore: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: pgkpi::report::render::Format,
    /// No progress indicator on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// The progress line on stderr while the queries run, when stderr is a terminal.
struct TerminalProgress {
    enabled: bool,
}

impl pgkpi::report::Progress for TerminalProgress {
    fn step(&mut self, done: usize, total: usize, what: &str) {
        if self.enabled {
            eprint!("\r\x1b[Kquerying Prometheus: {done}/{total} {what}");
        }
    }
    fn finish(&mut self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

fn report_request(args: &ReportArgs) -> Result<pgkpi::report::Request, String> {
    use pgkpi::report::range;
    let now = range::now();
    let (before, after) = match (&args.before, &args.after, &args.change) {
        (Some(before), Some(after), None) => (
            range::parse_range("--before", before, now)?,
            range::parse_range("--after", after, now)?,
        ),
        (None, None, Some(change)) => range::around_change(
            range::parse_time(change, now).map_err(|e| format!("--change: {e}"))?,
            args.window,
            args.settle,
            now,
        )?,
        _ => return Err("give --before and --after, or --change (with --window)".into()),
    };
    if args.step.as_secs() < 1 || args.step.subsec_nanos() != 0 {
        return Err("--step must be whole seconds, at least 1s (e.g. 30s, 1m)".into());
    }
    if !(args.alpha > 0.0 && args.alpha < 0.5) {
        return Err(format!(
            "--alpha {} must be between 0 and 0.5 (e.g. 0.01)",
            args.alpha
        ));
    }
    let ignore = match &args.ignore {
        Some(pattern) => {
            Some(regex::Regex::new(pattern).map_err(|e| format!("--ignore {pattern:?}: {e}"))?)
        }
        None => None,
    };
    if !(0.0..1.0).contains(&args.min_change) {
        return Err(format!(
            "--min-change {} must be at least 0 and below 1 (e.g. 0.05 for 5 %)",
            args.min_change
        ));
    }
    if args.min_points < 3 {
        return Err("--min-points must be at least 3".into());
    }
    Ok(pgkpi::report::Request {
        connection: pgkpi::report::prometheus::Connection {
            url: args.prometheus_url.clone(),
            user: args.prometheus_user.clone(),
            password_file: args.prometheus_password_file.clone(),
            bearer_token_file: args.prometheus_bearer_token_file.clone(),
            ca_file: args.prometheus_ca_file.clone(),
        },
        target: args.target.clone(),
        pooler: args.pooler.clone(),
        database: args.database.clone(),
        before,
        after,
        step: args.step,
        significance: pgkpi::report::verdict::Significance {
            alpha: args.alpha,
            min_points: args.min_points,
            min_change: args.min_change,
        },
        ignore,
    })
}

/// `pgkpi report`: exit 0 (no KPI regressed or misses its target), 1 (one does), or the
/// error's code (2 usage, 3 Prometheus unreachable or failing, 4 no data, 5 unknown target).
fn report(args: &ReportArgs) -> ExitCode {
    use pgkpi::report::{Progress as _, ReportError};
    use std::io::IsTerminal as _;
    let fail = |error: ReportError| {
        eprintln!("pgkpi report: {error}");
        ExitCode::from(error.exit_code())
    };
    let request = match report_request(args) {
        Ok(request) => request,
        Err(message) => return fail(ReportError::Usage(message)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgkpi report: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let mut progress = TerminalProgress {
        enabled: !args.quiet && std::io::stderr().is_terminal(),
    };
    let report = match runtime.block_on(pgkpi::report::build(&request, &mut progress)) {
        Ok(report) => report,
        Err(error) => {
            progress.finish();
            return fail(error);
        }
    };
    let mut out = std::io::stdout().lock();
    let text = pgkpi::report::render::render(&report, args.format);
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("pgkpi report: cannot write: {error}");
        return ExitCode::from(1);
    }
    if report.fails() {
        ExitCode::from(pgkpi::report::EXIT_FAILED_KPI)
    } else {
        ExitCode::SUCCESS
    }
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
    // Subcommands with flags of their own (pgkpi report) list them here, from the definition.
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let flags: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_long().is_some())
            .collect();
        if flags.is_empty() {
            continue;
        }
        page.control(
            "SH",
            [format!("{} OPTIONS", command.get_name().to_uppercase()).as_str()],
        );
        for flag in flags {
            let value = flag
                .get_value_names()
                .map(|names| format!(" {}", names.join(" ")))
                .unwrap_or_default();
            let help = flag.get_help().map(|h| h.to_string()).unwrap_or_default();
            let default = match flag.get_default_values() {
                [] => String::new(),
                values => format!(
                    " (default {})",
                    values
                        .iter()
                        .map(|v| v.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            entry(
                &mut page,
                vec![
                    bold(format!("--{}", flag.get_long().unwrap_or_default())),
                    italic(value),
                ],
                &format!("{help}{default}"),
            );
        }
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
    page.text([roman("pgkpi report exits with its own codes:")]);
    for (code, text) in [
        (
            "0",
            "no KPI regressed and every KPI with a target meets it after the change",
        ),
        (
            "1",
            "a KPI regressed, or misses its target after the change",
        ),
        ("2", "usage error (a flag, a time or a range)"),
        (
            "3",
            "Prometheus unreachable, or it answered with an error (e.g. authentication)",
        ),
        (
            "4",
            "no data for the target in the before or the after range",
        ),
        ("5", "the target is unknown to Prometheus"),
    ] {
        entry(&mut page, vec![bold(code)], text);
    }
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

/// glibc's allocator, set for a long-running process whose memory comes in passes over the
/// catalog: one arena for every thread. By default each thread that allocates gets an arena
/// of its own (up to eight per core) and keeps what it freed there, so the runtime's workers
/// each held memory of a large pass: at 10 000 tables the peak RSS fell from 27.9 to 25.4 MiB
/// with one arena (docs/relations.md, "Memory"), /metrics as fast. pgkpi's threads allocate
/// rarely enough that sharing one arena costs nothing measurable. A fixed mmap threshold was
/// tried and left out: it saved 0.4 MiB but made every scrape map, fault in and unmap its
/// response buffer (/metrics median 1.05 -> 1.52 ms). Called before any thread starts;
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` set by the user win.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_user = ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if !set_by_user {
            // SAFETY: mallopt only changes allocator parameters; no other thread runs yet.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
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
        Some(Command::Report(args)) => return report(&args),
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
    tune_allocator();
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
