//! TLS certificates made with `openssl` for the tests: a CA and a `localhost` server
//! certificate (each cluster's, and the exporter's web TLS), and CAs that signed nothing the
//! server presents (a wrong `sslrootcert`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::run;

/// Makes a CA and a server certificate for `localhost` (DNS name only, so that connecting to
/// 127.0.0.1 with verify-full is a name mismatch the tests can provoke): `server.crt` and
/// `server.key` in `dir`. Returns the CA path.
pub fn make_certificates(dir: &Path) -> PathBuf {
    let ca = make_ca(dir, "ca");
    let sh = format!(
        "set -e; cd '{dir}'; \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost\\n' > server.ext; \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
           -days 2 -out server.crt -extfile server.ext 2>/dev/null; \
         chmod 600 server.key",
        dir = dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &sh]);
    run(cmd, "openssl (server certificate)");
    ca
}

/// Makes a self-signed CA named `name` in `dir`; returns its certificate path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let sh = format!(
        "set -e; cd '{dir}'; openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
           -nodes -keyout {name}.key -out {name}.crt -days 2 -subj /CN=pgkpi-test-{name} 2>/dev/null; \
         chmod 644 {name}.crt",
        dir = dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &sh]);
    run(cmd, "openssl (CA)");
    dir.join(format!("{name}.crt"))
}
