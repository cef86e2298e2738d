//! The command line: exit codes and messages for bad configuration, check-config, the
//! DATA_SOURCE_NAME shortcut, the generated metric reference, man page and completions.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, pgkpi, pgkpi_bin, retry, stderr, Cluster, KillOnDrop, TempDir};

fn file(dir: &TempDir, name: &str, text: &str) -> String {
    dir.write(name, text).display().to_string()
}

#[test]
fn bad_configuration_exits_2_naming_the_problem() {
    let dir = TempDir::new("badcfg");
    type Case<'a> = (String, &'a [(&'a str, &'a str)], Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            file(&dir, "typo.toml", "[web]\nlisten_address = \"127.0.0.1:1\"\n[log]\nlevl = \"info\"\n"),
            &[],
            vec!["typo.toml, line 4", "unknown field `levl`"],
        ),
        (
            file(&dir, "syntax.toml", "[web\nlisten_address = 1\n"),
            &[],
            vec!["syntax.toml, line 1"],
        ),
        (
            file(&dir, "baddsn.toml", "[[targets]]\nname = \"a\"\ndsn = \"host=h port=notaport password=hunter2\"\n"),
            &[],
            vec!["targets[0] (name \"a\"): dsn", "cannot parse connection string", "postgresql://"],
        ),
        (
            file(&dir, "collector.toml", "[collectors.nosuch]\ninterval = \"1s\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n"),
            &[],
            vec!["collectors.nosuch", "known collectors:", "database", "server"],
        ),
        (
            file(&dir, "cafile.toml", "[[targets]]\nname = \"a\"\ndsn = \"host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem\"\n"),
            &[],
            vec!["sslrootcert /nonexistent/ca.pem: cannot read it"],
        ),
        (
            file(&dir, "typo.yaml", "web:\n  listen_adress: x\n"),
            &[],
            vec!["typo.yaml, line 2", "listen_adress"],
        ),
        (
            file(&dir, "ok.toml", "[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n"),
            &[("PGKPI_WEB__LISTEN_ADDRESS", "not-an-address")],
            vec!["web.listen_address \"not-an-address\""],
        ),
        (
            file(&dir, "web.toml", &format!(
                "[web]\nconfig_file = \"{}\"\n[[targets]]\nname = \"a\"\ndsn = \"host=h\"\n",
                file(&dir, "web.yml", "basic_auth_users:\n  prometheus: plaintext\n")
            )),
            &[],
            vec!["web.yml: basic_auth_users.prometheus: not a bcrypt hash", "htpasswd"],
        ),
    ];
    for (path, env, expected) in cases {
        for args in [
            vec!["--config.file", &path],
            vec!["--config.file", &path, "check-config"],
        ] {
            let out = pgkpi(&args, env);
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{path}: {text}");
            for needle in &expected {
                assert!(
                    text.contains(needle),
                    "{path}: expected {needle:?} in:\n{text}"
                );
            }
            assert!(!text.contains("hunter2"), "password leaked: {text}");
        }
    }
    let missing = pgkpi(&["--config.file", "/nonexistent/pgkpi.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/pgkpi.toml: cannot read it"));

    let nothing = pgkpi(&[], &[]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(
        stderr(&nothing).contains("DATA_SOURCE_NAME"),
        "{}",
        stderr(&nothing)
    );
}

/// What Kubernetes puts in every pod of a namespace with a Service named `pgkpi` (port 9188
/// named `http`), service links being on by default.
const KUBERNETES_SERVICE_LINKS: &[(&str, &str)] = &[
    ("PGKPI_SERVICE_HOST", "10.96.12.34"),
    ("PGKPI_SERVICE_PORT", "9188"),
    ("PGKPI_SERVICE_PORT_HTTP", "9188"),
    ("PGKPI_PORT", "tcp://10.96.12.34:9188"),
    ("PGKPI_PORT_9188_TCP", "tcp://10.96.12.34:9188"),
    ("PGKPI_PORT_9188_TCP_PROTO", "tcp"),
    ("PGKPI_PORT_9188_TCP_PORT", "9188"),
    ("PGKPI_PORT_9188_TCP_ADDR", "10.96.12.34"),
];

#[test]
fn kubernetes_service_links_do_not_stop_pgkpi() {
    let closed_port = support::free_port();
    let dsn = format!("host=127.0.0.1 port={closed_port} user=postgres sslmode=disable");
    let mut env = vec![("DATA_SOURCE_NAME", dsn.as_str())];
    env.extend_from_slice(KUBERNETES_SERVICE_LINKS);

    let out = pgkpi(&["check-config"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    let not_read = text
        .lines()
        .find(|l| l.starts_with("# not read"))
        .unwrap_or_else(|| panic!("no line naming the variables not read:\n{text}"));
    for (name, _) in KUBERNETES_SERVICE_LINKS {
        assert!(not_read.contains(name), "{name} missing: {not_read}");
    }
    assert!(!text.contains("10.96.12.34"), "a value was shown:\n{text}");

    // The exporter itself starts, serves, and says once (at debug level) what it did not read.
    let address = format!("127.0.0.1:{}", support::free_port());
    let mut command = Command::new(pgkpi_bin());
    command
        .args(["--web.listen-address", &address, "--log.level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        command.env(k, v);
    }
    let mut running = KillOnDrop(command.spawn().unwrap());
    let healthz = retry(Duration::from_secs(10), Duration::from_millis(50), || {
        support::http_get(&address, "/healthz", &[]).map_err(|_| ())
    });
    let exited = running.0.try_wait().unwrap();
    let _ = running.0.kill();
    let _ = running.0.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut running.0.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        healthz.is_ok_and(|r| r.status == 200) && exited.is_none(),
        "pgkpi did not run ({exited:?}):\n{logs}"
    );
    let line = logs
        .lines()
        .find(|l| l.contains("environment variables not read"))
        .unwrap_or_else(|| panic!("no debug line for the variables not read:\n{logs}"));
    assert!(line.contains("DEBUG"), "{line}");
    for (name, _) in KUBERNETES_SERVICE_LINKS {
        assert!(line.contains(name), "{name} missing: {line}");
    }
    assert_eq!(
        logs.matches("environment variables not read").count(),
        1,
        "logged once:\n{logs}"
    );
    assert!(!logs.contains("10.96.12.34"), "a value was logged:\n{logs}");
}

#[test]
fn a_typo_in_a_configuration_variable_exits_2_naming_it() {
    let cases: &[(&str, &[&str])] = &[
        (
            "PGKPI_WEB__LISTEN_ADRESS",
            &[
                "environment variable PGKPI_WEB__LISTEN_ADRESS: unknown field `listen_adress`",
                "`listen_address`",
                "PGKPI_<SECTION>__<KEY>",
            ],
        ),
        (
            "PGKPI_LGO__LEVEL",
            &[
                "environment variable PGKPI_LGO__LEVEL: unknown field `lgo`",
                "`log`",
            ],
        ),
    ];
    for (variable, expected) in cases {
        let mut env = vec![("DATA_SOURCE_NAME", "host=h"), (*variable, "debug")];
        env.extend_from_slice(KUBERNETES_SERVICE_LINKS);
        for args in [vec![], vec!["check-config"]] {
            let out = pgkpi(&args, &env);
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{variable}: {text}");
            for needle in *expected {
                assert!(
                    text.contains(needle),
                    "{variable}: expected {needle:?} in:\n{text}"
                );
            }
            assert!(!text.contains("PGKPI_SERVICE_"), "{text}");
        }
    }
}

#[test]
fn check_config_prints_effective_settings_with_passwords_masked() {
    let dir = TempDir::new("checkcfg");
    let path = file(
        &dir,
        "pgkpi.toml",
        "[session]\nlock_timeout = \"250ms\"\n[[targets]]\nname = \"primary\"\n\
         dsn = \"postgresql://app:hunter2@db.example:5432/app?sslmode=require\"\n",
    );
    let out = pgkpi(
        &[
            "--config.file",
            &path,
            "--log.format",
            "json",
            "check-config",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("postgresql://app:****@db.example:5432/app?sslmode=require"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("lock_timeout = \"250ms\""), "{text}");
    assert!(
        text.contains("statement_timeout = \"5s\""),
        "defaults shown: {text}"
    );
    assert!(text.contains("format = \"json\""), "flag applied: {text}");
    assert!(text.contains("listen_address = \"0.0.0.0:9188\""), "{text}");
    assert!(
        text.contains("# target primary (app@db.example:5432/app): server every 15s"),
        "{text}"
    );
}

/// check-config cannot see the server, so it lists what the latency log source needs: the
/// server settings and, per access, the grants (and their risk) and the files.
#[test]
fn check_config_lists_what_the_log_source_needs() {
    let dir = TempDir::new("checklog");
    let path = file(
        &dir,
        "pgkpi.toml",
        "[statements.log]\naccess = \"pg_read_binary_file\"\n[[targets]]\nname = \"db\"\n\
         dsn = \"postgresql://app@db.example:5432/app\"\n",
    );
    let out = pgkpi(&["--config.file", &path, "check-config"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("# statements.log needs server: logging_collector = on"),
        "{text}"
    );
    assert!(
        text.contains("pg_read_binary_file(text, bigint, bigint, boolean)")
            && text.contains("any file the server can read"),
        "{text}"
    );
}

#[test]
fn data_source_name_alone_monitors_one_database() {
    let cluster = Cluster::shared();
    let address = format!("127.0.0.1:{}", support::free_port());
    let _running = KillOnDrop(
        Command::new(pgkpi_bin())
            .env("DATA_SOURCE_NAME", cluster.dsn("postgres"))
            .env("PGKPI_WEB__LISTEN_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut last = String::new();
    let _ = retry(Duration::from_secs(15), Duration::from_millis(100), || {
        if let Ok(response) = support::http_get(&address, "/metrics", &[]) {
            last = response.text();
        }
        if last.contains("pg_up{target=\"default\"} 1") {
            Ok(())
        } else {
            Err(())
        }
    });
    assert!(last.contains("pg_up{target=\"default\"} 1"), "{last}");
}

#[test]
fn metric_reference_is_up_to_date() {
    let out = pgkpi(&["metrics-reference"], &[]);
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/metrics.md is stale; regenerate it with \
         `cargo run -- metrics-reference > docs/metrics.md` (or UPDATE_REFERENCE=1 cargo test)"
    );
    for name in [
        "pg_up",
        "pgkpi_collector_up",
        "pg_server_version_num",
        "pgkpi_build_info",
    ] {
        assert!(
            generated.contains(&format!("`{name}`")),
            "{name} missing from the reference"
        );
    }
}

/// The man page and the completions are generated from the clap definition: every public flag
/// and command is in them, the hidden `generate` command is not.
#[test]
fn man_page_and_completions_cover_the_public_command_line() {
    let stdout = |args: &[&str]| {
        let out = pgkpi(args, &[]);
        assert!(out.status.success(), "pgkpi {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let help = stdout(&["--help"]);
    let mut public: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(public.contains(&"--web.listen-address"), "{help}");
    public.extend(["check-config", "metrics-reference"]);
    // roff escapes each hyphen.
    let man = stdout(&["generate", "man"]).replace("\\-", "-");
    // pgkpi report's own flags and exit codes.
    public.extend(["report", "--prometheus.url", "--before", "--format"]);
    let report_exits = [
        "unknown to Prometheus",
        "no data for the target",
        "Prometheus unreachable",
    ];
    for word in public
        .iter()
        .chain(&["DATA_SOURCE_NAME", "EXIT STATUS"])
        .chain(&report_exits)
    {
        assert!(man.contains(word), "the man page lacks {word}");
    }
    assert!(
        !man.contains("generate"),
        "the man page shows the hidden command"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&["generate", "completion", shell]);
        for word in &public {
            // fish names long options without their dashes: `-l config.file`.
            let word = match shell {
                "fish" => word.trim_start_matches('-'),
                _ => word,
            };
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        assert!(
            !script.contains("generate"),
            "{shell} completion offers the hidden command"
        );
    }
}
