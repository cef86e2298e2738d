//! TLS on both sides of the exporter: to PostgreSQL (libpq's `sslmode` semantics, per
//! connection of a target) and for its own HTTP server (`--web.config.file`: TLS, basic
//! authentication, certificate renewal without a restart).

use std::time::Duration;

use crate::support::{self, retry, Cluster, Exporter, ExporterConfig};

fn tls_config(name: &str, cluster: &Cluster, host: &str, params: &str) -> String {
    let dsn = format!(
        "host={host} port={} user=postgres dbname=postgres {params}",
        cluster.port
    );
    ExporterConfig::new(name, &dsn)
        .session("application_name", format!("pgkpi-{name}"))
        .build()
}

fn ssl_in_use(cluster: &Cluster, application: &str) -> String {
    cluster.psql(
        "postgres",
        &format!(
            // Every connection of the target (main and sampler) must agree: one line.
            "SELECT DISTINCT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = '{application}'"
        ),
    )
}

#[test]
fn tls_modes_follow_libpq_semantics() {
    let cluster = Cluster::shared();
    let ca = cluster.ca_cert.display().to_string();
    let up = |name: &str, host: &str, params: &str| {
        let exporter = Exporter::start(&tls_config(name, cluster, host, params));
        exporter.wait_for(Duration::from_secs(10), &format!("{name} up"), |m| {
            m.value("pg_up", &[("target", name)]) == Some(1.0)
        });
        let ssl = ssl_in_use(cluster, &format!("pgkpi-{name}"));
        drop(exporter);
        ssl
    };
    assert_eq!(
        up(
            "full",
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}")
        ),
        "t"
    );
    assert_eq!(
        up(
            "ca",
            "127.0.0.1",
            &format!("sslmode=verify-ca sslrootcert={ca}")
        ),
        "t"
    );
    assert_eq!(up("require", "127.0.0.1", "sslmode=require"), "t");
    assert_eq!(
        up("prefer", "127.0.0.1", ""),
        "t",
        "libpq's default prefer uses TLS when offered"
    );
    assert_eq!(up("plain", "127.0.0.1", "sslmode=disable"), "f");

    let down = |name: &str, host: &str, params: &str, expect: &str| {
        let exporter = Exporter::start(&tls_config(name, cluster, host, params));
        let m = exporter.wait_for(Duration::from_secs(10), "connection errors", |m| {
            m.value("pgkpi_target_connection_errors_total", &[("target", name)])
                .unwrap_or(0.0)
                >= 1.0
        });
        assert_eq!(m.value("pg_up", &[("target", name)]), Some(0.0));
        // The status page is updated just after the counter: give it a moment.
        let (Ok(error) | Err(error)) =
            retry(Duration::from_secs(5), Duration::from_millis(50), || {
                let ready: serde_json::Value =
                    serde_json::from_slice(&exporter.get("/readyz").body).unwrap();
                let error = ready["targets"][name]["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase();
                if error.is_empty() {
                    Err(error)
                } else {
                    Ok(error)
                }
            });
        assert!(
            error.contains(expect),
            "{name}: expected '{expect}' in: {error}"
        );
    };
    down(
        "wrongname",
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca}"),
        "certificate",
    );
    let other = support::TempDir::new("otherca");
    let other_ca = support::make_ca(&other.0, "other").display().to_string();
    down(
        "wrongca",
        "localhost",
        &format!("sslmode=verify-full sslrootcert={other_ca}"),
        "certificate",
    );
}

/// `--web.config.file` (the exporter-toolkit format): TLS with the given certificate, every
/// path behind basic authentication with a bcrypt-hashed password, and a renewed certificate
/// served without a restart.
#[test]
fn web_config_file_serves_tls_behind_basic_auth() {
    let cluster = Cluster::shared();
    let dir = support::TempDir::new("webcfg");
    let ca = support::make_certificates(&dir.0);
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    dir.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let config = dir.write(
        "pgkpi.toml",
        &ExporterConfig::new("web", &cluster.dsn("postgres")).build(),
    );
    let port = support::free_port();
    let child = std::process::Command::new(support::pgkpi_bin())
        .arg("--config.file")
        .arg(&config)
        .arg("--web.config.file")
        .arg(dir.0.join("web.yml"))
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pgkpi");
    let _running = support::KillOnDrop(child);
    // (HTTP status, body) of a request by curl, which checks the certificate against a CA.
    let curl_with = |ca: &std::path::Path, url: &str, extra: &[&str]| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
            .arg(ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl (the test command installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    let curl = |url: &str, extra: &[&str]| curl_with(&ca, url, extra);
    let https = format!("https://localhost:{port}/metrics");
    let user = ["-u", "prometheus:scrape-secret"];
    let body = retry(Duration::from_secs(15), Duration::from_millis(200), || {
        let (code, body) = curl(&https, &user);
        if code == "200" && body.contains("pg_up{target=\"web\"} 1") {
            Ok(body)
        } else {
            Err((code, body))
        }
    })
    .unwrap_or_else(|(code, body)| panic!("no pg_up 1 over https: {code}\n{body}"));
    assert!(body.contains("pgkpi_build_info"));
    // Every path is protected, the health check too; the challenge names the scheme.
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let url = format!("https://localhost:{port}{path}");
        assert_eq!(curl(&url, &[]).0, "401", "{path} without credentials");
        assert_eq!(
            curl(&url, &["-u", "prometheus:wrong"]).0,
            "401",
            "{path} with a wrong password"
        );
        assert_eq!(curl(&url, &user).0, "200", "{path} with the password");
    }
    let (_, headers) = curl(&https, &["-D", "-", "-o", "/dev/null"]);
    assert!(
        headers.to_lowercase().contains("www-authenticate: basic"),
        "{headers}"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = curl(&format!("http://127.0.0.1:{port}/healthz"), &user).0;
    assert_ne!(plain, "200");

    // A renewed certificate (here from another CA) is served without a restart.
    let renewed = support::TempDir::new("webcfg-renewed");
    let new_ca = support::make_certificates(&renewed.0);
    for file in ["server.key", "server.crt"] {
        std::fs::copy(renewed.0.join(file), dir.0.join(file)).unwrap();
    }
    retry(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || match curl_with(&new_ca, &https, &user).0.as_str() {
            "200" => Ok(()),
            _ => Err(()),
        },
    )
    .unwrap_or_else(|()| panic!("the renewed certificate is not served"));
    assert_ne!(curl(&https, &user).0, "200", "the old CA still verifies");
}
